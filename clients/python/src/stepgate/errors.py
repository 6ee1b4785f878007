"""Stepgate's refusals as exceptions: one class per thing an app handles differently, each
carrying the API's stable snake_case ``code``, its ``message`` for people, and the HTTP status.

The API answers every error on ``/api/v1`` as ``{"code": "…", "message": "…"}``; codes this
module does not know become a plain :class:`StepgateError`, so a new code on the server never
breaks an app that catches ``StepgateError``.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = [
    "AccountNotInScope",
    "InvalidApiKey",
    "NeedsSignIn",
    "NotFound",
    "ProviderUnavailable",
    "ProxyNotAllowed",
    "RateLimited",
    "SignInLinksOff",
    "StepgateError",
    "StepgateUnreachable",
]

# A Retry-After the server left out or wrote in a way we cannot read: wait a little, not never.
DEFAULT_RETRY_AFTER = 1.0


class StepgateError(Exception):
    """A request Stepgate refused (or could not answer).

    ``status`` is the HTTP status of Stepgate's answer; ``None`` when no answer came
    (:class:`StepgateUnreachable`).
    """

    def __init__(self, code: str, message: str, status: int | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r})"


class InvalidApiKey(StepgateError):
    """401 ``invalid_api_key`` (missing, wrong or revoked key) or ``api_key_expired``."""


class AccountNotInScope(StepgateError):
    """403 ``account_not_in_scope``: the key was not given this account."""


class NotFound(StepgateError):
    """404 ``not_found``: no such account or route."""


class ProxyNotAllowed(StepgateError):
    """403 ``proxy_not_allowed``: an origin or path the account's provider does not declare."""


class SignInLinksOff(StepgateError):
    """403 ``sign_in_links_off``: the account's owner has not let apps get sign-in links."""


class NeedsSignIn(StepgateError):
    """409 ``needs_sign_in``: the provider refused the account; its owner must sign in again.

    ``sign_in_link`` is a link the owner can open to do that, present only when they let apps
    have such links.
    """

    def __init__(
        self, code: str, message: str, status: int | None, sign_in_link: str | None = None
    ) -> None:
        super().__init__(code, message, status)
        self.sign_in_link = sign_in_link


class RateLimited(StepgateError):
    """429 ``rate_limited``: too many requests with this key; ``retry_after`` is in seconds."""

    def __init__(self, code: str, message: str, status: int | None, retry_after: float) -> None:
        super().__init__(code, message, status)
        self.retry_after = retry_after


class ProviderUnavailable(StepgateError):
    """503 ``cannot_connect``, ``timeout`` or ``service_unavailable``: the provider could not be
    reached now; try later."""


class StepgateUnreachable(StepgateError):
    """No answer from Stepgate itself (refused connection, timeout); the httpx error is the
    ``__cause__``."""


_BY_CODE: dict[str, type[StepgateError]] = {
    "invalid_api_key": InvalidApiKey,
    "api_key_expired": InvalidApiKey,
    "account_not_in_scope": AccountNotInScope,
    "not_found": NotFound,
    "proxy_not_allowed": ProxyNotAllowed,
    "sign_in_links_off": SignInLinksOff,
    "needs_sign_in": NeedsSignIn,
    "rate_limited": RateLimited,
    "cannot_connect": ProviderUnavailable,
    "timeout": ProviderUnavailable,
    "service_unavailable": ProviderUnavailable,
}


def _json_object(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response, body: Mapping[str, Any]) -> float:
    """Seconds to wait: the ``Retry-After`` header (seconds or an HTTP date), else the body's
    ``retry_after``, else :data:`DEFAULT_RETRY_AFTER`."""
    header = response.headers.get("retry-after", "").strip()
    if header:
        try:
            return max(float(header), 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            pass
        else:
            return max(when.timestamp() - time.time(), 0.0)
    in_body = body.get("retry_after")
    if isinstance(in_body, int | float) and not isinstance(in_body, bool):
        return max(float(in_body), 0.0)
    return DEFAULT_RETRY_AFTER


def error_from_response(response: httpx.Response, code: str | None = None) -> StepgateError:
    """The exception for an error answer. ``code`` overrides the body's (the proxy's
    ``Stepgate-Error`` header names it even when the body is not JSON)."""
    body = _json_object(response)
    body_code = body.get("code")
    code = code or (body_code if isinstance(body_code, str) and body_code else None)
    message = body.get("message")
    if not isinstance(message, str) or not message:
        message = f"Stepgate answered HTTP {response.status_code}."
    if code is None:
        # Not an API answer at all: a reverse proxy's error page, or the wrong base URL.
        return StepgateError("unexpected_response", message, response.status_code)
    cls = _BY_CODE.get(code, StepgateError)
    if cls is RateLimited:
        return RateLimited(code, message, response.status_code, _retry_after(response, body))
    if cls is NeedsSignIn:
        link = body.get("sign_in_link")
        return NeedsSignIn(
            code, message, response.status_code, link if isinstance(link, str) else None
        )
    return cls(code, message, response.status_code)
