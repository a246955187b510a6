"""An attempt counts as sent only once its request has a connection, against the emulator on
127.0.0.1: a call that runs out of time waiting for a pooled connection (the connection limit
reached) sent nothing, so an increment is a timeout, not an unknown outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _helpers import arrived, make_client

from tim_async import (
    TimClient,
    TimOutcomeUnknownError,
    TimTimeoutError,
    connection_trace,
)
from tim_async.limiter import Slot
from tim_async.testing import FakeTimServer, Fault

GET_ATTR = "group_open_attr_http_svc/get_group_attr"
UPDATE = "group_open_http_svc/update_group_counter"


class RecordingSlot:
    def __init__(self) -> None:
        self.unanswered_calls = 0

    def unanswered(self) -> None:
        self.unanswered_calls += 1


class RecordingLimiter:
    """No limit; keeps every slot it gave, to see which ones were told "unanswered"."""

    def __init__(self) -> None:
        self.slots: list[RecordingSlot] = []

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[Slot]:
        slot = RecordingSlot()
        self.slots.append(slot)
        yield slot

    def acquire(self, command: str) -> contextlib.AbstractAsyncContextManager[Slot]:
        return self._slot()

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None) as srv:
        yield srv


async def hold_the_connection(server: FakeTimServer, http: aiohttp.ClientSession, gid: str) -> None:
    """A request that holds the pool's only connection for 0.8 s (a slow answer)."""
    async with http.post(server.url(GET_ATTR), json={"GroupId": gid}) as resp:
        await resp.read()


async def increments_while_the_pool_is_full(
    server: FakeTimServer, tim: TimClient, http: aiohttp.ClientSession
) -> list[BaseException | None]:
    gid = server.create_group()
    server.set_group_counters(gid, {"n": 0})
    server.faults.script(GET_ATTR, [Fault.slow(0.8)])
    holder = asyncio.create_task(hold_the_connection(server, http, gid))
    await arrived(server, GET_ATTR)
    results = await asyncio.gather(
        *(tim.group_counter.update_group_counter(gid, {"n": 1}, mode="Increase") for _ in range(3)),
        return_exceptions=True,
    )
    await holder
    assert server.requests_for(UPDATE) == []  # nothing reached the server
    assert server.group_counters(gid) == {"n": 0}
    return [r if isinstance(r, BaseException) else None for r in results]


async def test_own_session_waiting_for_a_pooled_connection_is_not_sent(
    server: FakeTimServer,
) -> None:
    limiter = RecordingLimiter()
    async with make_client(server, connections=1, timeout=0.3, limiter=limiter) as tim:
        # Private read: the client's own aiohttp session is not public (and should not be);
        # the test needs its one pooled connection held by a request outside the client.
        http = tim._session._ensure_http()
        results = await increments_while_the_pool_is_full(server, tim, http)
        assert [type(r) for r in results] == [TimTimeoutError] * 3
        assert tim.stats.attempts == 0 and tim.stats.calls == 3
    assert len(limiter.slots) == 3
    assert [s.unanswered_calls for s in limiter.slots] == [0, 0, 0]  # nothing may arrive


async def test_caller_session_with_the_connection_trace_is_precise_too(
    server: FakeTimServer,
) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    http = aiohttp.ClientSession(connector=connector, trace_configs=[connection_trace()])
    async with http, make_client(server, session=http, timeout=0.3) as tim:
        results = await increments_while_the_pool_is_full(server, tim, http)
        assert [type(r) for r in results] == [TimTimeoutError] * 3
        assert tim.stats.attempts == 0


async def test_caller_session_without_the_trace_stays_on_the_safe_side(
    server: FakeTimServer,
) -> None:
    # Without the trace the client cannot tell a pool wait from a request in flight: it
    # counts the request as sent once it started, so an increment is an unknown outcome.
    connector = aiohttp.TCPConnector(limit=1)
    http = aiohttp.ClientSession(connector=connector)
    async with http, make_client(server, session=http, timeout=0.3) as tim:
        results = await increments_while_the_pool_is_full(server, tim, http)
        assert [type(r) for r in results] == [TimOutcomeUnknownError] * 3


async def test_a_request_that_got_its_connection_and_no_answer_is_sent(
    server: FakeTimServer,
) -> None:
    gid = server.create_group()
    server.set_group_counters(gid, {"n": 0})
    server.faults.script(UPDATE, [Fault.slow(0.8)])
    limiter = RecordingLimiter()
    async with make_client(server, timeout=0.3, limiter=limiter) as tim:
        with pytest.raises(TimOutcomeUnknownError):
            await tim.group_counter.update_group_counter(gid, {"n": 1}, mode="Increase")
        assert tim.stats.attempts == 1
    assert len(server.requests_for(UPDATE)) == 1
    assert [s.unanswered_calls for s in limiter.slots] == [1]  # it may still arrive


async def test_a_gateway_status_leaves_its_slot_unanswered_and_a_503_does_not(
    server: FakeTimServer,
) -> None:
    # 502 and 504 come from a gateway in front of the server, which may still get the request;
    # 503 (and an ErrorCode) is the server's own answer: the call is over.
    gid = server.create_group()
    server.faults.script(GET_ATTR, [Fault.http(502), Fault.http(504), Fault.http(503)])
    limiter = RecordingLimiter()
    async with make_client(server, limiter=limiter) as tim:
        await tim.group_attr.get_group_attr(gid)
        assert tim.stats.attempts == 4
    assert [s.unanswered_calls for s in limiter.slots] == [1, 1, 0, 0]
