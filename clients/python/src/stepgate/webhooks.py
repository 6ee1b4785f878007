"""Stepgate's webhooks, verified: each delivery is signed the Standard Webhooks way
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` keyed with the ``whsec_…`` secret shown when the URL was saved).

    event = stepgate.webhooks.verify(request_body, request_headers, secret)
    if event.type == stepgate.webhooks.ACCOUNT_NEEDS_SIGN_IN: ...

Pass the body exactly as received (bytes): a re-serialised JSON body no longer matches.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import standardwebhooks

__all__ = [
    "ACCOUNT_CONNECTED",
    "ACCOUNT_NEEDS_SIGN_IN",
    "ACCOUNT_RECOVERED",
    "ACCOUNT_REMOVED",
    "TIMESTAMP_TOLERANCE",
    "WebhookEvent",
    "WebhookVerificationError",
    "verify",
]

ACCOUNT_CONNECTED = "account.connected"
# Its data may carry "sign_in_link" when the owner lets apps have sign-in links.
ACCOUNT_NEEDS_SIGN_IN = "account.needs_sign_in"
ACCOUNT_RECOVERED = "account.recovered"
ACCOUNT_REMOVED = "account.removed"

# Seconds a delivery's timestamp may be from now: what standardwebhooks enforces, checked here
# first only to tell a stale delivery (a replay, or a clock off) from a bad signature.
TIMESTAMP_TOLERANCE = 5 * 60

SECRET_PREFIX = "whsec_"
_REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookVerificationError(Exception):
    """A delivery that is not provably Stepgate's. ``code``: ``bad_headers`` (missing or
    malformed), ``stale_timestamp``, ``invalid_signature`` or ``invalid_payload`` (signed, but
    not an event)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One verified delivery. ``id`` (``msg_…``) is the same on every retry of it: drop
    duplicates by it. ``data`` has ``account_id``, ``provider`` and ``name`` for account
    events."""

    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]


def _event(webhook_id: str, body: object) -> WebhookEvent:
    if not isinstance(body, dict):
        raise WebhookVerificationError("invalid_payload", "the body is not a JSON object")
    kind, timestamp, data = body.get("type"), body.get("timestamp"), body.get("data")
    if not isinstance(kind, str) or not isinstance(timestamp, str) or not isinstance(data, dict):
        raise WebhookVerificationError("invalid_payload", "the body is not a Stepgate event")
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError as error:
        raise WebhookVerificationError(
            "invalid_payload", "the timestamp is not RFC 3339"
        ) from error
    return WebhookEvent(id=webhook_id, type=kind, timestamp=when, data=data)


def _check_secret(secret: str) -> None:
    # standardwebhooks would also take a bare or unpadded secret; Stepgate's all read
    # whsec_<padded base64>, so anything else is a pasting mistake worth naming.
    key = secret.removeprefix(SECRET_PREFIX)
    try:
        valid = secret.startswith(SECRET_PREFIX) and bool(base64.b64decode(key, validate=True))
    except binascii.Error:
        valid = False
    if not valid:
        raise ValueError("the webhook secret is not whsec_<base64>")


def verify(payload: bytes | str, headers: Mapping[str, str], secret: str) -> WebhookEvent:
    """The event a delivery carries, once its signature and timestamp are checked.

    ``headers`` may be any mapping of the request's headers (names in any case). Raises
    :class:`WebhookVerificationError`; a ``secret`` that is not ``whsec_<base64>`` is a
    ``ValueError`` (a mistake in the app's configuration, not in the delivery).
    """
    _check_secret(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [name for name in _REQUIRED_HEADERS if not lowered.get(name)]
    if missing:
        raise WebhookVerificationError("bad_headers", f"no {', '.join(missing)} header")
    try:
        sent_at = float(lowered["webhook-timestamp"])
    except ValueError as error:
        raise WebhookVerificationError(
            "bad_headers", "webhook-timestamp is not unix seconds"
        ) from error
    if abs(time.time() - sent_at) > TIMESTAMP_TOLERANCE:
        raise WebhookVerificationError(
            "stale_timestamp", "the delivery was signed more than five minutes from now"
        )
    try:
        body = standardwebhooks.Webhook(secret).verify(payload, lowered)
    except standardwebhooks.WebhookVerificationError as error:
        raise WebhookVerificationError("invalid_signature", str(error)) from error
    except ValueError as error:  # signed, but not JSON
        raise WebhookVerificationError("invalid_payload", "the body is not JSON") from error
    return _event(lowered["webhook-id"], body)
