"""Client lifecycle against the emulator on 127.0.0.1: a limiter given to several clients, what
close() ends at once, one event loop per client, and region/base_url at construction."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import attrs
import pytest
from _helpers import arrived, make_client

from tim_async import TimClient, TimClosedError, TimConfigError, TimError, TimEventLoopError
from tim_async.limiter import LimiterClosedError, SlidingWindowLimiter
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault

GET_ATTR = "group_open_attr_http_svc/get_group_attr"


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None) as srv:
        yield srv


async def turns(n: int = 5) -> None:
    """Let the loop run ``n`` iterations (no wall clock)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_closing_one_client_leaves_a_shared_limiter_working_for_the_other(
    server: FakeTimServer,
) -> None:
    # Two admin identities of one app share one budget: closing one client fails its own
    # queued calls at once and leaves the limiter, and the other client's queued calls, alone.
    gid = server.create_group()
    limiter = SlidingWindowLimiter(rate=4, period=0.5)
    first = make_client(server, limiter=limiter)
    second = make_client(server, limiter=limiter)
    try:
        for _ in range(4):  # the window is full for the next half second
            await second.group_attr.get_group_attr(gid)
        mine = [asyncio.create_task(first.group_attr.get_group_attr(gid)) for _ in range(3)]
        theirs = [asyncio.create_task(second.group_attr.get_group_attr(gid)) for _ in range(6)]
        await turns()
        # Every call waits for a slot: none has ended, none was admitted by the window.
        assert not any(t.done() for t in mine + theirs)
        assert limiter.window(GET_ATTR).in_flight == 0
        await first.close()
        await turns()
        assert all(t.done() for t in mine)  # at once, not when a slot frees
        assert [type(t.exception()) for t in mine] == [TimClosedError] * 3
        results = await asyncio.gather(*theirs, return_exceptions=True)
        assert results == [{}] * 6
        assert await second.group_attr.get_group_attr(gid) == {}
    finally:
        await first.close()
        await second.close()
    assert len(server.requests_for(GET_ATTR)) == 4 + 6 + 1
    await limiter.aclose()  # closed by whoever made it


async def test_a_limiter_the_client_made_is_closed_with_it(server: FakeTimServer) -> None:
    tim = make_client(server, rate_limit=1)
    gid = server.create_group()
    await tim.group_attr.get_group_attr(gid)
    waiter = asyncio.create_task(tim.group_attr.get_group_attr(gid))
    await turns()
    # The limiter the client made has no public handle: read it to see that it was closed,
    # not only that close() woke the waiter.
    limiter = tim._session._limiter
    await tim.close()
    with pytest.raises(TimClosedError):
        await waiter
    with pytest.raises(LimiterClosedError):
        async with limiter.acquire(GET_ATTR):
            pass


@attrs.frozen
class LongBackoff(RetryPolicy):
    """Every backoff lasts 30 s."""

    def backoff(self, retries_done: int, rng: random.Random | None = None) -> float:
        return 30.0


async def test_close_ends_a_backoff_sleep_at_once(server: FakeTimServer) -> None:
    gid = server.create_group()
    server.faults.script(GET_ATTR, [Fault.code(10002)])
    tim = make_client(server, retry=LongBackoff(), timeout=120.0)
    try:
        call = asyncio.create_task(tim.group_attr.get_group_attr(gid))
        await arrived(server, GET_ATTR)
        await turns()
        assert not call.done()  # sleeping 30 s before its retry
    finally:
        await tim.close()
    await turns()
    assert call.done()
    assert isinstance(call.exception(), TimClosedError)
    assert len(server.requests_for(GET_ATTR)) == 1
    assert tim.stats.failures == 1


async def test_a_call_in_flight_at_close_does_not_sleep_before_failing(
    server: FakeTimServer,
) -> None:
    # The request in flight fails as the client's own aiohttp session closes; the call must
    # not then sleep its 30 s backoff before noticing the client is closed.
    gid = server.create_group()
    server.faults.script(GET_ATTR, [Fault.slow(20.0)])
    tim = make_client(server, retry=LongBackoff(), timeout=120.0)
    try:
        call = asyncio.create_task(tim.group_attr.get_group_attr(gid))
        await arrived(server, GET_ATTR)
    finally:
        await tim.close()
    done, _ = await asyncio.wait([call], timeout=10.0)  # generous: the backoff is 30 s
    assert done
    assert isinstance(call.exception(), TimClosedError)


async def test_a_cancellation_during_the_backoff_is_still_a_cancellation(
    server: FakeTimServer,
) -> None:
    gid = server.create_group()
    server.faults.script(GET_ATTR, [Fault.code(10002)])
    async with make_client(server, retry=LongBackoff(), timeout=120.0) as tim:
        call = asyncio.create_task(tim.group_attr.get_group_attr(gid))
        await arrived(server, GET_ATTR)
        await turns()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_a_cancellation_and_a_close_together_stay_a_cancellation(
    server: FakeTimServer,
) -> None:
    # close() undoes only its own cancellation: the caller's, made in the same moment, wins.
    gid = server.create_group()
    server.faults.script(GET_ATTR, [Fault.code(10002)])
    tim = make_client(server, retry=LongBackoff(), timeout=120.0)
    try:
        call = asyncio.create_task(tim.group_attr.get_group_attr(gid))
        await arrived(server, GET_ATTR)
        await turns()
        assert not call.done()  # sleeping 30 s before its retry
        call.cancel()
    finally:
        await tim.close()
    with pytest.raises(asyncio.CancelledError):
        await call


def test_one_client_in_two_event_loops_is_a_tim_error() -> None:
    tim = TimClient(
        1400000000, secret_key=TEST_SECRET_KEY, base_url="http://127.0.0.1:9", max_retries=0
    )

    async def use() -> None:
        with pytest.raises(TimError):  # nothing listens on port 9
            await tim.call("a/b", {})

    asyncio.run(use())

    async def use_again() -> None:
        try:
            with pytest.raises(TimEventLoopError, match="one client per event loop") as info:
                await tim.call("a/b", {})
            assert isinstance(info.value, RuntimeError)
            assert "create it inside the loop" in str(info.value)
        finally:
            await tim.close()

    asyncio.run(use_again())


def test_region_and_base_url_together_are_refused() -> None:
    with pytest.raises(TimConfigError, match="region or base_url, not both"):
        TimClient(
            1400000000,
            secret_key=TEST_SECRET_KEY,
            region="singapore",
            base_url="http://127.0.0.1:8080",
        )
    # Either alone is fine; no region means China.
    assert TimClient(1400000000, secret_key=TEST_SECRET_KEY).base_url == (
        "https://console.tim.qq.com"
    )
    alone = TimClient(1400000000, secret_key=TEST_SECRET_KEY, base_url="http://127.0.0.1:8080")
    assert alone.base_url == "http://127.0.0.1:8080"
