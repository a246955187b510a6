"""Client-side rate limiting, one budget per REST command.

The server counts *arrivals* per command per second. The client cannot see when a request
arrives: only that it arrives after it was sent and, when the server's answer came back, before
that answer. :class:`SlidingWindowLimiter` therefore accounts every call as an interval: a call
holds its slot from the moment it is admitted until one second after its *recorded finish*. A
new call is admitted at time ``t`` only while fewer than ``rate`` calls are in flight or have a
recorded finish after ``t - 1 s``.

The recorded finish of a call is the moment its answer (or its failure) came back, except for a
call that ended *without an answer after its request was sent* (a timeout, a cancellation, the
connection lost, a 502/504 from a gateway; the session calls :meth:`Slot.unanswered`): such a
request may still be on its way (in a proxy's buffer, in TCP retransmission), so its recorded
finish is ``release time + unanswered_hold`` (10 s by default).

The guarantee assumes one thing about the network: **a request arrives at the server no later
than ``unanswered_hold`` after its call ended without an answer** (for an answered call the
answer itself proves that the request arrived before it). Under it, every call's arrival lies
before its recorded finish, and no sliding second at the server holds more than ``rate``
arrivals of one command, whatever the delay. Proof: suppose ``rate + 1`` calls arrived inside
one window ``[w, w + 1)``. Take the one admitted last, ``B``, at ``s_B``; it arrived at
``a_B >= s_B``, so ``w > a_B - 1 >= s_B - 1``. Every other call ``j`` in the window was admitted
before ``s_B``, arrived at ``a_j >= w > s_B - 1``, and has a recorded finish ``f_j >= a_j`` (the
assumption): at ``s_B`` each was either in flight or had ``f_j > s_B - 1``. That is ``rate``
calls counted against ``B``, so ``B`` was not admitted: a contradiction. (A call that failed
before sending never arrives and only counts conservatively.)

The price is the round trip: a slot is busy for ``1 s + latency``, so the sustained rate is
``rate / (1 + latency)`` (99.5 % of the limit at 5 ms); a call that ends unanswered keeps its
slot ``unanswered_hold`` longer.

Pacing: below the window, each command draws a token from its own token bucket,
``aiolimiter.AsyncLimiter(burst, burst * period / rate)`` (capacity ``burst``, default
``rate // 50`` and at least 2, refilling at ``rate`` per ``period``), so the server sees a steady
stream rather than the whole budget at the top of each second. A bucket alone cannot give the
guarantee above: it counts admissions, not arrivals (``AsyncLimiter(rate, 1)`` lets
``2 x rate`` into one sliding second, and no bucket knows a request is still on its way), so
the window stays on top. A call takes its window slot first and only then its token, so no
token is spent on a call the window holds back; a capacity of at least 2 lets a timer that
fires late catch up (``AsyncLimiter(1, 1 / rate)`` loses ~3 % to that drift).

Waiters are served strictly first come, first served. Cancelling a waiting ``acquire`` costs no
capacity. Limiters are created per client (never at module level), and bind to the running loop
on first use.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Protocol, runtime_checkable

from aiolimiter import AsyncLimiter

from .errors import TimClosedError, TimConfigError, TimEventLoopError

__all__ = [
    "DEFAULT_UNANSWERED_HOLD",
    "LimiterClosedError",
    "RateLimiter",
    "SlidingWindow",
    "SlidingWindowLimiter",
    "Slot",
    "UnlimitedLimiter",
]


class LimiterClosedError(TimClosedError):
    """The limiter was closed while a call waited for a slot (a ``RuntimeError`` too)."""


class Slot(Protocol):
    """What entering :meth:`RateLimiter.acquire` gives the session: one admitted call."""

    def unanswered(self) -> None:
        """The request was sent but the call ends without the server's answer (a timeout, a
        cancellation, the connection lost, a 502/504 from a gateway): it may still arrive at
        the server later, so the slot must stay held longer than for an answered call."""
        ...

    def unsent(self) -> None:
        """The call was admitted but its request was never sent (too little of its timeout was
        left for an answer): nothing can arrive at the server, so the slot may be given back
        at once. Optional: the session calls it only where a slot has it."""
        ...


@runtime_checkable
class RateLimiter(Protocol):
    """What the session needs from a limiter.

    ``acquire(command)`` returns an async context manager: entering it waits until the call may
    be sent and gives a :class:`Slot`; leaving it records that the call finished (its answer, or
    its failure, is back). Another implementation (for example a budget shared through Redis by
    several processes) can replace the in-process one.
    """

    def acquire(self, command: str) -> AbstractAsyncContextManager[Slot]: ...

    async def aclose(self) -> None: ...


#: How long a call that ended without an answer after sending keeps its slot beyond an answered
#: one (seconds): the longest a request is assumed to stay on its way once its call gave up.
#: 10 s covers a proxy or gateway holding a request for seconds (the 1.5 s delaying proxy of
#: the tests needs 1.5 s) and the first five TCP retransmissions at the minimum RTO (0.2 s
#: doubling: 6.2 s); it costs throughput only while calls end unanswered.
DEFAULT_UNANSWERED_HOLD = 10.0


def _check_unanswered_hold(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TimConfigError(
            f"unanswered_hold must be a number of seconds, got {type(value).__name__}"
        )
    if not 0 <= value < float("inf"):
        raise TimConfigError(f"unanswered_hold must be finite and >= 0 seconds, got {value!r}")
    return float(value)


def _check_burst(burst: int | None, rate: int) -> int:
    """``burst``, or its default for ``rate``, checked (the Redis limiter shares it)."""
    if burst is None:
        # At least 2, so a timer that fires late does not push the schedule back (the drift
        # that costs ``AsyncLimiter(1, 1 / rate)`` ~3 %); small, so the stream stays smooth.
        return min(rate, max(2, rate // 50))
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= rate:
        raise TimConfigError(f"burst must be an int between 1 and rate ({rate}), got {burst!r}")
    return burst


class SlidingWindow:
    """The window of one command's budget, free of any clock or event loop.

    ``in_flight`` calls (admitted, not finished) plus the calls whose recorded finish is less
    than ``hold`` ago stay below ``rate`` (the arrival guarantee of the module docstring).

    ``finished`` holds the finish times of answered calls, ``unanswered`` the recorded finishes
    (release + ``unanswered_hold``) of calls that ended without an answer; each in increasing
    order (a constant hold keeps release order), so both are pruned from the left.
    """

    __slots__ = ("finished", "hold", "in_flight", "period", "rate", "unanswered", "unanswered_hold")

    #: Extra time a finished call holds its slot, beyond the period: it absorbs float rounding
    #: and the granularity of the server's own clock (0.1 % of the rate at a 1 s period).
    GUARD = 0.001

    def __init__(
        self, rate: int, period: float = 1.0, *, unanswered_hold: float = DEFAULT_UNANSWERED_HOLD
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise TimConfigError(f"rate must be an int >= 1, got {rate!r}")
        if not 0 < period < float("inf"):
            raise TimConfigError(f"period must be positive seconds, got {period!r}")
        self.rate = rate
        self.period = period
        self.hold = period + min(self.GUARD, period / 100)
        self.unanswered_hold = _check_unanswered_hold(unanswered_hold)
        self.in_flight = 0
        self.finished: collections.deque[float] = collections.deque()
        self.unanswered: collections.deque[float] = collections.deque()

    def _prune(self, now: float) -> None:
        # The same expression as the retry time below, so that a retry time is always > now.
        hold = self.hold
        for records in (self.finished, self.unanswered):
            while records and records[0] + hold <= now:
                records.popleft()

    def held(self, now: float) -> int:
        """Slots held at ``now``: calls in flight plus recorded finishes less than ``hold`` ago."""
        self._prune(now)
        return self.in_flight + len(self.finished) + len(self.unanswered)

    def try_admit(self, now: float) -> float | None:
        """Admit a call at ``now`` and return None, or return the earliest time worth retrying
        (``inf`` when every slot is held by a call in flight)."""
        if self.held(now) < self.rate:
            self.in_flight += 1
            return None
        heads = [records[0] for records in (self.finished, self.unanswered) if records]
        return min(heads) + self.hold if heads else float("inf")

    def finish(self, now: float, *, answered: bool = True) -> None:
        """Record that an admitted call finished at ``now``; ``answered=False`` when it ended
        without an answer after its request was sent (its finish is recorded
        ``unanswered_hold`` later)."""
        self.in_flight -= 1
        if answered:
            records = self.finished
        else:
            records = self.unanswered
            now += self.unanswered_hold
        if records and records[-1] > now:  # a clock that went backwards: keep order
            now = records[-1]
        records.append(now)


class _Bucket(Protocol):
    """The pacing stage: ``aiolimiter.AsyncLimiter``'s interface, as the limiter uses it."""

    def has_capacity(self, amount: float = 1) -> bool: ...

    async def acquire(self, amount: float = 1) -> None: ...


class _CommandLimiter:
    """One command's window, token bucket and FIFO of waiters.

    A call is admitted at once when nobody waits, the window has room and the bucket a token.
    Otherwise it queues, and one admitter task serves the queue in order: it takes a window
    slot (waiting for one to free), then a token (``await bucket.acquire()``), then hands both
    to the first waiter still waiting. Only the admitter ever waits on the bucket, so
    aiolimiter's own (not strictly FIFO) waiter order never matters. A token drawn for a waiter
    that was cancelled meanwhile is kept (``_spare``) for the next call: cancelling costs no
    capacity.
    """

    __slots__ = (
        "_admitter",
        "_loop",
        "_reserved",
        "_room",
        "_spare",
        "_timer",
        "_waiters",
        "bucket",
        "window",
    )

    #: Take the window slot before the token (the benchmarks compare the other order).
    window_first = True

    def __init__(self, window: SlidingWindow, bucket: _Bucket) -> None:
        self.window = window
        self.bucket = bucket
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admitter: asyncio.Task[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._spare = False  # a token drawn and not used
        self._reserved = False  # the admitter holds a window slot while it waits for a token

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if (
            not self._waiters
            and self._admitter is None
            and (self._spare or self.bucket.has_capacity())
            and self.window.try_admit(loop.time()) is None
        ):
            if self._spare:
                self._spare = False
            else:
                await self.bucket.acquire()  # it has capacity: returns without waiting
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if self._admitter is None:
            self._admitter = loop.create_task(self._admit())
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Admitted in the same loop turn as the cancellation: give the slot back and
                # keep the token (not when the future holds close()'s error: no slot then).
                self.window.in_flight -= 1
                self._spare = True
                self._wake_room()
            else:
                with suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    async def _admit(self) -> None:
        """Serve the queue in order (the admitter task; ends when the queue is empty)."""
        window, waiters, bucket = self.window, self._waiters, self.bucket
        assert self._loop is not None
        loop = self._loop
        try:
            while True:
                while waiters and waiters[0].done():  # cancelled while queued
                    waiters.popleft()
                if not waiters:
                    return
                if not self.window_first and not self._spare:
                    await bucket.acquire()
                    self._spare = True
                    continue
                retry_at = window.try_admit(loop.time())
                if retry_at is not None:
                    await self._wait_room(loop, retry_at)
                    continue
                if self._spare:
                    self._spare = False
                else:
                    self._reserved = True
                    await bucket.acquire()
                    self._reserved = False
                while waiters and waiters[0].done():
                    waiters.popleft()
                if waiters:
                    waiters.popleft().set_result(None)
                else:  # everyone left while we waited: keep the token, free the slot
                    window.in_flight -= 1
                    self._spare = True
        finally:
            self._admitter = None

    async def _wait_room(self, loop: asyncio.AbstractEventLoop, retry_at: float) -> None:
        """Until ``retry_at`` (a slot's hold ends) or a call in flight finishes."""
        room = self._room = loop.create_future()
        if retry_at != float("inf"):
            self._timer = loop.call_at(retry_at, self._wake_room)
        try:
            await room
        finally:
            self._room = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _wake_room(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def release(self, answered: bool = True) -> None:
        assert self._loop is not None
        self.window.finish(self._loop.time(), answered=answered)
        self._wake_room()

    def give_back(self) -> None:
        """An admitted call that was never sent: its slot is free at once (nothing arrived)."""
        self.window.in_flight -= 1
        self._wake_room()

    def waiting(self) -> int:
        return sum(1 for fut in self._waiters if not fut.done())

    def close(self) -> None:
        """Stop the admitter and fail every waiter: nothing would ever wake them again."""
        if self._reserved:  # the admitter's slot, taken for a token it will not get now
            self._reserved = False
            self.window.in_flight -= 1
        if self._admitter is not None:
            self._admitter.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(LimiterClosedError("the rate limiter was closed"))


class SlidingWindowLimiter:
    """At most ``rate`` calls of each command in any sliding ``period``, measured at the
    server whatever the network delay under the assumption of the module docstring, paced by one
    ``aiolimiter.AsyncLimiter`` per command: bursts of at most ``burst`` (default
    ``rate // 50``, at least 2), refilling at ``rate`` per ``period``.

    A call that ends without an answer after its request was sent (the session calls
    :meth:`Slot.unanswered`) keeps its slot ``unanswered_hold`` seconds longer (default
    :data:`DEFAULT_UNANSWERED_HOLD`, 10 s): the guarantee assumes such a request reaches the
    server no later than that after its call ended. ``0`` drops that margin (and the guarantee
    with it, under delay).

    One window and one bucket per command, created on the command's first call inside the
    running loop; the limiter binds to that loop (another loop raises
    :class:`~tim_async.errors.TimEventLoopError`)."""

    def __init__(
        self,
        rate: int = 200,
        period: float = 1.0,
        *,
        burst: int | None = None,
        unanswered_hold: float = DEFAULT_UNANSWERED_HOLD,
    ) -> None:
        SlidingWindow(rate, period, unanswered_hold=unanswered_hold)  # validate
        self.rate = rate
        self.period = period
        self.burst = _check_burst(burst, rate)
        self.unanswered_hold = float(unanswered_hold)
        self._commands: dict[str, _CommandLimiter] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _new_bucket(self) -> _Bucket:
        """The pacing stage of one command (the benchmarks substitute others)."""
        return AsyncLimiter(self.burst, self.burst * self.period / self.rate)

    def _new_command(self, window: SlidingWindow, bucket: _Bucket) -> _CommandLimiter:
        return _CommandLimiter(window, bucket)

    def _for(self, command: str) -> _CommandLimiter:
        limiter = self._commands.get(command)
        if limiter is None:
            window = SlidingWindow(self.rate, self.period, unanswered_hold=self.unanswered_hold)
            limiter = self._commands[command] = self._new_command(window, self._new_bucket())
        return limiter

    def window(self, command: str) -> SlidingWindow:
        """The window of one command (for inspection and tests)."""
        return self._for(command).window

    def bucket(self, command: str) -> AsyncLimiter:
        """The token bucket that paces one command (for inspection: ``has_capacity()``)."""
        bucket = self._for(command).bucket
        assert isinstance(bucket, AsyncLimiter)
        return bucket

    def waiting(self, command: str) -> int:
        """How many calls of ``command`` wait for a slot (for inspection and tests)."""
        limiter = self._commands.get(command)
        return 0 if limiter is None else limiter.waiting()

    def acquire(self, command: str) -> AbstractAsyncContextManager[Slot]:
        return self._slot(command)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise TimEventLoopError(
                "this rate limiter (and the client that owns it) is bound to the event loop "
                "that first used it and cannot be used from another one: use one client per "
                "event loop, and create it inside the loop that uses it (e.g. inside the "
                "coroutine given to asyncio.run(), with `async with TimClient(...)`)"
            )
        if self._closed:
            raise LimiterClosedError("the rate limiter was closed")
        return loop

    @asynccontextmanager
    async def _slot(self, command: str) -> AsyncIterator[Slot]:
        loop = self._bind()
        limiter = self._for(command)
        await limiter.acquire(loop)
        slot = _WindowSlot()
        try:
            yield slot
        finally:
            if slot.sent:
                limiter.release(slot.answered)
            else:
                limiter.give_back()

    async def aclose(self) -> None:
        """Calls still waiting for a slot, and any later call, raise
        :class:`LimiterClosedError`."""
        self._closed = True
        for limiter in self._commands.values():
            limiter.close()

    def __repr__(self) -> str:
        return (
            f"SlidingWindowLimiter(rate={self.rate}, period={self.period}, burst={self.burst}, "
            f"unanswered_hold={self.unanswered_hold})"
        )


class _WindowSlot:
    """One admitted call of a :class:`SlidingWindowLimiter`."""

    __slots__ = ("answered", "sent")

    def __init__(self) -> None:
        self.answered = True
        self.sent = True

    def unanswered(self) -> None:
        self.answered = False

    def unsent(self) -> None:
        self.sent = False


class UnlimitedLimiter:
    """No client-side limit (``rate_limit=None``)."""

    def acquire(self, command: str) -> AbstractAsyncContextManager[Slot]:
        return _NULL_SLOT

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "UnlimitedLimiter()"


class _NullSlot:
    __slots__ = ()

    async def __aenter__(self) -> _NullSlot:
        return self

    def unanswered(self) -> None:
        return None

    def unsent(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NULL_SLOT = _NullSlot()
