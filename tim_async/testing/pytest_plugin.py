"""pytest plugin (entry point ``tim_async``): fixtures that run the tim_async emulator.

``tim_server``: a started :class:`~tim_async.testing.FakeTimServer` on 127.0.0.1 with SDKAppID
1400000000, a fixed test secret key and the admin ``administrator`` (``server.sdkappid``,
``server.secret_key``, ``server.admin``). Options for one test go in a marker::

    @pytest.mark.tim_server(rate_limit=5, page_size=7)
    async def test_something(tim_server): ...

Needs pytest-asyncio; without it the fixture fails with a message saying so. This module imports
nothing heavy at load time, so it never breaks a pytest run that does not use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from tim_async.testing import FakeTimServer

__all__ = ["pytest_configure", "tim_server"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tim_server(**options): keyword arguments for the tim_server fixture's FakeTimServer",
    )


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # Closest marker last, so it wins over module- or class-level markers.
    for marker in reversed(list(request.node.iter_markers("tim_server"))):
        options.update(marker.kwargs)
    return options


def _make_tim_server() -> Any:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - exercised only without pytest-asyncio

        @pytest.fixture(name="tim_server")
        def _missing() -> NoReturn:
            pytest.fail(
                "the tim_server fixture needs pytest-asyncio: pip install pytest-asyncio",
                pytrace=False,
            )

        return _missing

    @pytest_asyncio.fixture(name="tim_server")
    async def _tim_server(request: pytest.FixtureRequest) -> AsyncIterator[FakeTimServer]:
        from tim_async.testing import FakeTimServer

        async with FakeTimServer(**_options(request)) as server:
            yield server

    return _tim_server


tim_server = _make_tim_server()
