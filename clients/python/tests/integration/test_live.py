"""The client against a real Stepgate and sandbox (started by the session fixture): each
provider's credentials and proxied API calls, Stepgate's refusals as exceptions, the rate
limit, and a real webhook delivery verified with the secret shown once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

import stepgate
from stepgate import webhooks
from tests.integration.conftest import FLAMECONNECT_OTHER, LIBRUS, LYNKCO, PASSWORD, Owner
from tests.integration.live import Delivery, Deployment, wait_until

pytestmark = pytest.mark.integration

LYNKCO_DRIVERS_ORIGIN = "https://delegated-driver-tls.aion.connectedcar.cloud"
LYNKCO_VEHICLES_ORIGIN = "https://user-lifecycle-tls.aion.connectedcar.cloud"


def test_the_key_lists_every_account_it_was_given(client: stepgate.Client, owner: Owner) -> None:
    accounts = client.accounts()
    assert {a.id: a.provider for a in accounts} == {
        owner.accounts[name]: name.removesuffix("_other") for name in owner.accounts
    }
    lynkco = next(a for a in accounts if a.provider == "lynkco")
    assert client.account(lynkco.id) == lynkco
    assert (lynkco.name, lynkco.last_error) == (LYNKCO["email"], None)


async def test_the_async_client_reads_the_same(
    deployment: Deployment, owner: Owner, client: stepgate.Client
) -> None:
    async with stepgate.AsyncClient(deployment.base_url, owner.key, max_rate_limit_retries=5) as sg:
        listed = await sg.accounts()
        credentials = await asyncio.gather(*(sg.credentials(a.id) for a in listed[:2]))
    assert {a.id for a in listed} == {a.id for a in client.accounts()}
    assert [c.account_id for c in credentials] == [a.id for a in listed[:2]]


@pytest.mark.parametrize(
    ("provider", "fields"),
    [
        ("librus", {"DZIENNIKSID", "SDZIENNIKSID", "oauth_token"}),
        ("xiaomi", {"serviceToken", "userId", "ssecurity"}),
        ("lynkco", {"access_token", "ccc_token", "vin"}),
        ("flameconnect", {"access_token"}),
    ],
)
def test_credentials_of_each_provider(
    client: stepgate.Client, owner: Owner, provider: str, fields: set[str]
) -> None:
    credentials = client.credentials(owner.accounts[provider])
    assert (credentials.account_id, credentials.provider) == (owner.accounts[provider], provider)
    assert fields <= credentials.credentials.keys()
    assert all(credentials.credentials[f] for f in fields), "an empty credential"
    if provider in ("lynkco", "flameconnect"):
        assert credentials.expires_at is not None, "B2C tokens say when they expire"


# The proxy -------------------------------------------------------------------------------


def test_proxy_flameconnect_lists_the_fires(client: stepgate.Client, owner: Owner) -> None:
    answer = client.proxy(owner.accounts["flameconnect"], "GET", "api/Fires/GetFires")
    assert answer.status_code == 200, answer.text
    fires = answer.json()
    assert fires and all(fire["FireId"] for fire in fires), fires


def test_proxy_librus_reads_me(client: stepgate.Client, owner: Owner) -> None:
    answer = client.proxy(owner.accounts["librus"], "GET", "/gateway/api/2.0/Me")
    assert answer.status_code == 200, answer.text
    assert answer.json()["Me"]["Account"]["Login"] == LIBRUS["login"]


def test_proxy_lynkco_lists_the_vehicles_on_other_origins(
    client: stepgate.Client, owner: Owner
) -> None:
    account = owner.accounts["lynkco"]
    drivers = client.proxy(
        account,
        "GET",
        f"delegated-driver/api/delegateddriver/v1/vehicle/{LYNKCO['vin']}/drivers",
        origin=LYNKCO_DRIVERS_ORIGIN,
    )
    assert drivers.status_code == 200, drivers.text
    user_id = drivers.json()["drivers"][0]["userId"]
    vehicles = client.proxy(
        account,
        "GET",
        f"user-lifecycle/api/provisioning/v1/users/{user_id}/activevehicles",
        origin=LYNKCO_VEHICLES_ORIGIN,
    )
    assert vehicles.status_code == 200, vehicles.text
    assert LYNKCO["vin"] in vehicles.text


def test_proxy_xiaomi_lists_the_devices(client: stepgate.Client, owner: Owner) -> None:
    # Stepgate signs the request with the account's ssecurity; the app sends the form only.
    form = {"data": json.dumps({"getVirtualModel": False, "getHuamiDevices": 0})}
    answer = client.proxy(owner.accounts["xiaomi"], "POST", "app/home/device_list", data=form)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["code"], type(body["result"]["list"])) == (0, list), body


def test_proxy_to_an_origin_the_provider_does_not_declare_is_refused(
    client: stepgate.Client, owner: Owner
) -> None:
    with pytest.raises(stepgate.ProxyNotAllowed) as raised:
        client.proxy(
            owner.accounts["flameconnect"], "GET", "anything", origin="https://example.org"
        )
    assert raised.value.status == 403


# Stepgate's refusals ---------------------------------------------------------------------


def test_a_wrong_key_is_invalid_api_key(deployment: Deployment, owner: Owner) -> None:
    wrong = owner.key[:-4] + ("0000" if not owner.key.endswith("0000") else "1111")
    with (
        stepgate.Client(deployment.base_url, wrong) as sg,
        pytest.raises(stepgate.InvalidApiKey) as raised,
    ):
        sg.accounts()
    assert (raised.value.code, raised.value.status) == ("invalid_api_key", 401)


@pytest.fixture(scope="module")
def unscoped_key(owner: Owner) -> str:
    """A key of the same user that was given no account."""
    return owner.site.create_api_key("nothing", [], PASSWORD)


def test_an_account_outside_the_keys_scope_is_refused(
    deployment: Deployment, owner: Owner, unscoped_key: str
) -> None:
    with stepgate.Client(deployment.base_url, unscoped_key, max_rate_limit_retries=5) as sg:
        assert sg.accounts() == []
        with pytest.raises(stepgate.AccountNotInScope):
            sg.credentials(owner.accounts["librus"])
        with pytest.raises(stepgate.NotFound):
            sg.account("not-a-number")  # type: ignore[arg-type]


def test_the_proxy_refuses_an_account_outside_the_keys_scope(
    deployment: Deployment, owner: Owner, unscoped_key: str
) -> None:
    with stepgate.Client(deployment.base_url, unscoped_key, max_rate_limit_retries=5) as sg:
        with pytest.raises(stepgate.AccountNotInScope) as raised:
            sg.proxy(owner.accounts["flameconnect"], "GET", "api/Fires/GetFires")
    assert raised.value.status == 403


@pytest.fixture(scope="module")
def refused_account(deployment: Deployment, owner: Owner) -> Iterator[int]:
    """The ``other@flameconnect.test`` account after the provider stopped taking its tokens
    and Stepgate's check noticed."""
    account = owner.accounts["flameconnect_other"]
    revoked = httpx.post(
        f"http://{deployment.doubles['flameconnect']}/testing/revoke",
        json={"account": FLAMECONNECT_OTHER["email"]},
    )
    assert revoked.status_code == 200, revoked.text
    with stepgate.Client(deployment.base_url, owner.key, max_rate_limit_retries=5) as sg:

        def needs_sign_in() -> bool | None:
            owner.site.check_accounts()
            return sg.account(account).status == "needs_sign_in" or None

        wait_until("the account to need sign-in", needs_sign_in)
    yield account


def test_an_account_the_provider_refuses_needs_sign_in(
    client: stepgate.Client, refused_account: int
) -> None:
    with pytest.raises(stepgate.NeedsSignIn) as raised:
        client.credentials(refused_account)
    assert (raised.value.code, raised.value.status) == ("needs_sign_in", 409)
    # The owner has not let apps have sign-in links.
    assert raised.value.sign_in_link is None
    assert client.account(refused_account).status == "needs_sign_in"


def test_the_proxy_of_an_account_that_needs_sign_in_raises(
    client: stepgate.Client, refused_account: int
) -> None:
    with pytest.raises(stepgate.NeedsSignIn):
        client.proxy(refused_account, "GET", "api/Fires/GetFires")


def test_a_sign_in_link_is_refused_until_the_owner_allows_it(
    client: stepgate.Client, refused_account: int
) -> None:
    with pytest.raises(stepgate.SignInLinksOff) as raised:
        client.sign_in_link(refused_account)
    assert (raised.value.code, raised.value.status) == ("sign_in_links_off", 403)


def test_with_links_allowed_an_app_gets_one_and_needs_sign_in_carries_it(
    client: stepgate.Client, owner: Owner, refused_account: int
) -> None:
    owner.site.give_apps_sign_in_links(True)
    try:
        link = client.sign_in_link(refused_account)
        assert "/sign-in-link/" in link.url
        assert link.expires_at > datetime.now(UTC)
        with pytest.raises(stepgate.NeedsSignIn) as raised:
            client.credentials(refused_account)
        # The account's live link for apps, not a new one per refusal.
        assert raised.value.sign_in_link == link.url
    finally:
        owner.site.give_apps_sign_in_links(False)


# The rate limit --------------------------------------------------------------------------


async def test_a_burst_over_the_keys_rate_is_rate_limited(
    deployment: Deployment, owner: Owner
) -> None:
    key = owner.site.create_api_key("burst", [], PASSWORD)
    async with stepgate.AsyncClient(deployment.base_url, key) as sg:
        answers = await asyncio.gather(*(sg.accounts() for _ in range(40)), return_exceptions=True)
    limited = [a for a in answers if isinstance(a, stepgate.RateLimited)]
    assert limited, "40 requests at once, and none over the burst of 20"
    assert all(a.retry_after > 0 for a in limited)
    assert all(a == [] for a in answers if not isinstance(a, BaseException)), answers


def test_retries_wait_out_the_rate_limit(deployment: Deployment, owner: Owner) -> None:
    key = owner.site.create_api_key("patient", [], PASSWORD)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with stepgate.Client(deployment.base_url, key, max_rate_limit_retries=3, sleep=sleep) as sg:
        # The burst of 20 and then some, one after another: the bucket runs dry on the way.
        results = [sg.accounts() for _ in range(30)]
    assert results == [[]] * 30
    assert slept and all(0 < s <= 60 for s in slept)


# Webhooks --------------------------------------------------------------------------------


def _events(owner: Owner, deliveries: list[Delivery]) -> list[webhooks.WebhookEvent]:
    return [webhooks.verify(d.body, d.headers, owner.webhook_secret) for d in deliveries]


def test_real_deliveries_verify_with_the_secret_shown_once(owner: Owner) -> None:
    connected = set(owner.accounts.values())

    def all_connected(deliveries: list[Delivery]) -> bool:
        events = _events(owner, deliveries)
        told = {e.data.get("account_id") for e in events if e.type == webhooks.ACCOUNT_CONNECTED}
        return connected <= told

    owner.receiver.wait_for("an account.connected delivery per account", all_connected)
    event = _events(owner, owner.receiver.deliveries)[0]
    assert event.id.startswith("msg_")
    assert {"account_id", "provider", "name"} <= event.data.keys()

    delivery = owner.receiver.deliveries[0]
    with pytest.raises(webhooks.WebhookVerificationError) as raised:
        webhooks.verify(delivery.body + b" ", delivery.headers, owner.webhook_secret)
    assert raised.value.code == "invalid_signature"


def test_needs_sign_in_is_told_to_the_webhook(owner: Owner, refused_account: int) -> None:
    def told(deliveries: list[Delivery]) -> bool:
        return any(
            e.type == webhooks.ACCOUNT_NEEDS_SIGN_IN and e.data.get("account_id") == refused_account
            for e in _events(owner, deliveries)
        )

    owner.receiver.wait_for("an account.needs_sign_in delivery", told)
