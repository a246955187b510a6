"""A rate limiter shared by several processes (or hosts) through Redis.

Needs the ``redis`` extra: ``pip install 'tim-async[redis]'`` (from a checkout of the project:
``pip install -e '.[redis]'``). Without redis-py, importing this module raises
:class:`TimMissingExtraError` (a :class:`~tim_async.errors.TimError` and a
``ModuleNotFoundError``) naming that command; nothing else in tim_async imports redis.

:class:`RedisLimiter` gives the guarantee of :class:`tim_async.limiter.SlidingWindowLimiter`
(read its module docstring) to every process that shares one Redis and one SDKAppID: at most
``rate`` calls of one REST command *arrive* at the server in any sliding ``period``, whatever the
network delay (under the assumption stated for unanswered calls below). It keeps the same
accounting, in Redis instead of in memory: a call holds a slot from the moment it is admitted
until ``period`` after it finished; a call that ended without an answer after its request was
sent (timeout, cancellation, connection lost, a 502/504 from a gateway: the session calls
``slot.unanswered()``) counts as finished ``unanswered_hold`` after it ended, because its
request may still be on its way. Admissions are also paced ``period / rate`` apart, on Redis's
clock, with bursts of at most ``burst``: the server sees a steady stream, not the whole budget
at once whenever a batch of slots frees together.

Storage: one sorted set per command, key ``{namespace}:{sdkappid}:{command}``. A member is one
call; its score is, in microseconds of the Redis server's clock, the latest time its request can
arrive: its finish for an answered call, its finish plus ``unanswered_hold`` for an unanswered
one. A call in flight is stored with the finish time it is *assumed* to have if its process died:
its start plus ``lease`` (renewed while the call runs, see below). A member counts while its
score is greater than ``now - period``. One more member, ``pace``, is not a call: its score is
the pacing schedule's next theoretical start (GCRA's TAT), shared by every process.

Admission is one Lua script, atomic in Redis: read ``TIME``, set ``pace`` aside, drop members
whose score is ``<= now - period``, then

* fewer than ``rate`` members: the window allows ``start = now``;
* else, if the slot that frees next belongs to a finished call (score ``f <= now``), the window
  allows ``start = f + period`` (a reservation);
* else every slot is held by a call in flight (or reserved, or unanswered and within its hold),
  none can free before a period from now: the script admits nothing (``pace`` unchanged) and the
  caller asks again after ``period`` (plus jitter).

An admitted call then takes the later of that start and the pacing bound ``tat - (burst - 1) *
period / rate``; ``tat`` becomes ``max(tat, start) + period / rate``. Its member is added with
score ``start + lease`` and the script returns ``start - now``; the caller sleeps that long and
sends. Later requests see the reservation and reserve the following slots. Every member counts
against the window, so at most ``rate`` calls are reserved or in flight at once, and a start is
at most about a period ahead.

Leaving the slot runs a second script that sets the member's score to Redis's ``TIME``
(answered), or to ``TIME + unanswered_hold`` (unanswered).

Why the arrival guarantee holds across processes: the proof in :mod:`tim_async.limiter` uses only
(1) a call is sent after its start ``s`` and arrives, if ever, before its recorded finish ``e``
(its score once it left the slot), so its arrival lies in ``[s, e]``; and (2) starts are decided
one at a time, each decision counting every earlier call whose ``[s, e]`` can meet the sliding
period that ends at the new start (``e`` unknown yet means "in flight", counted). (1) holds for an
answered call because its answer came back after its request arrived, and for an unanswered one *if
its request reaches the server within* ``unanswered_hold`` *of the moment the client gave up on it,
or never*: that is the one assumption about the network, the same as
:class:`~tim_async.limiter.SlidingWindowLimiter`'s, with the same default (10 s covers a proxy or
gateway holding a request for seconds, and the first five TCP retransmissions at the minimum RTO;
a request held longer than that can break the guarantee). A decision at ``now`` for a start ``s >=
now`` counts every member with a score above ``now - period``, a superset of those above ``s -
period``; a reservation skips exactly the calls finished by ``s - period``; pacing only moves a
start later, which the window allows too; and the caller sleeps ``s - now`` *after* the script's
answer came back, so it sends after ``s``. Decisions are ordered by the scripts, not by their
starts, and the proof needs no more (its last call is the last one decided). Every time is read
from one clock (Redis's ``TIME``, inside the script) and measured as a duration on the client, so
the clocks of the client hosts do not matter, and the scripts run one at a time, so (2) holds
across any number of processes. Only Redis's clock stepping *forward* (an NTP step, a failover to a
replica with another clock) or a failover that loses recent writes can let extra calls through, for
at most one period. (Clock *rates* differing by a few parts per million are ignored, as by the
in-process limiter.)

Leases: a process that dies while its calls are in flight never records their finish. Their
members stop counting ``lease + period`` after their start or last renewal, that is at least
``2/3 * lease`` after the process died: with ``lease >= 1.5 * unanswered_hold`` (the defaults:
15 s and 10 s) a request the dead process left on its way is covered as an unanswered one is. A
live slot is renewed every ``lease / 3`` (a timer per call; a call of a few milliseconds never
renews), so a call may run longer than ``lease`` (a slow answer) without losing its slot; the
lease only bounds how long a crashed process blocks capacity. If the event loop is blocked for
longer than the lease, the renewal (or the release) puts the member back and logs a warning.

Waiting: in each process, the waiters of one command queue in FIFO order behind an
:class:`asyncio.Lock` held only while asking Redis; a waiter that got a reservation leaves the
queue and sleeps, so the next one reserves the following slot at once. Reservations are granted in
the order the requests reach Redis, so across processes it is first come, first served too; no
waiter can be starved. Only polls (every slot in flight) sleep an extra random ``jitter``, so that
the heads of several processes do not all ask at the same instant; a head polls at least once a
period, so it asks before any slot freed by a finishing call comes free. In the saturated steady
state each call costs one script run, and a freed slot is taken when it frees (or when pacing
allows), late only by the script's answer time and the timer's lateness, without any race
between processes.

Cancellation: cancelling a waiting ``acquire`` costs no capacity: a reservation is removed
again, and if the admission script is already on its way to Redis when the task is cancelled,
the script is allowed to finish and a slot it granted is removed (the call was never sent).
The same script moves the pacing schedule back by one ``period / rate``, so that it advances
only for calls actually sent (otherwise callers whose deadline falls in their reservation
sleep, cancelled again and again, would push it ever further ahead and starve everyone); when
other reservations were made after the cancelled one, the next call may share an interval with
one of them, a burst of two at most per cancellation, and the window is unaffected (pacing only
smooths). Cancelling a call that was admitted (while it runs) still records its finish.

Closing: :meth:`RedisLimiter.aclose` fails every call still waiting in this limiter (polling,
queued, or sleeping until a reserved start) at once with
:class:`tim_async.limiter.LimiterClosedError`, and gives their reservations back; none of them
takes a slot of the shared budget afterwards. The limiter that made the Redis client also
fails the waiters of every view :meth:`~RedisLimiter.bind` made of it.

Redis unreachable or failing: :class:`TimLimiterError` (a :class:`tim_async.errors.TimError`)
from the admission, with the redis-py exception as ``__cause__``; the call is not sent. There is
no silent fallback to an in-process limiter: a process cannot know how much of the shared budget
the others are using, and admissions it made while Redis was away would be invisible to the
others once it is back. A failure to *record the finish* is only logged: the slot is already used,
the call's outcome is not lost, and the lease frees the slot. redis-py's own retry policy (set on
the client you pass, or through ``from_url(..., retry=...)``) applies before the error is raised.

Every process sharing a budget must use the same ``rate``, ``period``, ``burst``,
``unanswered_hold``, ``namespace`` and tim_async version. Each script touches a single key, so
the limiter also works with Redis Cluster key distribution.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import weakref
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from tim_async.errors import (
    TimConfigError,
    TimLimiterError,
    TimMissingExtraError,
)
from tim_async.limiter import (
    DEFAULT_UNANSWERED_HOLD,
    LimiterClosedError,
    SlidingWindow,
    _check_burst,
)

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_UNANSWERED_HOLD",
    "PACE_MEMBER",
    "RedisLimiter",
    "TimLimiterError",
    "TimMissingExtraError",
]


try:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError
except ImportError as _exc:  # pragma: no cover - tested in a subprocess that hides redis
    raise TimMissingExtraError(
        "tim_async.limiter_redis needs redis-py, which comes with the 'redis' extra: "
        "pip install 'tim-async[redis]' (from a checkout of tim_async: "
        "pip install -e '.[redis]')",
        name="redis",
    ) from _exc

logger = logging.getLogger(__name__)

#: How long a crashed process's call in flight keeps its slot (plus a period): at least
#: ``1.5 * DEFAULT_UNANSWERED_HOLD``, so that its request, still on its way, is covered.
DEFAULT_LEASE = 15.0

#: The member of each sorted set that holds the pacing schedule (call members contain ':').
PACE_MEMBER = "pace"

# Scores are microseconds of Redis's clock (exact in a Lua double up to 2**53, year 2255).
# Numbers passed to redis.call are formatted with 17 digits by Redis, so they stay exact;
# never build a score with `..` (that uses Lua's 14-digit tostring).
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local member = ARGV[1]
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pace_member = '@PACE@'
local function expire()
  -- a call's member counts until score + period; the pacing schedule matters until its score
  local top = redis.call('ZRANGE', key, -2, -1, 'WITHSCORES')
  local until_ = nil
  for i = 1, #top, 2 do
    local score = tonumber(top[i + 1])
    if top[i] ~= pace_member then score = score + period end
    if until_ == nil or score > until_ then until_ = score end
  end
  if until_ then
    redis.call('PEXPIRE', key, math.max(1, math.floor((until_ - now) / 1000) + 1))
  end
end
""".replace("@PACE@", PACE_MEMBER)

# ARGV: member, period_us, rate, lease_us, interval_us, tolerance_us. Returns {1, delay}:
# admitted, start after `delay` microseconds (0: now); or {0, delay}: not admitted, ask again
# after `delay`.
_ADMIT = (
    _PRELUDE
    + """
local rate = tonumber(ARGV[3])
local pace = redis.call('ZSCORE', key, pace_member)
if pace then
  redis.call('ZREM', key, pace_member)
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
local count = redis.call('ZCARD', key)
local start = now
if count >= rate then
  -- the slot that frees next: once its score is <= start - period, fewer than rate count
  local nth = redis.call('ZRANGE', key, count - rate, count - rate, 'WITHSCORES')
  local score = tonumber(nth[2])
  if score > now then
    -- held by a call in flight (it frees a period after it finishes) or an unanswered one
    if pace then
      redis.call('ZADD', key, pace, pace_member)
    end
    return {0, period}
  end
  start = score + period
end
local interval = tonumber(ARGV[5])
-- pacing (GCRA): not before tat - tolerance; the schedule moves on by one interval
local tat = start
if pace then
  start = math.max(start, math.ceil(tonumber(pace) - tonumber(ARGV[6])))
  tat = math.max(tonumber(pace), start)
end
redis.call('ZADD', key, tat + interval, pace_member)
redis.call('ZADD', key, start + tonumber(ARGV[4]), member)
expire()
return {1, start - now}
"""
)

# ARGV: member, period_us, extra_us. Sets the member's score to TIME + extra_us: the finish of
# a call leaving its slot (extra_us 0, or unanswered_hold for an unanswered call), or the
# renewed lease of a call in flight (extra_us = lease). Returns 1 if the member had lapsed
# (re-added).
_SET_SCORE = (
    _PRELUDE
    + """
local added = redis.call('ZADD', key, now + tonumber(ARGV[3]), member)
expire()
return added
"""
)

# ARGV: member, period_us, interval_us. Removes a slot whose call was never sent, and moves the
# pacing schedule back by one interval, so that it counts only the calls actually sent.
_GIVE_BACK = (
    _PRELUDE
    + """
local removed = redis.call('ZREM', key, member)
if removed == 1 then
  local pace = redis.call('ZSCORE', key, pace_member)
  if pace then
    redis.call('ZADD', key, tonumber(pace) - tonumber(ARGV[3]), pace_member)
  end
end
return removed
"""
)


class _Shared:
    """What every view of one limiter shares: the client, its scripts, the member ids."""

    __slots__ = (
        "admit",
        "client",
        "closed",
        "closing",
        "give_back",
        "ids",
        "release",
        "renew",
        "tasks",
        "token",
        "views",
    )

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.admit = client.register_script(_ADMIT)
        self.release = self.renew = client.register_script(_SET_SCORE)
        self.give_back = client.register_script(_GIVE_BACK)
        self.closing = False  # the limiter that owns the client is closing: no new admissions
        self.closed = False  # the client was closed by the limiter that owns it
        self.token = f"{os.getpid():x}:{os.urandom(6).hex()}:"
        self.ids = itertools.count()
        self.tasks: set[asyncio.Task[Any]] = set()  # short Redis work left behind by callers
        self.views: weakref.WeakSet[RedisLimiter] = weakref.WeakSet()

    def new_member(self) -> str:
        return f"{self.token}{next(self.ids):x}"


class _Command:
    __slots__ = ("key", "lock")

    def __init__(self, key: str) -> None:
        self.key = key
        self.lock = asyncio.Lock()  # the queue of this process's waiters; its head asks Redis


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RedisLimiter:
    """At most ``rate`` calls of each REST command in any sliding ``period`` for one SDKAppID,
    shared by every process using the same Redis and ``namespace``, paced ``period / rate``
    apart with bursts of at most ``burst`` (default ``rate // 50``, at least 2; see the module
    docstring for the algorithm and its guarantee).

    ``redis_client`` is a ``redis.asyncio.Redis``; the limiter does not close it unless it made
    it (:meth:`from_url`). Keys are ``{namespace}:{sdkappid}:{command}``: pass ``sdkappid`` here
    or get a bound view with :meth:`bind` (the SDK client binds its own SDKAppID). ``lease``
    bounds how long a crashed process can hold a slot (``lease + period``); live calls renew
    it, so it need not exceed the call timeout. ``unanswered_hold`` is how much longer than
    ``period`` a call keeps its slot when it ended without an answer after its request was sent
    (the request may still arrive), as for :class:`~tim_async.limiter.SlidingWindowLimiter`.
    ``jitter`` is the random extra sleep, in seconds, before a waiter polls again.

    Redis unreachable or failing: entering ``acquire`` raises :class:`TimLimiterError` (chained
    to the redis-py error) and the call is not sent; there is no fallback to a local limit.
    Failing to record a finish is logged and left to the lease. Use ``async with`` or
    :meth:`aclose`, which fails the calls still waiting at once.
    """

    def __init__(
        self,
        redis_client: Redis,
        *,
        rate: int = 200,
        period: float = 1.0,
        namespace: str = "tim_async",
        sdkappid: int | None = None,
        lease: float = DEFAULT_LEASE,
        jitter: float = 0.002,
        burst: int | None = None,
        unanswered_hold: float = DEFAULT_UNANSWERED_HOLD,
    ) -> None:
        # rate, period and unanswered_hold: the in-process limiter's checks (finite too).
        SlidingWindow(rate, period, unanswered_hold=unanswered_hold)
        if not 0 < lease < float("inf"):
            raise TimConfigError(f"lease must be positive and finite, got {lease!r}")
        if not 0 <= jitter < float("inf"):
            raise TimConfigError(f"jitter must be finite and not negative, got {jitter!r}")
        unanswered_hold = float(unanswered_hold)
        burst = _check_burst(burst, rate)  # the in-process limiter's default and check
        if not namespace or ":" in namespace:
            raise TimConfigError(f"namespace must be non-empty without ':', got {namespace!r}")
        self.rate = rate
        self.period = period
        self.namespace = namespace
        self.sdkappid = sdkappid
        self.lease = lease
        self.jitter = jitter
        self.burst = burst
        self.unanswered_hold = unanswered_hold
        self._period_us = max(1, round(period * 1_000_000))
        self._lease_us = max(1, round(lease * 1_000_000))
        self._hold_us = round(unanswered_hold * 1_000_000)
        interval_us = self._period_us / rate
        # Passed to Lua as text: repr() is exact, so every process computes the same schedule.
        self._pace_args = (repr(interval_us), repr((burst - 1) * interval_us))
        self._shared = _Shared(redis_client)
        self._owns_client = False
        self._init_view()

    def _init_view(self) -> None:
        """The state each view has of its own."""
        self._closed = False
        self._closing: asyncio.Future[None] | None = None  # done once closed; waiters race it
        self._waiting = 0  # calls inside _admit
        self._drained: asyncio.Future[None] | None = None  # done when _waiting drops to 0
        self._commands: dict[str, _Command] = {}
        self._live: set[_Slot] = set()
        self._shared.views.add(self)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        rate: int = 200,
        period: float = 1.0,
        namespace: str = "tim_async",
        sdkappid: int | None = None,
        lease: float = DEFAULT_LEASE,
        jitter: float = 0.002,
        burst: int | None = None,
        unanswered_hold: float = DEFAULT_UNANSWERED_HOLD,
        **redis_options: Any,
    ) -> Self:
        """A limiter with its own client (``redis.asyncio.Redis.from_url(url, **redis_options)``),
        closed by :meth:`aclose`."""
        client = Redis.from_url(url, **redis_options)
        limiter = cls(
            client,
            rate=rate,
            period=period,
            namespace=namespace,
            sdkappid=sdkappid,
            lease=lease,
            jitter=jitter,
            burst=burst,
            unanswered_hold=unanswered_hold,
        )
        limiter._owns_client = True
        return limiter

    def bind(self, sdkappid: int) -> RedisLimiter:
        """A view of this limiter for one SDKAppID, sharing its Redis client. Closing the view
        stops its own work only; the client is closed by the limiter that owns it."""
        if isinstance(sdkappid, bool) or not isinstance(sdkappid, int) or sdkappid < 0:
            raise TimConfigError(f"sdkappid must be a non-negative integer, got {sdkappid!r}")
        view = object.__new__(RedisLimiter)
        view.rate = self.rate
        view.period = self.period
        view.namespace = self.namespace
        view.sdkappid = sdkappid
        view.lease = self.lease
        view.jitter = self.jitter
        view.burst = self.burst
        view.unanswered_hold = self.unanswered_hold
        view._period_us = self._period_us
        view._lease_us = self._lease_us
        view._hold_us = self._hold_us
        view._pace_args = self._pace_args
        view._shared = self._shared
        view._owns_client = False
        view._init_view()
        return view

    def key(self, command: str) -> str:
        """The Redis key holding one command's window."""
        if self.sdkappid is None:
            raise TimConfigError(
                "RedisLimiter is not bound to an SDKAppID: pass sdkappid= or use bind(sdkappid)"
            )
        return f"{self.namespace}:{self.sdkappid}:{command}"

    def acquire(self, command: str) -> AbstractAsyncContextManager[_Slot]:
        self._check_open()
        state = self._commands.get(command)
        if state is None:
            state = self._commands[command] = _Command(self.key(command))
        return _Slot(self, state, self._shared.new_member())

    async def aclose(self) -> None:
        """Fail the calls still waiting (:class:`~tim_async.limiter.LimiterClosedError`) and
        give their reservations back, stop renewing leases, finish pending Redis work, and close
        the client if this limiter made it (failing the waiters of its views too). Calls still
        in flight keep their slots until their leases lapse."""
        if self._closed:
            return
        self._closed = True
        views = [self]
        if self._owns_client:
            self._shared.closing = True
            views += [view for view in self._shared.views if view is not self]
        for view in views:
            view._stop()
        for view in views:  # the waiters fail at once; their give-backs must reach Redis
            await view._wait_drained()
        tasks = self._shared.tasks
        while tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_client and not self._shared.closed:
            self._shared.closed = True
            await self._shared.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"RedisLimiter(rate={self.rate}, period={self.period}, burst={self.burst}, "
            f"namespace={self.namespace!r}, sdkappid={self.sdkappid!r}, lease={self.lease}, "
            f"unanswered_hold={self.unanswered_hold})"
        )

    # ------------------------------------------------------------------ internals

    def _stopped(self) -> bool:
        return self._closed or self._shared.closing

    def _check_open(self) -> None:
        if self._stopped():
            raise LimiterClosedError("the rate limiter was closed")

    def _stop(self) -> None:
        """Wake every waiter of this view (they see the limiter closed) and stop renewals."""
        if self._closing is not None:
            _resolve(self._closing)
        for slot in list(self._live):
            slot.stop_renewing()

    async def _wait_drained(self) -> None:
        if self._waiting:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def _closing_future(self) -> asyncio.Future[None]:
        closing = self._closing
        if closing is None:
            closing = self._closing = asyncio.get_running_loop().create_future()
        return closing

    def _track(self, task: asyncio.Task[Any]) -> None:
        tasks = self._shared.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _pause(self, delay: float, closing: asyncio.Future[None]) -> None:
        """Sleep ``delay`` seconds, or less if the limiter is closed meanwhile (then raise)."""
        loop = asyncio.get_running_loop()
        timer: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _resolve, timer)
        try:
            await asyncio.wait((timer, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            handle.cancel()
            timer.cancel()
        self._check_open()

    async def _admit(self, state: _Command, member: str) -> None:
        """Wait until ``member`` is admitted into ``state``'s window and its start time came."""
        self._waiting += 1
        try:
            await self._wait_admitted(state, member)
        finally:
            self._waiting -= 1
            if not self._waiting and self._drained is not None:
                _resolve(self._drained)

    async def _wait_admitted(self, state: _Command, member: str) -> None:
        closing = self._closing_future()
        # Waiting for the lock needs no wake-up at close: the head fails, releases it, and each
        # next waiter fails at once below.
        async with state.lock:
            while True:
                self._check_open()
                admitted, delay_us = await self._try_admit(state.key, member, closing)
                if admitted:
                    break
                await self._pause(delay_us / 1_000_000 + random.uniform(0.0, self.jitter), closing)
        try:
            if delay_us:  # a reservation: the next waiter may reserve the following slot
                await self._pause(delay_us / 1_000_000, closing)
            else:
                self._check_open()
        except BaseException:  # cancelled or closed: the call is not sent
            self._track(asyncio.create_task(self._give_back(state.key, member)))
            raise

    async def _try_admit(
        self, key: str, member: str, closing: asyncio.Future[None]
    ) -> tuple[bool, int]:
        """One run of the admission script: (admitted, microseconds to wait)."""
        task = asyncio.ensure_future(self._run_admit(key, member))
        try:
            await asyncio.wait((task, closing), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The script may still admit us after we stopped listening: give that slot back
            # once its answer is in (a removal sent now could reach Redis before the script).
            self._track(asyncio.create_task(self._undo_admit(task, key, member)))
            raise
        if not task.done():  # closed while the script is on its way
            self._track(asyncio.create_task(self._undo_admit(task, key, member)))
            raise LimiterClosedError("the rate limiter was closed")
        return task.result()

    async def _run_admit(self, key: str, member: str) -> tuple[bool, int]:
        interval, tolerance = self._pace_args
        try:
            admitted, delay_us = await self._shared.admit(
                keys=[key],
                args=[member, self._period_us, self.rate, self._lease_us, interval, tolerance],
            )
        except RedisError as exc:
            raise TimLimiterError(
                f"rate limiter: Redis failed while admitting a call on {key!r}: {exc}"
            ) from exc
        return bool(int(admitted)), int(delay_us)

    async def _undo_admit(
        self, admit: asyncio.Future[tuple[bool, int]], key: str, member: str
    ) -> None:
        try:
            admitted, _ = await admit
        except Exception:  # the script failed: nothing was admitted
            return
        if admitted:
            await self._give_back(key, member)

    async def _give_back(self, key: str, member: str) -> None:
        """Remove a slot whose call was never sent."""
        if self._shared.closed:
            return
        try:
            await self._shared.give_back(
                keys=[key], args=[member, self._period_us, self._pace_args[0]]
            )
        except RedisError as exc:
            logger.warning(
                "rate limiter: could not give back a slot of %r after a cancellation (%s); "
                "it frees when its lease lapses",
                key,
                exc,
            )

    async def _renew(self, key: str, member: str) -> None:
        if self._shared.closed:
            return
        try:
            lapsed = await self._shared.renew(
                keys=[key], args=[member, self._period_us, self._lease_us]
            )
        except RedisError as exc:
            logger.warning("rate limiter: could not renew a lease on %r: %s", key, exc)
            return
        if int(lapsed):
            logger.warning(
                "rate limiter: a call on %r outlived its lease (%.3g s) before it was renewed; "
                "was the event loop blocked?",
                key,
                self.lease,
            )

    async def _release(
        self, key: str, member: str, renewing: asyncio.Task[None] | None, answered: bool
    ) -> None:
        if renewing is not None and not renewing.done():
            await asyncio.wait([renewing])  # the finish must reach Redis after the renewal
        if self._shared.closed:
            return
        hold_us = 0 if answered else self._hold_us
        try:
            lapsed = await self._shared.release(keys=[key], args=[member, self._period_us, hold_us])
        except RedisError as exc:
            logger.warning(
                "rate limiter: could not record the finish of a call on %r (%s); "
                "its slot frees when its lease lapses",
                key,
                exc,
            )
            return
        if int(lapsed):
            logger.warning(
                "rate limiter: a call on %r outlived its lease (%.3g s); its finish was recorded",
                key,
                self.lease,
            )


class _Slot:
    """The context manager returned by :meth:`RedisLimiter.acquire` (single use)."""

    __slots__ = ("_done", "_limiter", "_member", "_renewing", "_state", "_timer", "answered")

    def __init__(self, limiter: RedisLimiter, state: _Command, member: str) -> None:
        self._limiter = limiter
        self._state = state
        self._member = member
        self._timer: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._done = False
        self.answered = True

    async def __aenter__(self) -> _Slot:
        await self._limiter._admit(self._state, self._member)
        self._limiter._live.add(self)
        self._arm()
        return self

    def unanswered(self) -> None:
        """The request was sent and the call ends without an answer: the finish is recorded
        ``unanswered_hold`` later (see :meth:`tim_async.limiter.Slot.unanswered`)."""
        self.answered = False

    def unsent(self) -> None:
        """The call was never sent. Its slot is still recorded as an answered call's (held one
        period): giving it back early across processes is not worth another script."""
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        limiter = self._limiter
        self.stop_renewing()
        limiter._live.discard(self)
        task = asyncio.create_task(
            limiter._release(self._state.key, self._member, self._renewing, self.answered)
        )
        limiter._track(task)
        # Shielded: a second cancellation of the caller does not stop the finish being recorded.
        await asyncio.shield(task)

    def _arm(self) -> None:
        if self._done:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._limiter.lease / 3, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._done:
            return
        self._renewing = asyncio.create_task(self._renew_then_rearm())
        self._limiter._track(self._renewing)

    async def _renew_then_rearm(self) -> None:
        await self._limiter._renew(self._state.key, self._member)
        self._arm()

    def stop_renewing(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
