"""What the API answers, as frozen dataclasses. Times are timezone-aware UTC datetimes (the API
sends unix seconds)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Account", "AccountError", "Credentials", "SignInLink"]


class OutOfShape(ValueError):
    """An answer that is not what the API documents (the client turns it into
    ``StepgateError("unexpected_response")``)."""


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise OutOfShape(f"{what} is not a JSON object")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise OutOfShape(f"{key!r} is not a string")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    # bool is an int in Python; JSON true is not an id.
    if not isinstance(value, int) or isinstance(value, bool):
        raise OutOfShape(f"{key!r} is not an integer")
    return value


def _time(obj: Mapping[str, Any], key: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise OutOfShape(f"{key!r} is not unix seconds")
    return datetime.fromtimestamp(value, tz=UTC)


@dataclass(frozen=True, slots=True)
class AccountError:
    """Why the last check or renewal of an account could not reach its provider."""

    code: str
    message: str

    @classmethod
    def from_json(cls, value: object) -> AccountError:
        obj = _object(value, "last_error")
        return cls(code=_str(obj, "code"), message=_str(obj, "message"))


@dataclass(frozen=True, slots=True)
class Account:
    """A connected account as a key sees it: who it is and its health, no secrets.

    ``status`` is ``"active"``, ``"needs_sign_in"`` (credentials cannot be read until the owner
    signs in to it again on Stepgate) or ``"degraded"`` (the provider could not be asked at the
    last check).
    """

    id: int
    provider: str
    name: str
    status: str
    last_renewed_at: datetime | None
    next_renewal_at: datetime | None
    last_error: AccountError | None

    @classmethod
    def from_json(cls, value: object) -> Account:
        obj = _object(value, "account")
        last_error = obj.get("last_error")
        return cls(
            id=_int(obj, "id"),
            provider=_str(obj, "provider"),
            name=_str(obj, "name"),
            status=_str(obj, "status"),
            last_renewed_at=_time(obj, "last_renewed_at"),
            next_renewal_at=_time(obj, "next_renewal_at"),
            last_error=None if last_error is None else AccountError.from_json(last_error),
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """An account's fresh credentials. ``credentials`` depends on the provider (FlameConnect:
    ``access_token``; Lynk & Co: ``access_token`` and ``ccc_token`` with their expiries; Librus:
    the Synergia cookies; Xiaomi: ``serviceToken``, ``userId``, ``ssecurity``)."""

    account_id: int
    provider: str
    name: str
    # Left out of repr: a logged or printed object must not leak tokens.
    credentials: dict[str, Any] = field(repr=False)
    expires_at: datetime | None
    renewed_at: datetime | None

    @classmethod
    def from_json(cls, value: object) -> Credentials:
        obj = _object(value, "credentials answer")
        return cls(
            account_id=_int(obj, "account_id"),
            provider=_str(obj, "provider"),
            name=_str(obj, "name"),
            credentials=dict(_object(obj.get("credentials"), "credentials")),
            expires_at=_time(obj, "expires_at"),
            renewed_at=_time(obj, "renewed_at"),
        )


@dataclass(frozen=True, slots=True)
class SignInLink:
    """A link the account's owner opens to sign in to the account again, until ``expires_at``."""

    # Left out of repr: whoever holds the link may sign the account in.
    url: str = field(repr=False)
    expires_at: datetime

    @classmethod
    def from_json(cls, value: object) -> SignInLink:
        obj = _object(value, "sign-in link")
        expires_at = _time(obj, "expires_at")
        if expires_at is None:
            raise OutOfShape("'expires_at' is missing")
        return cls(url=_str(obj, "url"), expires_at=expires_at)
