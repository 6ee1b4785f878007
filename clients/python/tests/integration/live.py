"""A real Stepgate for the integration tests: the release server and the sandbox started on
free ports with a throw-away data folder (as scripts/lib/serve-release.sh and the Playwright
config start them), a browser-like driver for Stepgate's server-rendered forms, and a webhook
receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx

REPO = Path(__file__).resolve().parents[4]
SERVER = REPO / "target" / "release" / "stepgate"
SANDBOX = REPO / "target" / "release" / "sandbox"
START_TIMEOUT = 60.0

T = TypeVar("T")


class StartError(RuntimeError):
    """A binary is missing, or a process did not come up (its log's end is in the message)."""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """``probe()``'s first answer that is not ``None``, tried every 0.2 s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the OS says are free now (held until all are picked, so no
    two are the same)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if self.popen.poll() is not None:
                raise StartError(
                    f"{self.name} exited ({self.popen.returncode}):\n{_log_tail(self.log)}"
                )
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} did not start in time:\n{_log_tail(self.log)}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _start(name: str, command: list[str], env: Mapping[str, str], log: Path) -> Process:
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command, cwd=REPO, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Process(name, popen, log)


@dataclass(frozen=True)
class Deployment:
    """A running Stepgate (``base_url``) and its sandbox; ``doubles`` maps each simulated
    host's short name (``flameconnect``, ``lynkcoB2c``, …) to its ``HOST:PORT``."""

    base_url: str
    sandbox_url: str
    doubles: dict[str, str]
    server_log: Path


def _clean_environment() -> dict[str, str]:
    """This process's environment without any Stepgate or Leptos setting (a DATABASE_URL of the
    calling script must not point the test server at its database)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("STEPGATE_", "LEPTOS_")) and name != "DATABASE_URL"
    }


@contextmanager
def running_stepgate() -> Iterator[Deployment]:
    """Starts the sandbox and the server, yields them, stops them and deletes their data."""
    for binary in (SERVER, SANDBOX):
        if not binary.exists():
            raise StartError(
                f"{binary} is missing: build it with `cargo leptos build --release --precompress`"
                " and `cargo build --release -p sandbox` (scripts/python-tests.sh does)"
            )
    workdir = Path(tempfile.mkdtemp(prefix="stepgate-pytest-"))
    base_env = _clean_environment()
    processes: list[Process] = []
    try:
        # The table of doubles says how many hosts there are and which variable places each.
        probe_env = {**base_env, "STEPGATE_SANDBOX_ADDR": "127.0.0.1:1"}
        table = json.loads(subprocess.check_output([str(SANDBOX), "--print-json"], env=probe_env))
        app_port, sandbox_port, *double_ports = free_ports(2 + len(table))
        app_origin = f"http://127.0.0.1:{app_port}"
        sandbox_env = {
            **base_env,
            "STEPGATE_SANDBOX_ADDR": f"127.0.0.1:{sandbox_port}",
            "STEPGATE_APP_ORIGIN": app_origin,
            **{
                double["addrVar"]: f"127.0.0.1:{port}"
                for double, port in zip(table.values(), double_ports, strict=True)
            },
        }
        # Read back with every address set: the sandbox is the one source of the table.
        table = json.loads(subprocess.check_output([str(SANDBOX), "--print-json"], env=sandbox_env))
        doubles = {name: double["addr"] for name, double in table.items()}
        upstreams = " ".join(f"{d['origin']}=http://{d['addr']}" for d in table.values())

        sandbox = _start("sandbox", [str(SANDBOX)], sandbox_env, workdir / "sandbox.log")
        processes.append(sandbox)
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        sandbox.wait_ready(
            lambda: (
                _listening(f"127.0.0.1:{sandbox_port}")
                and all(_listening(address) for address in doubles.values())
            )
        )

        server_env = {
            **base_env,
            "LEPTOS_SITE_ADDR": f"127.0.0.1:{app_port}",
            "STEPGATE_DATA": str(workdir / "data"),
            "STEPGATE_KEY_FILE": str(workdir / "secret.key"),
            "STEPGATE_DEMO": "0",
            "STEPGATE_REGISTRATION": "open",
            "STEPGATE_PUBLIC_URL": app_origin,
            "STEPGATE_TOTP_PROVIDER_URL": sandbox_url,
            "STEPGATE_UPSTREAMS": upstreams,
            # The tests' webhook receiver listens on loopback, which webhooks may not reach
            # unless the admin allows it.
            "STEPGATE_WEBHOOK_ALLOW": "127.0.0.1",
            # Every visit of /accounts checks the accounts: a revoked one shows at once.
            "STEPGATE_ACCOUNT_CHECK_INTERVAL": "0",
            "RUST_LOG": "info,sqlx=warn",
        }
        server = _start("server", [str(SERVER)], server_env, workdir / "server.log")
        processes.append(server)

        def login_page_answers() -> bool:
            try:
                return httpx.get(f"{app_origin}/login", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        server.wait_ready(login_page_answers)
        yield Deployment(app_origin, sandbox_url, doubles, workdir / "server.log")
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# Stepgate's pages ------------------------------------------------------------------------


@dataclass
class Form:
    action: str
    # Every named input's value (hidden ones included), by name.
    values: dict[str, str] = field(default_factory=dict)


class _PageParser(HTMLParser):
    """The forms of a page and the value of every input with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.inputs_by_id: dict[str, str] = {}
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._open = Form(action=a.get("action", ""))
            self.forms.append(self._open)
        elif tag in ("input", "select", "textarea"):
            if "id" in a:
                self.inputs_by_id[a["id"]] = a.get("value", "")
            if self._open is not None and "name" in a:
                self._open.values[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def parse_page(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    return parser


def _refusal(encoded: str) -> str:
    """The ``{"code": …}`` a refused form post carries in its redirect, for the message."""
    try:
        # parse_qs read a "+" of the base64 as a space.
        decoded = base64.b64decode(encoded.replace(" ", "+") + "==").decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    return decoded or encoded


class Site:
    """One browser session on Stepgate, driving its plain HTML forms (they work without
    JavaScript). Posts carry the page's own ``Origin`` and a ``Referer``, as a browser's do, so
    the same-origin check (server/src/same_origin.rs) passes for the right reason."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(
            base_url=base_url,
            follow_redirects=False,
            # A browser's form post accepts HTML: server functions then redirect, not answer JSON.
            headers={"Accept": "text/html", "Origin": base_url},
            timeout=30,
        )

    def close(self) -> None:
        self.http.close()

    def page(self, path: str) -> _PageParser:
        answer = self.http.get(path)
        assert answer.status_code == 200, f"GET {path}: HTTP {answer.status_code}"
        return parse_page(answer.text)

    def submit(self, action: str, values: Mapping[str, str], *, from_page: str) -> str:
        """Posts a form; returns where the server sends the browser. A refusal comes back as a
        redirect to the page with ``__err=<base64 JSON>``: raised with its code."""
        answer = self.http.post(
            action, data=dict(values), headers={"Referer": self.base_url + from_page}
        )
        assert answer.status_code in (302, 303), (
            f"POST {action}: HTTP {answer.status_code}: {answer.text[:300]}"
        )
        location = answer.headers["location"]
        errors = parse_qs(urlsplit(location).query).get("__err")
        if errors:
            raise AssertionError(f"POST {action} refused: {_refusal(errors[0])}")
        return location

    def register(self, email: str, password: str) -> None:
        self.page("/register")
        form = {"email": email, "password": password, "confirm_password": password}
        assert self.submit("/api/register", form, from_page="/register") == "/"

    def confirm_identity(self, password: str) -> None:
        """Types the password again ("Confirm it's you"): sensitive acts need no more for
        ten minutes."""
        location = self.submit(
            "/api/confirm_identity",
            {"next": "/", "password": password},
            from_page="/settings/confirm",
        )
        assert "confirmed=1" in location, location

    def connect(
        self,
        provider: str,
        fields: Mapping[str, str],
        *later_steps: Callable[[], Mapping[str, str]],
    ) -> int:
        """Connects an account through the provider's connect page: ``fields`` for its first
        form, then each of ``later_steps`` gives the next step's fields (e.g. an SMS code).
        Returns the new account's id."""
        path = f"/accounts/connect/{provider}"
        steps = [lambda: fields, *later_steps]
        for step in steps:
            (form,) = [f for f in self.page(path).forms if f.action == "/api/submit_connect_step"]
            values = {
                name: value for name, value in form.values.items() if not name.startswith("fields[")
            }
            wanted = step()
            for name, value in wanted.items():
                assert f"fields[{name}]" in form.values, (
                    f"{provider}: no field {name!r} in {form.values}"
                )
                values[f"fields[{name}]"] = value
            location = self.submit(form.action, values, from_page=path)
            connected = parse_qs(urlsplit(location).query).get("connected")
            if connected:
                return int(connected[0])
            path = location
        raise AssertionError(f"{provider}: not connected after {len(steps)} steps (at {path})")

    def create_api_key(self, name: str, account_ids: list[int], password: str) -> str:
        """Creates a key that may read ``account_ids`` (confirming the password when asked);
        returns its secret, read from the page that shows it once."""
        form = {"name": name, "expires": "never", **{f"accounts[{i}]": "on" for i in account_ids}}
        location = self.submit("/api/create_api_key", form, from_page="/settings/api-keys")
        if location.startswith("/settings/confirm"):
            self.confirm_identity(password)
            location = self.submit("/api/create_api_key", form, from_page="/settings/api-keys")
        assert location == "/settings/api-keys?created=1", location
        key = self.page(location).inputs_by_id.get("new-key", "")
        assert key.startswith("sgk_"), "the new key is not on the page"
        return key

    def save_webhook(self, url: str) -> str:
        """Saves the webhook URL; returns the signing secret shown once."""
        location = self.submit("/api/save_webhook", {"url": url}, from_page="/settings/webhooks")
        assert location == "/settings/webhooks?saved=1", location
        secret = self.page(location).inputs_by_id.get("signing-secret", "")
        assert secret.startswith("whsec_"), "the signing secret is not on the page"
        return secret

    def give_apps_sign_in_links(self, on: bool) -> None:
        """Ticks or clears "Give apps sign-in links" on the webhooks page (turning it on needs
        the password confirmed in the last ten minutes)."""
        form = {"on": "on"} if on else {}
        location = self.submit(
            "/api/set_sign_in_links_for_apps", form, from_page="/settings/webhooks"
        )
        assert location == f"/settings/webhooks?links={'on' if on else 'off'}", location

    def check_accounts(self) -> None:
        """Opens the accounts page, which has Stepgate ask each provider whether the
        account's tokens still work (in the background)."""
        self.page("/accounts")


# Webhooks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every request it gets and answers 204."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._arrived:
                    receiver.deliveries.append(Delivery(dict(self.headers.items()), body))
                    receiver._arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test's output is for the tests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/stepgate"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(
        self, what: str, matches: Callable[[list[Delivery]], bool], timeout: float = 20.0
    ) -> None:
        with self._arrived:
            if not self._arrived.wait_for(lambda: matches(self.deliveries), timeout):
                raise AssertionError(
                    f"timed out waiting for {what}; got {len(self.deliveries)} deliveries"
                )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
