"""The two clients of Stepgate's app API: :class:`Client` (blocking) and :class:`AsyncClient`
(asyncio), with the same methods, answers and exceptions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from stepgate import _core
from stepgate._core import Headers, QueryParams
from stepgate.models import Account, Credentials, SignInLink

__all__ = ["AsyncClient", "Client"]


class Client:
    """A blocking client for one Stepgate and one API key.

    ``max_rate_limit_retries``: how many times a ``rate_limited`` answer is waited out (its
    ``Retry-After``, at most a minute) and the request sent again before
    :class:`~stepgate.errors.RateLimited` is raised. ``transport`` replaces httpx's (tests pass
    an ``httpx.MockTransport``); ``sleep`` replaces :func:`time.sleep` for those waits.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT,
        max_rate_limit_retries: int = 0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        options = _core.client_options(base_url, api_key, timeout, max_rate_limit_retries)
        self._http = httpx.Client(transport=transport, **options)
        self._max_retries = max_rate_limit_retries
        self._sleep = sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: httpx.Request, *, proxied: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.send(request)
            except httpx.TransportError as error:
                raise _core.unreachable(error) from error
            refusal = _core.refusal(response, proxied=proxied)
            if refusal is None:
                return response
            delay = _core.retry_delay(refusal, attempt, self._max_retries)
            if delay is None:
                raise refusal
            self._sleep(delay)
            attempt += 1

    def accounts(self) -> list[Account]:
        """The connected accounts this key may read, with their health."""
        response = self._send(self._http.build_request("GET", "/api/v1/accounts"))
        return _core.parse(response, _core.read_account_list)

    def account(self, account_id: int) -> Account:
        """One account's health (no credentials)."""
        response = self._send(self._http.build_request("GET", _core.account_path(account_id)))
        return _core.parse(response, _core.read_account)

    def credentials(self, account_id: int) -> Credentials:
        """The account's fresh credentials (Stepgate renews them first when about to expire)."""
        path = _core.account_path(account_id, "credentials")
        response = self._send(self._http.build_request("GET", path))
        return _core.parse(response, _core.read_credentials)

    def proxy(
        self,
        account_id: int,
        method: str,
        path: str,
        *,
        origin: str | None = None,
        params: QueryParams = None,
        headers: Headers = None,
        content: bytes | str | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """Sends a request to the account's provider with the account's credentials put in.

        ``path`` is the provider API's path (a leading ``/`` or not); ``origin`` picks one of
        the provider's API origins (default: its main one). The upstream's answer is returned
        as it is, errors included; only Stepgate's own refusals (answers marked
        ``Stepgate-Error``) are raised.
        """
        request = _core.proxy_request(
            self._http,
            account_id,
            method,
            path,
            origin=origin,
            params=params,
            headers=headers,
            content=content,
            data=data,
            json=json,
        )
        return self._send(request, proxied=True)

    def sign_in_link(self, account_id: int) -> SignInLink:
        """A link the account's owner can open to sign in to it again (refused with
        :class:`~stepgate.errors.SignInLinksOff` unless the owner allowed apps to get one)."""
        path = _core.account_path(account_id, "sign-in-link")
        response = self._send(self._http.build_request("POST", path))
        return _core.parse(response, _core.read_sign_in_link)


class AsyncClient:
    """The asyncio twin of :class:`Client`; ``sleep`` replaces :func:`asyncio.sleep`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT,
        max_rate_limit_retries: int = 0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        options = _core.client_options(base_url, api_key, timeout, max_rate_limit_retries)
        self._http = httpx.AsyncClient(transport=transport, **options)
        self._max_retries = max_rate_limit_retries
        self._sleep = sleep

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: httpx.Request, *, proxied: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as error:
                raise _core.unreachable(error) from error
            refusal = _core.refusal(response, proxied=proxied)
            if refusal is None:
                return response
            delay = _core.retry_delay(refusal, attempt, self._max_retries)
            if delay is None:
                raise refusal
            await self._sleep(delay)
            attempt += 1

    async def accounts(self) -> list[Account]:
        """The connected accounts this key may read, with their health."""
        response = await self._send(self._http.build_request("GET", "/api/v1/accounts"))
        return _core.parse(response, _core.read_account_list)

    async def account(self, account_id: int) -> Account:
        """One account's health (no credentials)."""
        path = _core.account_path(account_id)
        response = await self._send(self._http.build_request("GET", path))
        return _core.parse(response, _core.read_account)

    async def credentials(self, account_id: int) -> Credentials:
        """The account's fresh credentials (Stepgate renews them first when about to expire)."""
        path = _core.account_path(account_id, "credentials")
        response = await self._send(self._http.build_request("GET", path))
        return _core.parse(response, _core.read_credentials)

    async def proxy(
        self,
        account_id: int,
        method: str,
        path: str,
        *,
        origin: str | None = None,
        params: QueryParams = None,
        headers: Headers = None,
        content: bytes | str | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """As :meth:`Client.proxy`: the upstream's answer as it is, Stepgate's refusals raised."""
        request = _core.proxy_request(
            self._http,
            account_id,
            method,
            path,
            origin=origin,
            params=params,
            headers=headers,
            content=content,
            data=data,
            json=json,
        )
        return await self._send(request, proxied=True)

    async def sign_in_link(self, account_id: int) -> SignInLink:
        """As :meth:`Client.sign_in_link`."""
        path = _core.account_path(account_id, "sign-in-link")
        response = await self._send(self._http.build_request("POST", path))
        return _core.parse(response, _core.read_sign_in_link)
