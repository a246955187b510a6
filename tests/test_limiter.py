"""The in-process limiter: the arrival guarantee (deterministic, on the clock-free core), the
sustained rate, FIFO order, cancellation and per-command independence."""

from __future__ import annotations

import asyncio
import heapq
import selectors
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tim_async import errors
from tim_async.client import TimClient
from tim_async.errors import TimConfigError, TimEventLoopError
from tim_async.limiter import (
    DEFAULT_UNANSWERED_HOLD,
    LimiterClosedError,
    SlidingWindow,
    SlidingWindowLimiter,
    UnlimitedLimiter,
)
from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY, FakeTimServer, Fault

PULL = "openim_msg_ext_http_svc/group_get_key_values"
T = TypeVar("T")


def simulate(
    rate: int,
    period: float,
    requests: list[tuple[float, float, float]],
    *,
    unanswered_hold: float = 10.0,
    unanswered: frozenset[int] = frozenset(),
) -> list[tuple[float, float, float]]:
    """Drive SlidingWindow with a fake clock. Each request is (wanted start, round trip,
    fraction at which it reaches the server). A request whose index is in ``unanswered`` ends
    without an answer after its round trip and may reach the server up to ``unanswered_hold``
    later (the fraction spans round trip + hold); the others arrive within their round trip.
    Requests are admitted in order. Returns (admitted, arrival, finished) per request."""
    window = SlidingWindow(rate, period, unanswered_hold=unanswered_hold)
    finishes: list[tuple[float, bool]] = []  # heap of pending (finish time, answered)
    out = []
    now = 0.0
    for index, (wanted, rtt, frac) in enumerate(requests):
        now = max(now, wanted)
        while True:
            while finishes and finishes[0][0] <= now:
                at, answered = heapq.heappop(finishes)
                window.finish(at, answered=answered)
            retry_at = window.try_admit(now)
            if retry_at is None:
                break
            candidates = [retry_at]
            if finishes:
                candidates.append(finishes[0][0])
            nxt = min(candidates)
            assert nxt != float("inf"), "deadlock: nothing in flight and no time to wait for"
            now = max(now, nxt)
        answered = index not in unanswered
        heapq.heappush(finishes, (now + rtt, answered))
        reach = rtt if answered else rtt + unanswered_hold
        out.append((now, now + frac * reach, now + rtt))
    return out


def max_in_window(times: list[float], period: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - period:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


requests_st = st.lists(
    st.tuples(
        st.floats(0, 3, allow_nan=False),  # gap before the caller wants to send
        st.floats(0, 2.5, allow_nan=False),  # round trip (can exceed the period)
        st.floats(0, 1),  # where in the round trip it arrives
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(rate=st.integers(1, 12), reqs=requests_st)
def test_no_sliding_window_ever_sees_more_than_rate_arrivals(
    rate: int, reqs: list[tuple[float, float, float]]
) -> None:
    wanted, acc = [], 0.0
    for gap, rtt, frac in reqs:
        acc += gap if gap > 2.5 else 0.0  # mostly bursts, sometimes pauses
        wanted.append((acc, rtt, frac))
    out = simulate(rate, 1.0, wanted)
    arrivals = [a for _, a, _ in out]
    assert max_in_window(arrivals, 1.0) <= rate
    assert all(s >= w for (s, _, _), (w, _, _) in zip(out, wanted, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    rate=st.integers(1, 12),
    hold=st.floats(0, 3, allow_nan=False),
    reqs=requests_st,
    data=st.data(),
)
def test_requests_arriving_after_their_call_gave_up_stay_inside_the_window(
    rate: int, hold: float, reqs: list[tuple[float, float, float]], data: st.DataObject
) -> None:
    """Calls that end unanswered, whose requests reach the server up to ``unanswered_hold``
    after the call ended (the guarantee's assumption), still never make a sliding period hold
    more than ``rate`` arrivals."""
    unanswered = data.draw(st.frozensets(st.integers(0, len(reqs) - 1)))
    wanted, acc = [], 0.0
    for gap, rtt, frac in reqs:
        acc += gap if gap > 2.5 else 0.0
        wanted.append((acc, rtt, frac))
    out = simulate(rate, 1.0, wanted, unanswered_hold=hold, unanswered=unanswered)
    assert max_in_window([a for _, a, _ in out], 1.0) <= rate


def test_an_unanswered_call_holds_its_slot_for_the_extra_horizon() -> None:
    w = SlidingWindow(2, 1.0, unanswered_hold=5.0)
    assert w.try_admit(0.0) is None
    assert w.try_admit(0.0) is None
    w.finish(1.0, answered=False)  # recorded finish 6.0
    w.finish(2.0)  # answered, released later: recorded finish 2.0, before the unanswered one
    assert list(w.unanswered) == [6.0] and list(w.finished) == [2.0]
    # Full: the earliest slot to free is the answered one's, whatever the structure it is in.
    assert w.try_admit(2.5) == 2.0 + w.hold
    assert w.try_admit(2.0 + w.hold) is None
    assert w.try_admit(4.0) == 6.0 + w.hold  # the unanswered slot is still held at 4 s
    w.finish(4.0)
    assert w.try_admit(4.5) == 4.0 + w.hold  # the answered record (later release) frees first
    assert w.try_admit(4.0 + w.hold) is None
    assert w.try_admit(6.0) == 6.0 + w.hold
    assert w.held(6.0 + w.hold) == 1  # the unanswered record expired; one call in flight


def test_unanswered_hold_is_validated() -> None:
    for bad in (-0.1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(TimConfigError, match="unanswered_hold"):
            SlidingWindowLimiter(200, unanswered_hold=bad)  # type: ignore[arg-type]
    assert SlidingWindowLimiter(200, unanswered_hold=0).unanswered_hold == 0.0
    assert SlidingWindowLimiter(200).unanswered_hold == DEFAULT_UNANSWERED_HOLD


async def test_the_session_marks_a_timed_out_call_unanswered() -> None:
    """Through the limiter's slot: a call whose request was sent and timed out is recorded in
    the unanswered records (its slot held ``unanswered_hold`` longer); an answered one not."""
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        server.faults.script(PULL, [Fault.slow(5.0)])
        limiter = SlidingWindowLimiter(10, unanswered_hold=7.0)
        async with TimClient(
            TEST_SDKAPPID,
            TEST_ADMIN,
            secret_key=TEST_SECRET_KEY,
            base_url=server.base_url,
            limiter=limiter,
            timeout=0.3,
            max_retries=0,
        ) as tim:
            loop = asyncio.get_running_loop()
            with pytest.raises(errors.TimTimeoutError):
                await tim.msg_ext.group_get_key_values(gid, seq)
            ended = loop.time()
            window = limiter.window(PULL)
            assert len(window.unanswered) == 1 and not window.finished
            assert ended + 7.0 - 1.0 < window.unanswered[0] <= ended + 7.0
            await tim.msg_ext.group_get_key_values(gid, seq)
            assert len(window.unanswered) == 1 and len(window.finished) == 1


def sustained(times: list[float], period: float = 1.0) -> float:
    """Calls per period after the first period (whatever opening burst a limiter allows)."""
    start = times[0] + period
    later = [t for t in times if t >= start]
    return len(later) / (times[-1] - start) * period


def test_sustains_the_full_rate_with_instant_answers() -> None:
    out = simulate(200, 1.0, [(0.0, 0.0, 1.0)] * 2000)
    admitted = [s for s, _, _ in out]
    assert max_in_window(admitted, 1.0) == 200
    assert sustained(admitted) > 0.995 * 200
    # Paced, not bunched: no 10 ms holds more than the burst plus two intervals' worth.
    assert max_in_window(admitted, 0.01) <= 4 + 2


def test_round_trip_costs_only_its_own_length() -> None:
    out = simulate(200, 1.0, [(0.0, 0.005, 0.5)] * 2000)
    admitted = [s for s, _, _ in out]
    assert max_in_window([a for _, a, _ in out], 1.0) <= 200
    # 200 calls per (1 s + 1 ms guard + 5 ms round trip): about 198.8/s.
    assert 0.99 * 200 < sustained(admitted) <= 200


def test_late_timers_do_not_drift_the_schedule() -> None:
    # Each admission happens 0.4 ms after the limiter said it could (a busy event loop):
    # the schedule is absolute, so the rate does not fall.
    window = SlidingWindow(200, 1.0)
    now, admitted = 0.0, []
    while len(admitted) < 1000:
        retry_at = window.try_admit(now)
        if retry_at is None:
            admitted.append(now)
            window.finish(now)
        else:
            now = retry_at + 0.0004
    assert sustained(admitted) > 0.99 * 200


def test_in_flight_calls_hold_their_slot_until_one_period_after_finishing() -> None:
    w = SlidingWindow(2, 1.0)
    assert w.try_admit(0.0) is None
    assert w.try_admit(0.0) is None
    assert w.try_admit(50.0) == float("inf")  # both still in flight, however long
    w.finish(50.0)
    assert w.try_admit(50.5) == 50.0 + w.hold
    assert w.try_admit(51.0) is not None  # a guard of 1 ms beyond the period
    assert w.try_admit(50.0 + w.hold) is None


def test_finish_keeps_order_when_clock_goes_back() -> None:
    w = SlidingWindow(3, 1.0)
    for _ in range(3):
        w.try_admit(0.0)
    w.finish(5.0)
    w.finish(4.0)
    assert list(w.finished) == [5.0, 5.0]


# --------------------------------------------------------------------------- the async wrapper


async def test_async_limiter_keeps_the_invariant_and_fifo() -> None:
    limiter = SlidingWindowLimiter(rate=5, period=0.05)
    loop = asyncio.get_running_loop()
    records: list[tuple[int, float, float]] = []

    async def one(i: int) -> None:
        async with limiter.acquire("svc/cmd"):
            start = loop.time()
            await asyncio.sleep(0.001 * (i % 3))
        records.append((i, start, loop.time()))

    await asyncio.gather(*(one(i) for i in range(40)))
    await limiter.aclose()
    by_start = sorted(records, key=lambda r: r[1])
    assert [i for i, _, _ in by_start] == list(range(40))  # first come, first served
    for _, s, _ in records:
        held = sum(1 for _, s2, e2 in records if s2 < s and e2 > s - 0.05)
        assert held < 5
    assert limiter.window("svc/cmd").in_flight == 0


async def test_waiter_is_not_admitted_while_every_slot_is_in_flight() -> None:
    limiter = SlidingWindowLimiter(rate=2, period=0.01)
    holders = [limiter.acquire("a/b") for _ in range(2)]
    for h in holders:
        await h.__aenter__()
    admitted = asyncio.Event()

    async def waiter() -> None:
        async with limiter.acquire("a/b"):
            admitted.set()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.1)  # ten periods: a time-based bucket would have let it through
    assert not admitted.is_set()
    loop = asyncio.get_running_loop()
    await holders[0].__aexit__(None, None, None)
    released = loop.time()
    await asyncio.wait_for(admitted.wait(), 5)
    assert loop.time() - released >= 0.01
    await holders[1].__aexit__(None, None, None)
    await task
    await limiter.aclose()


async def test_cancelled_waiters_cost_no_capacity() -> None:
    limiter = SlidingWindowLimiter(rate=1, period=60)
    first = limiter.acquire("a/b")
    await first.__aenter__()
    waiters = [asyncio.create_task(limiter.acquire("a/b").__aenter__()) for _ in range(5)]
    await asyncio.sleep(0)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    window = limiter.window("a/b")
    assert window.in_flight == 1 and not window.finished
    await first.__aexit__(None, None, None)
    assert window.in_flight == 0 and len(window.finished) == 1
    await limiter.aclose()


async def test_exception_inside_the_slot_still_releases() -> None:
    limiter = SlidingWindowLimiter(rate=3)
    try:
        async with limiter.acquire("a/b"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert limiter.window("a/b").in_flight == 0
    assert len(limiter.window("a/b").finished) == 1
    await limiter.aclose()


async def test_unlimited_limiter_never_waits() -> None:
    limiter = UnlimitedLimiter()
    for _ in range(1000):
        async with limiter.acquire("a/b"):
            pass
    await limiter.aclose()


async def test_close_and_cancel_in_the_same_turn_gives_back_no_slot_it_never_had() -> None:
    """Issue 16.8: waiters failed by close() and cancelled in the same loop turn were counted as
    admitted and gave a slot back, driving ``in_flight`` negative (5 in flight at rate 2)."""
    limiter = SlidingWindowLimiter(rate=2, period=60)
    holders = [limiter.acquire("a/b") for _ in range(2)]
    for holder in holders:
        await holder.__aenter__()
    waiters = [asyncio.create_task(limiter.acquire("a/b").__aenter__()) for _ in range(3)]
    await asyncio.sleep(0)  # all three queued
    await limiter.aclose()
    for waiter in waiters:  # same turn: their futures already hold close()'s error
        waiter.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError | LimiterClosedError) for r in results)
    window = limiter.window("a/b")
    assert window.in_flight == 2  # the two holders, nothing given back
    # The budget is intact: no further call fits while both holders are in flight.
    assert window.try_admit(asyncio.get_running_loop().time()) is not None
    for holder in holders:
        await holder.__aexit__(None, None, None)
    assert window.in_flight == 0
    now = asyncio.get_running_loop().time()
    assert sum(window.try_admit(now + 1) is None for _ in range(5)) == 0  # held for a period
    assert window.held(now + 1) <= 2


async def test_a_closed_limiter_refuses_new_calls() -> None:
    limiter = SlidingWindowLimiter(rate=5)
    await limiter.aclose()
    with pytest.raises(LimiterClosedError):
        async with limiter.acquire("a/b"):
            pass


def test_a_limiter_used_from_a_second_event_loop_says_what_to_do() -> None:
    """Issue 11.5: one limiter (one client) in two ``asyncio.run()`` calls raises a TimError
    that says to use one client per event loop, not a bare RuntimeError."""
    limiter = SlidingWindowLimiter(rate=5)

    async def one_call() -> None:
        async with limiter.acquire("a/b"):
            pass

    asyncio.run(one_call())
    with pytest.raises(TimEventLoopError) as caught:
        asyncio.run(one_call())
    assert isinstance(caught.value, errors.TimError)
    message = str(caught.value)
    assert "one client per event loop" in message
    assert "create it inside the loop that uses it" in message
    # The other command of the same limiter is bound too: one loop per limiter.
    other = SlidingWindowLimiter(rate=5)

    async def call(command: str) -> None:
        async with other.acquire(command):
            pass

    asyncio.run(call("a/one"))
    with pytest.raises(TimEventLoopError):
        asyncio.run(call("a/two"))


# --------------------------------------------------------------------------- virtual time


class _VirtualSelector(selectors.DefaultSelector):
    """Polls instead of blocking: when nothing is ready, the loop's clock jumps to the next
    timer (plus ``lateness``, a timer that fires late as on a busy machine)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events and timeout != 0:
            assert self.loop is not None
            if timeout is None:
                raise RuntimeError("deadlock: nothing ready and no timer scheduled")
            self.loop.now += timeout + self.loop.lateness
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual: a limiter driven by it runs a minute of
    traffic in milliseconds, the same way every time (no wall-clock bounds in the tests)."""

    def __init__(self, lateness: float = 0.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 1000.0
        self.lateness = lateness

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]], lateness: float = 0.0) -> T:
    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(lateness)) as runner:
        return runner.run(main())


def admissions(
    limiter: SlidingWindowLimiter, commands: Sequence[str], calls: int, rtt: float = 0.0
) -> dict[str, list[float]]:
    """``calls`` calls of each command, all started at once (interleaved), each holding its
    slot ``rtt`` virtual seconds: the virtual times at which each command's calls were
    admitted."""

    async def main() -> dict[str, list[float]]:
        loop = asyncio.get_running_loop()
        times: dict[str, list[float]] = {c: [] for c in commands}

        async def one(command: str) -> None:
            async with limiter.acquire(command):
                times[command].append(loop.time())
                if rtt:
                    await asyncio.sleep(rtt)

        await asyncio.gather(*(one(c) for _ in range(calls) for c in commands))
        await limiter.aclose()
        return times

    return run_virtual(main)


def test_two_commands_at_full_rate_each_sustain_their_own_limit() -> None:
    """Issue 10.8: one window per command. Two commands, 1,000 calls each, all at once: each
    is admitted at (almost) the full rate and never above it; one window shared by both would
    give each about half."""
    times = admissions(SlidingWindowLimiter(rate=200), ["svc/one", "svc/two"], 1000, rtt=0.002)
    for command, admitted in times.items():
        assert len(admitted) == 1000
        assert max_in_window(admitted, 1.0) <= 200, command
        assert sustained(admitted) >= 0.99 * 200, (command, sustained(admitted))
