"""Webhook verification against deliveries signed here the way Stepgate signs them
(engine/src/apps/webhooks.rs): HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with the
base64-decoded part of ``whsec_…``, sent as ``v1,<base64>``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest

from stepgate import webhooks

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = json.dumps(
    {
        "type": "account.needs_sign_in",
        "timestamp": "2026-12-06T03:49:21Z",
        "data": {
            "account_id": 7,
            "provider": "flameconnect",
            "name": "demo@flameconnect.test",
            "sign_in_link": "https://stepgate.example.org/sign-in/abc",
        },
    }
).encode()


def signed(
    body: bytes = BODY, *, key: bytes = KEY, timestamp: int | None = None, msg_id: str = "msg_1"
) -> dict[str, str]:
    """The headers Stepgate sends with ``body``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def test_a_signed_delivery_is_the_event() -> None:
    event = webhooks.verify(BODY, signed(), SECRET)
    assert event == webhooks.WebhookEvent(
        id="msg_1",
        type=webhooks.ACCOUNT_NEEDS_SIGN_IN,
        timestamp=datetime(2026, 12, 6, 3, 49, 21, tzinfo=UTC),
        data={
            "account_id": 7,
            "provider": "flameconnect",
            "name": "demo@flameconnect.test",
            "sign_in_link": "https://stepgate.example.org/sign-in/abc",
        },
    )


def test_a_str_body_and_header_names_in_any_case_verify() -> None:
    headers = {name.title(): value for name, value in signed().items()}
    assert webhooks.verify(BODY.decode(), headers, SECRET).id == "msg_1"


def test_one_matching_signature_among_several_is_enough() -> None:
    headers = signed()
    other = signed(key=b"an older secret's key, rotated away")["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    assert webhooks.verify(BODY, headers, SECRET).type == "account.needs_sign_in"


def test_a_tampered_body_is_refused() -> None:
    headers = signed()
    tampered = BODY.replace(b"flameconnect.test", b"flameconnect.evil")
    with pytest.raises(webhooks.WebhookVerificationError) as raised:
        webhooks.verify(tampered, headers, SECRET)
    assert raised.value.code == "invalid_signature"


def test_another_secret_is_refused() -> None:
    other_secret = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(webhooks.WebhookVerificationError) as raised:
        webhooks.verify(BODY, signed(), other_secret)
    assert raised.value.code == "invalid_signature"


@pytest.mark.parametrize("off_by", [-600, 600])
def test_a_timestamp_more_than_five_minutes_off_is_refused(off_by: int) -> None:
    headers = signed(timestamp=int(time.time()) + off_by)
    with pytest.raises(webhooks.WebhookVerificationError) as raised:
        webhooks.verify(BODY, headers, SECRET)
    assert raised.value.code == "stale_timestamp"


def test_a_replayed_timestamp_with_a_fresh_header_is_refused() -> None:
    # Changing the timestamp to pass the age check breaks the signature it is part of.
    headers = signed(timestamp=int(time.time()) - 600)
    headers["webhook-timestamp"] = str(int(time.time()))
    with pytest.raises(webhooks.WebhookVerificationError) as raised:
        webhooks.verify(BODY, headers, SECRET)
    assert raised.value.code == "invalid_signature"


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(header: str) -> None:
    headers = signed()
    del headers[header]
    with pytest.raises(webhooks.WebhookVerificationError) as raised:
        webhooks.verify(BODY, headers, SECRET)
    assert raised.value.code == "bad_headers"
    assert header in raised.value.message


def test_a_timestamp_that_is_not_unix_seconds_is_refused() -> None:
    headers = signed()
    headers["webhook-timestamp"] = "yesterday"
    with pytest.raises(webhooks.WebhookVerificationError) as raised:
        webhooks.verify(BODY, headers, SECRET)
    assert raised.value.code == "bad_headers"


def test_a_signed_body_that_is_not_an_event_is_invalid_payload() -> None:
    for body in (b"[1, 2]", b'{"type": "account.removed"}', b"not json"):
        with pytest.raises(webhooks.WebhookVerificationError) as raised:
            webhooks.verify(body, signed(body), SECRET)
        assert raised.value.code == "invalid_payload", body


@pytest.mark.parametrize(
    "secret", ["", "whsec_", "whsec_not base64!", base64.b64encode(KEY).decode()]
)
def test_a_secret_that_is_not_whsec_base64_is_a_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        webhooks.verify(BODY, signed(), secret)
