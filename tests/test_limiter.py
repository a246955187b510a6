"""The in-process limiter: the arrival guarantee (deterministic, on the clock-free window), the
aiolimiter pacing stage, the sustained rate, FIFO order, cancellation, close() and per-command
independence; most on a virtual clock (``VirtualClockLoop``), so no test races the wall clock."""

from __future__ import annotations

import asyncio
import heapq
import selectors
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest
from _helpers import max_in_window
from aiolimiter import AsyncLimiter
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


def test_rate_period_and_burst_are_validated_and_burst_defaults_to_rate_over_50() -> None:
    bad_options: list[dict[str, Any]] = [
        {"rate": 0},
        {"rate": 2.5},
        {"rate": True},
        {"period": 0},
        {"period": float("inf")},
        {"burst": 0},
        {"burst": 201},
        {"burst": 2.0},
        {"burst": True},
    ]
    for bad in bad_options:
        (name,) = bad
        with pytest.raises(TimConfigError, match=name):
            SlidingWindowLimiter(**{"rate": 200, **bad})
    # rate // 50, at least 2, at most rate.
    assert [SlidingWindowLimiter(rate).burst for rate in (1, 2, 50, 200, 1000)] == [1, 2, 2, 4, 20]
    assert SlidingWindowLimiter(200, burst=200).burst == 200


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
    timer (plus ``lateness``, a timer that fires late as on a busy machine). Every loop turn
    also takes ``TICK`` (a real loop turn takes time too; asyncio runs timers up to its clock
    resolution early, and a clock that never moved would re-arm such a timer forever)."""

    TICK = 1e-6

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        assert self.loop is not None
        self.loop.now += self.TICK
        if not events and timeout != 0:
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


def test_sustains_the_full_rate_paced_by_the_token_bucket() -> None:
    times = admissions(SlidingWindowLimiter(rate=200), ["a/b"], 2000)["a/b"]
    assert max_in_window(times, 1.0) <= 200
    assert sustained(times) > 0.995 * 200
    # Paced, not bunched: no 10 ms holds more than the bucket's capacity (4) plus two tokens.
    assert max_in_window(times, 0.01) <= 4 + 2


def test_round_trip_costs_only_its_own_length() -> None:
    times = admissions(SlidingWindowLimiter(rate=200), ["a/b"], 2000, rtt=0.005)["a/b"]
    assert max_in_window(times, 1.0) <= 200
    # 200 calls per (1 s + 1 ms guard + 5 ms round trip): about 198.8/s.
    assert 0.99 * 200 < sustained(times) <= 200


def test_late_timers_do_not_drift_the_schedule() -> None:
    """Every timer fires 0.4 ms late (a busy event loop): a bucket of capacity >= 2 catches up,
    a capacity of 1 (``AsyncLimiter(1, 1 / rate)``) loses the lateness on every call."""

    def rate_with(burst: int) -> float:
        limiter = SlidingWindowLimiter(rate=200, burst=burst)

        async def main() -> list[float]:
            loop = asyncio.get_running_loop()
            times: list[float] = []

            async def one() -> None:
                async with limiter.acquire("a/b"):
                    times.append(loop.time())

            await asyncio.gather(*(one() for _ in range(1000)))
            await limiter.aclose()
            return times

        return sustained(run_virtual(main, lateness=0.0004))

    assert rate_with(4) > 0.99 * 200
    assert rate_with(1) < 0.95 * 200


def test_fifo_with_cancellations_on_the_virtual_clock() -> None:
    """Strictly first come, first served, also when waiters in the middle are cancelled (the
    queue, not aiolimiter's heap, decides the order), and the cancelled ones cost nothing."""
    limiter = SlidingWindowLimiter(rate=20, period=1.0, burst=2)

    async def main() -> tuple[list[int], int]:
        order: list[int] = []

        async def one(i: int) -> None:
            async with limiter.acquire("a/b"):
                order.append(i)

        tasks = [asyncio.create_task(one(i)) for i in range(100)]
        await asyncio.sleep(0.2)
        for i in range(30, 60):
            tasks[i].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        admitted = limiter.window("a/b").held(asyncio.get_running_loop().time())
        await limiter.aclose()
        return order, admitted

    order, held = run_virtual(main)
    assert order == [i for i in range(100) if not 30 <= i < 60]
    assert held <= 20


def test_a_token_drawn_for_a_cancelled_waiter_is_kept_for_the_next_call() -> None:
    """The admitter holds a window slot and waits 30 s for the bucket's next token; the waiter
    is cancelled meanwhile. The token is not lost: a call at 40 s goes at once (a lost token
    would make it wait until 60 s), and the slot went back to the window."""
    limiter = SlidingWindowLimiter(rate=2, period=60, burst=1)

    async def main() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with limiter.acquire("a/b"):
            pass
        waiter = asyncio.create_task(limiter.acquire("a/b").__aenter__())
        await asyncio.sleep(10)
        assert limiter.waiting("a/b") == 1
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        await asyncio.sleep(30)
        in_flight = limiter.window("a/b").in_flight
        async with limiter.acquire("a/b"):
            admitted = loop.time() - start
        await limiter.aclose()
        return admitted, loop.time() - start, in_flight

    admitted, _, in_flight = run_virtual(main)
    assert in_flight == 0
    assert 40 <= admitted < 41


def test_close_fails_a_waiter_at_once_while_the_bucket_is_empty() -> None:
    limiter = SlidingWindowLimiter(rate=2, period=60, burst=1)

    async def main() -> tuple[float, BaseException | None, int]:
        loop = asyncio.get_running_loop()
        async with limiter.acquire("a/b"):
            pass
        waiter = asyncio.create_task(limiter.acquire("a/b").__aenter__())
        await asyncio.sleep(1)  # queued; the admitter holds a slot and waits for a token
        assert limiter.window("a/b").in_flight == 1
        closed_at = loop.time()
        await limiter.aclose()
        result = (await asyncio.gather(waiter, return_exceptions=True))[0]
        assert isinstance(result, BaseException | None)
        await asyncio.sleep(0)
        return loop.time() - closed_at, result, limiter.window("a/b").in_flight

    waited, result, in_flight = run_virtual(main)
    assert isinstance(result, LimiterClosedError)
    assert waited < 0.01  # at once, not when the next token comes (30 s)
    assert in_flight == 0  # the admitter's slot went back


def test_the_bucket_is_drawn_from_on_every_call() -> None:
    """The pacing stage is an ``aiolimiter.AsyncLimiter`` per command, capacity ``burst``,
    refilling at ``rate`` per ``period``: seen through its public ``has_capacity()``."""
    limiter = SlidingWindowLimiter(rate=4, period=1.0, burst=2)

    async def main() -> list[bool]:
        seen = []
        for _ in range(2):
            async with limiter.acquire("a/b"):
                pass
        bucket = limiter.bucket("a/b")
        assert isinstance(bucket, AsyncLimiter)
        assert (bucket.max_rate, bucket.max_rate / bucket.time_period) == (2, 4.0)
        seen.append(bucket.has_capacity())  # both tokens drawn
        await asyncio.sleep(0.25)  # one token back (4 per second)
        seen.append(bucket.has_capacity(1) and not bucket.has_capacity(2))
        assert limiter.bucket("a/other") is not bucket
        await limiter.aclose()
        return seen

    assert run_virtual(main) == [False, True]


async def test_a_default_client_call_goes_through_aiolimiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TimClient()`` with its default ``rate_limit=200``: each call draws one token from an
    ``AsyncLimiter(4, 4 / 200)`` of its command (the spy only counts, then calls aiolimiter)."""
    drawn: list[AsyncLimiter] = []
    original = AsyncLimiter.acquire

    async def spy(self: AsyncLimiter, amount: float = 1) -> None:
        drawn.append(self)
        await original(self, amount)

    monkeypatch.setattr(AsyncLimiter, "acquire", spy)
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        async with TimClient(
            TEST_SDKAPPID, TEST_ADMIN, secret_key=TEST_SECRET_KEY, base_url=server.base_url
        ) as tim:
            await tim.msg_ext.group_get_key_values(gid, seq)
            await tim.group_attr.get_group_attr(gid)
            await tim.msg_ext.group_get_key_values(gid, seq)
    assert len(drawn) == 3
    assert drawn[0] is drawn[2] and drawn[0] is not drawn[1]  # one bucket per command
    assert drawn[0].max_rate == 4 and drawn[0].max_rate / drawn[0].time_period == 200


async def test_no_rate_limit_adds_no_per_call_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rate_limit=None``: no bucket, no window, no allocation per call (one shared,
    never-suspending context manager)."""
    drawn: list[AsyncLimiter] = []
    original = AsyncLimiter.acquire

    async def spy(self: AsyncLimiter, amount: float = 1) -> None:
        drawn.append(self)
        await original(self, amount)

    monkeypatch.setattr(AsyncLimiter, "acquire", spy)
    limiter = UnlimitedLimiter()
    assert limiter.acquire("a/b") is limiter.acquire("c/d")
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        async with TimClient(
            TEST_SDKAPPID,
            TEST_ADMIN,
            secret_key=TEST_SECRET_KEY,
            base_url=server.base_url,
            rate_limit=None,
        ) as tim:
            for _ in range(3):
                await tim.msg_ext.group_get_key_values(gid, seq)
    assert drawn == []


def test_no_token_is_spent_on_a_call_the_window_holds_back() -> None:
    """Window first, bucket second: while every slot is in flight, a queued call leaves the
    bucket's tokens alone (the bucket refills to full), and it goes at once when a slot frees."""
    limiter = SlidingWindowLimiter(rate=2, period=60, burst=2)

    async def main() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        holders = [limiter.acquire("a/b") for _ in range(2)]
        for holder in holders:
            await holder.__aenter__()
        waiter = asyncio.create_task(limiter.acquire("a/b").__aenter__())
        await asyncio.sleep(70)  # the bucket refilled (2 per 60 s); the window is still full
        full = limiter.bucket("a/b").has_capacity(2)
        await holders[0].__aexit__(None, None, None)
        released = loop.time()
        await asyncio.sleep(60.01)
        assert waiter.done()
        await holders[1].__aexit__(None, None, None)
        await limiter.aclose()
        return full, released

    full, _ = run_virtual(main)
    assert full


class _GatedBucket:
    """A token bucket whose first token is free and whose next one the test releases."""

    def __init__(self) -> None:
        self.free = 1
        self.gate: asyncio.Future[None] | None = None

    def has_capacity(self, amount: float = 1) -> bool:
        return self.free > 0

    async def acquire(self, amount: float = 1) -> None:
        if self.free > 0:
            self.free -= 1
            return
        self.gate = asyncio.get_running_loop().create_future()
        await self.gate


class _GatedLimiter(SlidingWindowLimiter):
    buckets: list[_GatedBucket]

    def _new_bucket(self) -> Any:  # the pacing seam the benchmarks use too
        bucket = _GatedBucket()
        self.buckets.append(bucket)
        return bucket


async def test_a_waiter_cancelled_in_the_turn_it_is_admitted_gives_back_its_slot_and_token() -> (
    None
):
    limiter = _GatedLimiter(rate=5, period=60)
    limiter.buckets = []
    async with limiter.acquire("a/b"):
        pass
    waiter = asyncio.create_task(limiter.acquire("a/b").__aenter__())
    for _ in range(5):
        await asyncio.sleep(0)
    (bucket,) = limiter.buckets
    assert bucket.gate is not None  # the waiter waits for its token
    loop = asyncio.get_running_loop()

    def release() -> None:
        assert bucket.gate is not None
        bucket.gate.set_result(None)  # the admitter wakes next and hands the slot over ...
        loop.call_soon(waiter.cancel)  # ... and the waiter is cancelled before it runs

    loop.call_soon(release)
    (outcome,) = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    assert limiter.window("a/b").in_flight == 0  # the slot came back
    # ... and the token drawn for it is kept: the next call needs no new one from the bucket.
    after = limiter.acquire("a/b")
    await asyncio.wait_for(after.__aenter__(), 1.0)
    assert limiter.window("a/b").in_flight == 1
    await after.__aexit__(None, None, None)
    await limiter.aclose()
