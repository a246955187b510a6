"""An attempt admitted with too little of its timeout left is not sent.

Sending it could only make an unanswered call (it times out before the answer), which then
holds its limiter slot for ``unanswered_hold``: with a backlog in the limiter, every admitted
call would be such a call and the rate would collapse. Instead it fails as a timeout, unsent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from tim_async import CounterMode, SlidingWindowLimiter, TimClient, TimTimeoutError
from tim_async.testing import FakeTimServer, Fault

GET_ATTR = "group_open_attr_http_svc/get_group_attr"
UPDATE_COUNTER = "group_open_http_svc/update_group_counter"
GID = "@TGS#window"


class RecordingSlot:
    def __init__(self) -> None:
        self.unanswered_calls = 0
        self.unsent_calls = 0

    def unanswered(self) -> None:
        self.unanswered_calls += 1

    def unsent(self) -> None:
        self.unsent_calls += 1


class LateLimiter:
    """A limiter (the public protocol) that admits each call only after ``delay`` seconds:
    a stand-in for a long queue in front of a full budget."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.slots: list[RecordingSlot] = []

    def acquire(self, command: str) -> AbstractAsyncContextManager[RecordingSlot]:
        return self._slot()

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[RecordingSlot]:
        # Blocking on purpose: the call's timeout cannot fire while its admission is late, so
        # the call is always admitted with (at most) the time left that the test chose, even
        # on a loaded machine where an asyncio.sleep would overshoot into the timeout.
        time.sleep(self.delay)  # noqa: ASYNC251
        slot = RecordingSlot()
        self.slots.append(slot)
        yield slot

    async def aclose(self) -> None:
        return None


def _client(server: FakeTimServer, limiter: LateLimiter, timeout: float) -> TimClient:
    return TimClient(
        server.sdkappid,
        server.admin,
        secret_key=server.secret_key,
        base_url=server.base_url,
        limiter=limiter,
        timeout=timeout,
        max_retries=0,
    )


async def test_an_attempt_admitted_at_its_deadline_is_not_sent() -> None:
    async with FakeTimServer(rate_limit=None) as server:
        server.create_group(GID)
        # Were it sent, the answer would come too late: an Increase would be OutcomeUnknown.
        server.faults.script(UPDATE_COUNTER, [Fault.slow(1.0)])
        limiter = LateLimiter()
        limiter.delay = 0.497  # admitted with 3 ms of the 0.5 s timeout left (< MIN_SEND_TIME)
        async with _client(server, limiter, timeout=0.5) as tim:
            with pytest.raises(TimTimeoutError) as raised:
                await tim.group_counter.update_group_counter(
                    GID, {"likes": 1}, mode=CounterMode.INCREASE
                )
            assert type(raised.value) is TimTimeoutError  # not TimOutcomeUnknownError
            assert tim.stats.attempts == 0
        assert server.requests_for(UPDATE_COUNTER) == []
        assert [(s.unanswered_calls, s.unsent_calls) for s in limiter.slots] == [(0, 1)]
        assert server.group_counters(GID) == {}


async def test_an_unsent_slot_is_given_back_at_once() -> None:
    # The in-process limiter frees the slot of an admitted call that was never sent (nothing
    # can arrive), instead of holding it a period as for a finished call.
    limiter = SlidingWindowLimiter(1)
    async with limiter.acquire(GET_ATTR) as slot:
        slot.unsent()
    window = limiter.window(GET_ATTR)
    assert (window.in_flight, len(window.finished), len(window.unanswered)) == (0, 0, 0)
    async with limiter.acquire(GET_ATTR):
        pass  # admitted: the budget of 1 is whole again
    assert (window.in_flight, len(window.finished)) == (0, 1)
    await limiter.aclose()
