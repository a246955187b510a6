"""Cancellation of pulls, against the emulator on 127.0.0.1.

Cancelling a pull at any point (waiting on a slow answer, queued in the rate limiter between two
pages, under ``asyncio.timeout``) leaves no connection in use, no orphan connection on the server,
no limiter capacity taken, and a client that keeps working.

Each client is built with its own aiohttp session and limiter (the public ``session=`` and
``limiter=`` arguments), so the checks read them without reaching into the client; the server
side is ``server.open_connections`` and the limiter's queue ``limiter.waiting(command)``. One
private read remains, for want of a public count: aiohttp's connector (connections in use and
idle in the pool).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from tim_async import errors
from tim_async.client import TimClient
from tim_async.limiter import LimiterClosedError, SlidingWindowLimiter
from tim_async.models import ExtensionList
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault

PULL = "openim_msg_ext_http_svc/group_get_key_values"


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None, seed=2) as srv:
        yield srv


class Client(TimClient):
    """A TimClient on an aiohttp session and a limiter the test holds; closing it closes both."""

    def __init__(self, server: FakeTimServer, rate_limit: int, timeout: float) -> None:
        self.http = aiohttp.ClientSession()
        self.limiter = SlidingWindowLimiter(rate_limit)
        super().__init__(
            server.sdkappid,
            server.admin,
            secret_key=TEST_SECRET_KEY,
            base_url=server.base_url,
            limiter=self.limiter,
            timeout=timeout,
            retry=RetryPolicy(max_retries=3, backoff_base=0.01),
            session=self.http,
        )

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.http.close()


def make_client(server: FakeTimServer, rate_limit: int = 200, timeout: float = 10.0) -> Client:
    return Client(server, rate_limit, timeout)


def message(server: FakeTimServer, pairs: int) -> tuple[str, int]:
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.put_group_extensions(gid, seq, {f"k{i}": f"v{i}" for i in range(pairs)})
    return gid, seq


def connections(tim: Client, server: FakeTimServer) -> tuple[int, int, int]:
    """(client connections in use, client connections idle in the pool, server transports
    still open)."""
    connector = tim.http.connector
    assert connector is not None
    # aiohttp has no public count of connections in use or idle.
    in_use = len(connector._acquired)
    idle = sum(len(c) for c in connector._conns.values())
    return in_use, idle, server.open_connections


async def assert_clean(tim: Client, server: FakeTimServer) -> None:
    """Nothing in use and no orphan connection (waits for the closes to travel), no limiter
    capacity held, nobody queued in the limiter."""
    for _ in range(100):
        in_use, idle, server_open = connections(tim, server)
        if in_use == 0 and server_open == idle:
            break
        await asyncio.sleep(0.01)
    assert (in_use, server_open) == (0, idle)
    assert tim.limiter.window(PULL).in_flight == 0
    assert not queued(tim.limiter)


def queued(limiter: SlidingWindowLimiter) -> int:
    """Calls waiting for a slot of PULL."""
    waiting = getattr(limiter, "waiting", None)  # the public count, once the limiter has it
    if waiting is not None:
        return int(waiting(PULL))
    return len(limiter._for(PULL)._waiters)  # until then: the queue itself


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (polling) until ``condition()`` holds; fail after ``within`` seconds."""
    for _ in range(int(within / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def wait_for_requests(server: FakeTimServer, count: int) -> None:
    await until(lambda: len(server.requests_for(PULL)) >= count)


async def assert_usable(tim: Client, server: FakeTimServer, gid: str, seq: int) -> None:
    server.faults.clear()
    got = await tim.msg_ext.group_get_key_values(gid, seq)
    assert {i.key: (i.value, i.seq) for i in got} == server.group_extensions(gid, seq)
    await assert_clean(tim, server)


async def test_cancel_while_waiting_on_a_slow_answer(server: FakeTimServer) -> None:
    gid, seq = message(server, 300)
    server.faults.script(PULL, [Fault.slow(30.0)])
    async with make_client(server) as tim:
        task = asyncio.create_task(tim.msg_ext.group_get_key_values(gid, seq))
        await wait_for_requests(server, 1)
        assert connections(tim, server)[0] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_clean(tim, server)
        assert tim.stats.failures == 1
        await assert_usable(tim, server, gid, seq)


async def test_cancel_on_the_second_page_slow_answer(server: FakeTimServer) -> None:
    gid, seq = message(server, 300)
    server.faults.script(PULL, [None, Fault.slow(30.0)])
    async with make_client(server) as tim:
        task = asyncio.create_task(tim.msg_ext.group_get_key_values(gid, seq))
        await wait_for_requests(server, 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_clean(tim, server)
        await assert_usable(tim, server, gid, seq)


async def test_cancel_while_queued_in_the_limiter_between_pages(server: FakeTimServer) -> None:
    """At 1 call/s the second page waits in the limiter: cancelling there takes no capacity and
    leaves no waiter behind."""
    gid, seq = message(server, 300)
    async with make_client(server, rate_limit=1) as tim:
        task = asyncio.create_task(tim.msg_ext.group_get_key_values(gid, seq))
        await until(lambda: queued(tim.limiter) == 1)
        assert len(server.requests_for(PULL)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_clean(tim, server)
        assert len(server.requests_for(PULL)) == 1  # the second page was never sent
        await assert_usable(tim, server, gid, seq)


async def test_breaking_out_between_pages_holds_nothing(server: FakeTimServer) -> None:
    gid, seq = message(server, 300)
    async with make_client(server) as tim:
        pages = tim.msg_ext.iter_group_key_values(gid, seq)
        async for page in pages:
            assert not page.complete
            await assert_clean(tim, server)  # between pages: nothing held
            break
        await pages.aclose()  # type: ignore[attr-defined]
        await assert_clean(tim, server)
        assert len(server.requests_for(PULL)) == 1
        await assert_usable(tim, server, gid, seq)


async def test_asyncio_timeout_around_a_multi_page_pull(server: FakeTimServer) -> None:
    server.page_size = 50
    gid, seq = message(server, 300)
    # The first two pages at once, the third hangs: the caller's timeout ends the walk in the
    # middle, whatever the machine's speed (1 s is ample for two local pages).
    server.faults.script(PULL, [None, None, Fault.slow(30.0)])
    async with make_client(server) as tim:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await tim.msg_ext.group_get_key_values(gid, seq)
        assert len(server.requests_for(PULL)) == 3  # stopped mid-walk
        await assert_clean(tim, server)
        await assert_usable(tim, server, gid, seq)


async def test_many_pulls_cancelled_at_random_points(server: FakeTimServer) -> None:
    """100 concurrent pulls, random slow answers, each cancelled at a random moment (some
    finish first): afterwards nothing is held and the client still pulls exactly."""
    server.page_size = 40
    gid = server.create_group()
    rng = random.Random(12)
    seqs = []
    for _ in range(100):
        seq = server.send_group_msg(gid)
        server.put_group_extensions(gid, seq, {f"k{i}": "v" for i in range(rng.randint(1, 200))})
        seqs.append(seq)
    server.faults.random({Fault.slow(0.3): 0.3, Fault.DROP_BEFORE_APPLY: 0.05}, seed=1)
    async with make_client(server, rate_limit=150) as tim:
        tasks = [asyncio.create_task(tim.msg_ext.group_get_key_values(gid, s)) for s in seqs]
        for task in rng.sample(tasks, len(tasks)):
            await asyncio.sleep(rng.uniform(0, 0.01))
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert cancelled > 50
        for seq, result in zip(seqs, results, strict=True):
            if isinstance(result, ExtensionList):  # finished before its cancel: exact
                assert {i.key: (i.value, i.seq) for i in result} == server.group_extensions(
                    gid, seq
                )
            else:
                assert isinstance(result, asyncio.CancelledError | errors.TimError), result
        await assert_clean(tim, server)
        for seq in seqs[:10]:
            await assert_usable(tim, server, gid, seq)


# --------------------------------------------------------------------------- closing


async def test_closing_the_client_fails_pending_calls_at_once(server: FakeTimServer) -> None:
    """Closing the client while calls are in flight (a slow answer) or queued in the limiter:
    each call fails at once with TimClosedError (a TimError, also a RuntimeError), not with
    aiohttp's bare RuntimeError('Session is closed') nor by waiting for its timeout; an
    increment in flight is an unknown outcome."""
    gid, seq = message(server, 10)
    server.set_group_counters(gid, {"n": 0})
    server.faults.script(PULL, [Fault.slow(30.0)])
    server.faults.script("group_open_http_svc/update_group_counter", [Fault.slow(30.0)])
    # ``async with`` although the test closes the client itself: a failure before that point
    # must not leave a session open for the next test.
    async with make_client(server, rate_limit=1, timeout=20.0) as tim:
        pulls = [asyncio.create_task(tim.msg_ext.group_get_key_values(gid, seq)) for _ in range(3)]
        increment = asyncio.create_task(
            tim.group_counter.update_group_counter(gid, {"n": 1}, mode="Increase")
        )
        await wait_for_requests(server, 1)
        await until(lambda: len(server.requests) == 2)
        assert queued(tim.limiter) == 2
        loop = asyncio.get_running_loop()
        start = loop.time()
        await tim.close()
        results = await asyncio.gather(*pulls, increment, return_exceptions=True)
        # At once, not at the 20 s timeout (generous slack for a loaded machine).
        assert loop.time() - start < 10.0
        assert [type(r) for r in results] == [errors.TimClosedError] * 3 + [
            errors.TimOutcomeUnknownError
        ]
        assert all(isinstance(r, RuntimeError) for r in results[:3])
        assert tim.limiter.window(PULL).in_flight == 0
        with pytest.raises(errors.TimClosedError):
            await tim.msg_ext.group_get_key_values(gid, seq)
    assert len(server.requests_for(PULL)) == 1


async def test_closing_the_limiter_fails_its_waiters() -> None:
    limiter = SlidingWindowLimiter(rate=1, period=60)
    async with limiter.acquire("a/b"):
        waiters = [asyncio.create_task(limiter.acquire("a/b").__aenter__()) for _ in range(3)]
        await asyncio.sleep(0)
        await limiter.aclose()
        results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(r) for r in results] == [LimiterClosedError] * 3
    assert limiter.window("a/b").in_flight == 0
