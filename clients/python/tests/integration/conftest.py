"""One Stepgate and sandbox for the whole session, and one user on it with an account of every
provider connected through the real connect forms, an API key for them, and a webhook."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx
import pytest

import stepgate
from tests.integration.live import Deployment, Receiver, Site, running_stepgate, wait_until

PASSWORD = "pytest-pass-1-quiet-harbor"

# The sandbox's demo accounts (sandbox/src/*.rs). "other@flameconnect.test" is the one the
# needs-sign-in test makes the provider refuse: revoking is per provider account, so the
# demo account that the other tests read stays signed in.
LIBRUS = {"login": "demo.parent", "password": "librus-demo"}
XIAOMI = {"username": "demo@xiaomi.test", "password": "xiaomi-demo"}
LYNKCO = {"email": "demo@lynkco.test", "password": "lynkco-demo", "vin": "LYVXFEDC0KL123456"}
FLAMECONNECT = {"email": "demo@flameconnect.test", "password": "flame-demo"}
FLAMECONNECT_OTHER = {"email": "other@flameconnect.test", "password": "flame-demo"}


@dataclass(frozen=True)
class Owner:
    """A Stepgate user with connected accounts (ids by ``librus``, ``xiaomi``, ``lynkco``,
    ``flameconnect`` and ``flameconnect_other``), a key that may read them all, and a webhook
    to ``receiver`` signed with ``webhook_secret``."""

    site: Site
    key: str
    accounts: dict[str, int]
    receiver: Receiver
    webhook_secret: str


def unique_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.org"


def lynkco_sms_code(
    deployment: Deployment, sent_after_ms: float
) -> Callable[[], Mapping[str, str]]:
    """The code step's fields: the SMS code the Lynk & Co double "sent" after ``sent_after_ms``,
    read from its inbox."""

    def newest_code() -> str | None:
        inbox = httpx.get(f"http://{deployment.doubles['lynkcoB2c']}/inbox.json").json()
        sent = [
            m for m in inbox if m["account"] == LYNKCO["email"] and m["sent_at_ms"] >= sent_after_ms
        ]
        return max(sent, key=lambda m: m["sent_at_ms"])["code"] if sent else None

    return lambda: {"code": wait_until("the Lynk & Co SMS code", newest_code)}


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    with running_stepgate() as running:
        yield running


@pytest.fixture(scope="session")
def owner(deployment: Deployment) -> Iterator[Owner]:
    site = Site(deployment.base_url)
    receiver = Receiver()
    try:
        site.register(unique_email("python"), PASSWORD)
        # Saving the webhook and creating keys are sensitive acts: confirm once for both.
        site.confirm_identity(PASSWORD)
        # Saved first, so every connection below is told to it.
        secret = site.save_webhook(receiver.url)
        sms_after = time.time() * 1000 - 1000
        accounts = {
            "librus": site.connect("librus", LIBRUS),
            "xiaomi": site.connect("xiaomi", XIAOMI),
            "lynkco": site.connect("lynkco", LYNKCO, lynkco_sms_code(deployment, sms_after)),
            "flameconnect": site.connect("flameconnect", FLAMECONNECT),
            "flameconnect_other": site.connect("flameconnect", FLAMECONNECT_OTHER),
        }
        key = site.create_api_key("pytest", list(accounts.values()), PASSWORD)
        yield Owner(site, key, accounts, receiver, secret)
    finally:
        receiver.close()
        site.close()


@pytest.fixture
def client(deployment: Deployment, owner: Owner) -> Iterator[stepgate.Client]:
    """The owner's key. The tests share its rate (10 a second, bursts of 20), so a burst of
    them is waited out rather than failed."""
    with stepgate.Client(deployment.base_url, owner.key, max_rate_limit_retries=5) as sg:
        yield sg
