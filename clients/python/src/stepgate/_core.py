"""What the sync and async clients share: building requests, and reading answers into models
or exceptions. Neither client sends anything here; they only differ in how they wait."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from stepgate._version import __version__
from stepgate.errors import RateLimited, StepgateError, StepgateUnreachable, error_from_response
from stepgate.models import Account, Credentials, OutOfShape, SignInLink

DEFAULT_TIMEOUT = 30.0
# Longest sleep a retry takes, whatever Retry-After says: an app that asked for retries wants
# an answer within a minute, not a long hang behind a misconfigured server.
MAX_RETRY_SLEEP = 60.0
# The proxy's own refusals carry this header; any answer without it is the upstream's.
ERROR_HEADER = "Stepgate-Error"
# Which of the provider's API origins a proxied request goes to (default: the provider's own).
ORIGIN_HEADER = "Stepgate-Origin"

# httpx's own aliases for these are private; these are the shapes the client accepts.
QueryParams = httpx.QueryParams | Mapping[str, Any] | list[tuple[str, Any]] | None
Headers = Mapping[str, str] | None

T = TypeVar("T")


def client_options(
    base_url: str, api_key: str, timeout: float | httpx.Timeout, max_rate_limit_retries: int
) -> dict[str, Any]:
    """The httpx client settings both clients use."""
    if max_rate_limit_retries < 0:
        raise ValueError("max_rate_limit_retries must be 0 or more")
    if not api_key:
        raise ValueError("api_key is empty")
    return {
        "base_url": base_url,
        "timeout": timeout,
        "headers": {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"stepgate-python/{__version__}",
        },
        # Stepgate answers the API itself; a redirect would be a misconfigured base URL.
        "follow_redirects": False,
    }


def account_path(account_id: int, *rest: str) -> str:
    parts = ["/api/v1/accounts", quote(str(account_id), safe=""), *rest]
    return "/".join(parts)


def proxy_request(
    http: httpx.Client | httpx.AsyncClient,
    account_id: int,
    method: str,
    path: str,
    *,
    origin: str | None,
    params: QueryParams,
    headers: Headers,
    content: bytes | str | None,
    data: Mapping[str, Any] | None,
    json: Any,
) -> httpx.Request:
    """``{METHOD} /api/v1/accounts/{id}/proxy/{path}``, the query passed through."""
    path, _, query = path.lstrip("/").partition("?")
    merged = httpx.QueryParams(query)
    if params is not None:
        merged = merged.merge(params)
    request_headers = dict(headers or {})
    if any(name.lower() == "authorization" for name in request_headers):
        # It would replace the API key; the proxy puts the account's own credentials in.
        raise ValueError("the proxy adds the account's credentials; do not pass Authorization")
    if origin is not None:
        request_headers[ORIGIN_HEADER] = origin
    return http.build_request(
        method.upper(),
        account_path(account_id, "proxy", path),
        params=merged,
        headers=request_headers,
        content=content,
        data=data,
        json=json,
    )


def unreachable(error: httpx.TransportError) -> StepgateUnreachable:
    return StepgateUnreachable(
        "stepgate_unreachable", f"No answer from Stepgate: {type(error).__name__}.", None
    )


def refusal(response: httpx.Response, *, proxied: bool) -> StepgateError | None:
    """The exception an answer stands for, or ``None`` when it is to be returned. On the proxy
    route only answers marked ``Stepgate-Error`` are Stepgate's: an upstream 404 or 500 is the
    app's to read."""
    if proxied:
        code = response.headers.get(ERROR_HEADER)
        return error_from_response(response, code.strip()) if code else None
    if response.is_success:
        return None
    return error_from_response(response)


def retry_delay(error: StepgateError, attempt: int, max_retries: int) -> float | None:
    """Seconds to sleep before trying again, or ``None`` to raise ``error`` now."""
    if not isinstance(error, RateLimited) or attempt >= max_retries:
        return None
    return min(error.retry_after, MAX_RETRY_SLEEP)


def parse(response: httpx.Response, read: Callable[[object], T]) -> T:
    """A successful answer's body read by ``read`` (a model's ``from_json``)."""
    try:
        return read(response.json())
    except (ValueError, UnicodeDecodeError) as error:  # JSON errors and OutOfShape
        raise StepgateError(
            "unexpected_response",
            f"Stepgate's answer is not what the API documents ({error}).",
            response.status_code,
        ) from error


def read_account_list(value: object) -> list[Account]:
    if not isinstance(value, Mapping) or not isinstance(value.get("accounts"), list):
        raise OutOfShape("'accounts' is not a list")
    return [Account.from_json(item) for item in value["accounts"]]


read_account = Account.from_json
read_credentials = Credentials.from_json
read_sign_in_link = SignInLink.from_json
