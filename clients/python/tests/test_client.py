"""The clients against a mock Stepgate: requests as the API expects them, answers read into
models, every error code into its exception, the proxy's pass-through, and rate-limit retries.
Each test runs on the blocking and on the async client (``make_api``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

import stepgate
from tests.conftest import MakeApi
from tests.fakes import API_KEY, error

ACCOUNT = {
    "id": 7,
    "provider": "flameconnect",
    "name": "demo@flameconnect.test",
    "status": "degraded",
    "last_renewed_at": 1_765_000_000,
    "next_renewal_at": None,
    "last_error": {"code": "timeout", "message": "The provider took too long to answer."},
}
CREDENTIALS = {
    "account_id": 7,
    "provider": "flameconnect",
    "name": "demo@flameconnect.test",
    "credentials": {"access_token": "secret-upstream-token", "expires_at": 1_765_003_600},
    "expires_at": 1_765_003_600,
    "renewed_at": None,
}


def test_accounts_are_read_with_their_health(make_api: MakeApi) -> None:
    api = make_api(lambda _: httpx.Response(200, json={"accounts": [ACCOUNT]}))
    accounts = api.call("accounts")
    assert accounts == [
        stepgate.Account(
            id=7,
            provider="flameconnect",
            name="demo@flameconnect.test",
            status="degraded",
            last_renewed_at=datetime(2025, 12, 6, 5, 46, 40, tzinfo=UTC),
            next_renewal_at=None,
            last_error=stepgate.AccountError(
                code="timeout", message="The provider took too long to answer."
            ),
        )
    ]
    (sent,) = api.requests
    assert (sent.method, sent.url.path) == ("GET", "/api/v1/accounts")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


def test_one_account_and_its_credentials(make_api: MakeApi) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/accounts/7":
            return httpx.Response(200, json=ACCOUNT)
        if request.url.path == "/api/v1/accounts/7/credentials":
            return httpx.Response(200, json=CREDENTIALS)
        return error(404, "not_found")

    api = make_api(answer)
    assert api.call("account", 7).status == "degraded"
    credentials = api.call("credentials", 7)
    assert credentials.credentials["access_token"] == "secret-upstream-token"
    assert credentials.expires_at == datetime.fromtimestamp(1_765_003_600, tz=UTC)
    assert credentials.renewed_at is None
    assert "secret-upstream-token" not in repr(credentials)


def test_a_base_url_with_a_path_keeps_it(make_api: MakeApi) -> None:
    api = make_api(
        lambda _: httpx.Response(200, json={"accounts": []}), base_url="http://lan.test/stepgate/"
    )
    assert api.call("accounts") == []
    assert str(api.requests[0].url) == "http://lan.test/stepgate/api/v1/accounts"


@pytest.mark.parametrize(
    ("status", "code", "exception"),
    [
        (401, "invalid_api_key", stepgate.InvalidApiKey),
        (401, "api_key_expired", stepgate.InvalidApiKey),
        (403, "account_not_in_scope", stepgate.AccountNotInScope),
        (404, "not_found", stepgate.NotFound),
        (403, "proxy_not_allowed", stepgate.ProxyNotAllowed),
        (403, "sign_in_links_off", stepgate.SignInLinksOff),
        (409, "needs_sign_in", stepgate.NeedsSignIn),
        (429, "rate_limited", stepgate.RateLimited),
        (503, "cannot_connect", stepgate.ProviderUnavailable),
        (503, "timeout", stepgate.ProviderUnavailable),
        (503, "service_unavailable", stepgate.ProviderUnavailable),
        (500, "unknown", stepgate.StepgateError),
        (418, "a_code_from_a_newer_stepgate", stepgate.StepgateError),
    ],
)
def test_each_error_code_is_its_exception(
    make_api: MakeApi, status: int, code: str, exception: type[stepgate.StepgateError]
) -> None:
    api = make_api(lambda _: error(status, code))
    with pytest.raises(stepgate.StepgateError) as raised:
        api.call("credentials", 7)
    assert type(raised.value) is exception
    assert (raised.value.code, raised.value.status) == (code, status)
    assert raised.value.message == f"Sentence for {code}."


def test_needs_sign_in_carries_the_link_when_the_owner_allows_it(make_api: MakeApi) -> None:
    link = "https://stepgate.example.org/sign-in/abc"
    with pytest.raises(stepgate.NeedsSignIn) as with_link:
        make_api(lambda _: error(409, "needs_sign_in", sign_in_link=link)).call("credentials", 7)
    assert with_link.value.sign_in_link == link
    with pytest.raises(stepgate.NeedsSignIn) as without:
        make_api(lambda _: error(409, "needs_sign_in")).call("credentials", 7)
    assert without.value.sign_in_link is None


def test_an_answer_that_is_not_the_api_is_unexpected_response(make_api: MakeApi) -> None:
    # A reverse proxy's error page in front of Stepgate.
    page = httpx.Response(502, text="<h1>Bad Gateway</h1>", headers={"content-type": "text/html"})
    with pytest.raises(stepgate.StepgateError) as raised:
        make_api(lambda _: page).call("accounts")
    assert (type(raised.value), raised.value.code) == (
        stepgate.StepgateError,
        "unexpected_response",
    )
    assert raised.value.status == 502
    # A success whose body is not the documented shape.
    with pytest.raises(stepgate.StepgateError) as shapeless:
        make_api(lambda _: httpx.Response(200, json={"accounts": "none"})).call("accounts")
    assert shapeless.value.code == "unexpected_response"


def test_no_answer_from_stepgate_is_stepgate_unreachable(make_api: MakeApi) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(stepgate.StepgateUnreachable) as raised:
        make_api(refuse).call("accounts")
    assert (raised.value.code, raised.value.status) == ("stepgate_unreachable", None)
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


def test_rate_limited_reads_retry_after_and_raises_without_retries(make_api: MakeApi) -> None:
    limited = httpx.Response(
        429, json={"code": "rate_limited", "message": "Too many."}, headers={"retry-after": "2"}
    )
    api = make_api(lambda _: limited)
    with pytest.raises(stepgate.RateLimited) as raised:
        api.call("accounts")
    assert raised.value.retry_after == 2.0
    assert (len(api.requests), api.slept) == (1, [])


def test_rate_limited_is_waited_out_up_to_the_retries_asked_for(make_api: MakeApi) -> None:
    answers = iter(
        [
            httpx.Response(
                429, json={"code": "rate_limited", "message": "."}, headers={"retry-after": "1"}
            ),
            httpx.Response(
                429, json={"code": "rate_limited", "message": "."}, headers={"retry-after": "3"}
            ),
            httpx.Response(200, json={"accounts": []}),
        ]
    )
    api = make_api(lambda _: next(answers), max_rate_limit_retries=2)
    assert api.call("accounts") == []
    assert (len(api.requests), api.slept) == (3, [1.0, 3.0])


def test_retries_give_up_after_n_and_sleep_at_most_a_minute(make_api: MakeApi) -> None:
    limited = httpx.Response(
        429, json={"code": "rate_limited", "message": "."}, headers={"retry-after": "3600"}
    )
    api = make_api(lambda _: limited, max_rate_limit_retries=3)
    with pytest.raises(stepgate.RateLimited) as raised:
        api.call("credentials", 7)
    assert raised.value.retry_after == 3600.0
    assert (len(api.requests), api.slept) == (4, [60.0, 60.0, 60.0])


def test_a_missing_retry_after_waits_the_bodys_or_a_second(make_api: MakeApi) -> None:
    with pytest.raises(stepgate.RateLimited) as from_body:
        make_api(lambda _: error(429, "rate_limited", retry_after=4)).call("accounts")
    assert from_body.value.retry_after == 4.0
    with pytest.raises(stepgate.RateLimited) as default:
        make_api(lambda _: error(429, "rate_limited")).call("accounts")
    assert default.value.retry_after == 1.0


def test_other_errors_are_never_retried(make_api: MakeApi) -> None:
    api = make_api(lambda _: error(503, "timeout"), max_rate_limit_retries=5)
    with pytest.raises(stepgate.ProviderUnavailable):
        api.call("credentials", 7)
    assert (len(api.requests), api.slept) == (1, [])


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rate_limit_retries"):
        stepgate.Client("http://stepgate.test", API_KEY, max_rate_limit_retries=-1)


# The proxy -------------------------------------------------------------------------------


def test_the_proxy_sends_method_path_query_origin_and_body(make_api: MakeApi) -> None:
    api = make_api(lambda _: httpx.Response(200, json={"ok": True}))
    answer = api.call(
        "proxy",
        9,
        "post",
        "/user-lifecycle/api/users?expand=1",
        origin="https://user-lifecycle-tls.aion.connectedcar.cloud",
        params={"page": 2},
        headers={"X-Trace": "t1"},
        json={"hello": "world"},
    )
    assert answer.json() == {"ok": True}
    (sent,) = api.requests
    assert sent.method == "POST"
    assert sent.url.path == "/api/v1/accounts/9/proxy/user-lifecycle/api/users"
    assert dict(sent.url.params) == {"expand": "1", "page": "2"}
    assert sent.headers["stepgate-origin"] == "https://user-lifecycle-tls.aion.connectedcar.cloud"
    assert sent.headers["x-trace"] == "t1"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(sent.content) == {"hello": "world"}


def test_the_proxy_without_origin_or_leading_slash_sends_a_form(make_api: MakeApi) -> None:
    api = make_api(lambda _: httpx.Response(200, json={"code": 0}))
    form = {"data": '{"getVirtualModel":false,"getHuamiDevices":0}'}
    api.call("proxy", 3, "POST", "app/home/device_list", data=form)
    (sent,) = api.requests
    assert sent.url.path == "/api/v1/accounts/3/proxy/app/home/device_list"
    assert "stepgate-origin" not in sent.headers
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert httpx.QueryParams(sent.content.decode()) == httpx.QueryParams(form)


@pytest.mark.parametrize("status", [404, 500, 401, 429])
def test_the_upstreams_errors_come_back_as_responses(make_api: MakeApi, status: int) -> None:
    # Even a body shaped like Stepgate's: without Stepgate-Error it is the upstream's.
    upstream = httpx.Response(
        status,
        content=b'{"code": "not_found", "message": "no fire"}',
        headers={"content-type": "application/vnd.fires+json"},
    )
    api = make_api(lambda _: upstream, max_rate_limit_retries=3)
    answer = api.call("proxy", 7, "GET", "api/Fires/GetFires")
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/vnd.fires+json"
    assert answer.content == b'{"code": "not_found", "message": "no fire"}'
    assert (len(api.requests), api.slept) == (1, [])


@pytest.mark.parametrize(
    ("status", "code", "exception"),
    [
        (403, "proxy_not_allowed", stepgate.ProxyNotAllowed),
        (403, "account_not_in_scope", stepgate.AccountNotInScope),
        (409, "needs_sign_in", stepgate.NeedsSignIn),
        (401, "invalid_api_key", stepgate.InvalidApiKey),
        (503, "cannot_connect", stepgate.ProviderUnavailable),
    ],
)
def test_stepgates_refusals_on_the_proxy_are_raised(
    make_api: MakeApi, status: int, code: str, exception: type[stepgate.StepgateError]
) -> None:
    refusal = httpx.Response(
        status,
        json={"code": code, "message": "Refused."},
        headers={"stepgate-error": code},
    )
    with pytest.raises(exception) as raised:
        make_api(lambda _: refusal).call("proxy", 7, "GET", "api/Fires/GetFires")
    assert (raised.value.code, raised.value.status, raised.value.message) == (
        code,
        status,
        "Refused.",
    )


def test_the_proxys_header_names_the_code_even_without_a_json_body(make_api: MakeApi) -> None:
    bare = httpx.Response(403, text="forbidden", headers={"stepgate-error": "proxy_not_allowed"})
    with pytest.raises(stepgate.ProxyNotAllowed) as raised:
        make_api(lambda _: bare).call("proxy", 7, "GET", "anything")
    assert raised.value.status == 403


def test_the_proxy_waits_out_stepgates_rate_limit(make_api: MakeApi) -> None:
    answers = iter(
        [
            httpx.Response(
                429,
                json={"code": "rate_limited", "message": "."},
                headers={"stepgate-error": "rate_limited", "retry-after": "2"},
            ),
            httpx.Response(200, json={"fires": []}),
        ]
    )
    api = make_api(lambda _: next(answers), max_rate_limit_retries=1)
    assert api.call("proxy", 7, "GET", "api/Fires/GetFires").json() == {"fires": []}
    assert api.slept == [2.0]
    # The retry is the same request again, body and all.
    assert api.requests[0].url == api.requests[1].url


def test_the_proxy_refuses_an_authorization_header(make_api: MakeApi) -> None:
    api = make_api(lambda _: httpx.Response(200))
    with pytest.raises(ValueError, match="Authorization"):
        api.call("proxy", 7, "GET", "api/Fires/GetFires", headers={"authorization": "Bearer x"})
    assert api.requests == []


# Sign-in links ---------------------------------------------------------------------------


def test_a_sign_in_link_is_posted_for(make_api: MakeApi) -> None:
    url = "https://stepgate.example.org/sign-in/abc"
    api = make_api(lambda _: httpx.Response(201, json={"url": url, "expires_at": 1_765_086_400}))
    answer = api.call("sign_in_link", 7)
    assert answer == stepgate.SignInLink(
        url=url, expires_at=datetime.fromtimestamp(1_765_086_400, tz=UTC)
    )
    assert "sign-in/abc" not in repr(answer)
    (sent,) = api.requests
    assert (sent.method, sent.url.path) == ("POST", "/api/v1/accounts/7/sign-in-link")


def test_sign_in_links_off_is_refused(make_api: MakeApi) -> None:
    with pytest.raises(stepgate.SignInLinksOff) as raised:
        make_api(lambda _: error(403, "sign_in_links_off")).call("sign_in_link", 7)
    assert raised.value.status == 403


# Lifecycle -------------------------------------------------------------------------------


def test_the_sync_client_closes_its_connections_on_exit() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"accounts": []}))
    with stepgate.Client("http://stepgate.test", API_KEY, transport=transport) as client:
        assert client.accounts() == []
    with pytest.raises(RuntimeError, match="closed"):
        client.accounts()


async def test_the_async_client_closes_its_connections_on_exit() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"accounts": []}))
    async with stepgate.AsyncClient("http://stepgate.test", API_KEY, transport=transport) as client:
        assert await client.accounts() == []
    with pytest.raises(RuntimeError, match="closed"):
        await client.accounts()
