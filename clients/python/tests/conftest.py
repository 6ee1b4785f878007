"""Each client test runs twice: on :class:`stepgate.Client` and on :class:`stepgate.AsyncClient`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes import BASE_URL, Api, Handler

MakeApi = Callable[..., Api]


@pytest.fixture(params=["sync", "async"])
def make_api(request: pytest.FixtureRequest) -> MakeApi:
    """``make_api(handler, base_url=…, **client_options)``: an :class:`Api` of this run's kind."""

    def make(handler: Handler, base_url: str = BASE_URL, **options: Any) -> Api:
        return Api(kind=request.param, handler=handler, options=options, base_url=base_url)

    return make
