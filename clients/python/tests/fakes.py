"""Fakes for the unit tests: a client of either kind over an ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

import stepgate

BASE_URL = "http://stepgate.test"
API_KEY = "sgk_0123456789abcdef_" + "ab" * 32

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Api:
    """One kind of client over a mock transport. ``call`` runs one method on a fresh client
    and returns what it returned; ``requests`` and ``slept`` say what it sent and how long it
    waited between tries."""

    kind: str
    handler: Handler
    options: dict[str, Any]
    base_url: str = BASE_URL
    requests: list[httpx.Request] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        transport = httpx.MockTransport(self._answer)
        if self.kind == "sync":
            with stepgate.Client(
                self.base_url, API_KEY, transport=transport, sleep=self.slept.append, **self.options
            ) as client:
                return getattr(client, method)(*args, **kwargs)

        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        async def run() -> Any:
            async with stepgate.AsyncClient(
                self.base_url, API_KEY, transport=transport, sleep=sleep, **self.options
            ) as client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(run())


def error(status: int, code: str, **extra: Any) -> httpx.Response:
    """An error answer as Stepgate's API writes it."""
    return httpx.Response(status, json={"code": code, "message": f"Sentence for {code}.", **extra})
