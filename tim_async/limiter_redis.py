"""A rate limiter shared by several processes (or hosts) through Redis.

Needs the ``redis`` extra (``pip install tim-async[redis]``); nothing else in tim_async imports
redis.

:class:`RedisLimiter` gives the guarantee of :class:`tim_async.limiter.SlidingWindowLimiter`
(read its module docstring) to every process that shares one Redis and one SDKAppID: at most
``rate`` calls of one REST command *arrive* at the server in any sliding ``period``, whatever the
network delay. It keeps the same accounting, in Redis instead of in memory: a call holds a slot
from the moment it is admitted until ``period`` after it finished.

Storage: one sorted set per command, key ``{namespace}:{sdkappid}:{command}``. A member is one
call; its score is the call's finish time in microseconds of the Redis server's clock. A call in
flight is stored with the finish time it is *assumed* to have if its process died: its start
plus ``lease`` (renewed while the call runs, see below). A member counts while its score is
greater than ``now - period``.

Admission is one Lua script, atomic in Redis: read ``TIME``, drop members whose score is
``<= now - period``, then

* fewer than ``rate`` members: add the new one with score ``now + lease``; the call may go now;
* else, if the slot that frees next belongs to a finished call (score ``f <= now``), the call is
  admitted for ``start = f + period`` (a reservation, at most one period ahead): its member is added
  with score ``start + lease`` and the script returns ``start - now``; the caller sleeps that long
  and sends. Later requests see the reservation and reserve the following slots;
* else every slot is held by a call in flight (or reserved), none can free before a period from
  now: the script admits nothing and the caller asks again after ``period`` (plus jitter).

Leaving the slot runs a second script that sets the member's score to Redis's ``TIME``
(finished).

Why the arrival guarantee holds across processes: the proof in :mod:`tim_async.limiter` uses
only (1) a call is sent after its start ``s`` and its recorded finish ``e`` comes after its
answer, so its arrival lies in ``[s, e]``; and (2) starts are decided one at a time, each
decision counting every earlier call whose ``[s, e]`` can meet the sliding period that ends at the
new start (``e`` unknown yet means "in flight", counted). A reservation is decided at ``now`` for
a start ``s >= now``: the only calls it must not count are those finished by ``s - period``, and
those are exactly the ones it skips; the caller sleeps ``s - now`` *after* the script's answer
came back, so it sends after ``s``. Every time is read from one clock (Redis's ``TIME``, inside
the script) and measured as a duration on the client, so the clocks of the client hosts do not
matter, and the scripts run one at a time, so (2) holds across any number of processes. Only
Redis's clock stepping *forward* (an NTP step, a failover to a replica with another clock) or a
failover that loses recent writes can let extra calls through, for at most one period. (Clock
*rates* differing by a few parts per million are ignored, as by the in-process limiter.)

Leases: a process that dies while its calls are in flight never records their finish. Their
members stop counting ``lease + period`` after their start or last renewal. A live slot is
renewed every ``lease / 3`` (a timer per call; a call of a few milliseconds never renews), so a
call may run longer than ``lease`` (a slow answer) without losing its slot; the lease only
bounds how long a crashed process blocks capacity. If the event loop is blocked for longer
than the lease, the renewal (or the release) puts the member back and logs a warning.

Waiting: in each process, the waiters of one command queue in FIFO order behind an
:class:`asyncio.Lock` held only while asking Redis; a waiter that got a reservation leaves the
queue and sleeps, so the next one reserves the following slot at once. Reservations are granted in
the order the requests reach Redis, so across processes it is first come, first served too; no
waiter can be starved. Only polls (every slot in flight) sleep an extra random ``jitter``, so that
the heads of several processes do not all ask at the same instant; a head polls at least once a
period, so it asks before any slot freed by a finishing call comes free. In the saturated steady
state each call costs one script run, and a freed slot is taken when it frees, late only by the
script's answer time and the timer's lateness, without any race between processes.

Cancellation: cancelling a waiting ``acquire`` costs no capacity: a reservation is removed
again, and if the admission script is already on its way to Redis when the task is cancelled,
the script is allowed to finish and a slot it granted is removed (the call was never sent).
Cancelling a call that was admitted (while it runs) still records its finish.

Redis unreachable or failing: :class:`TimLimiterError` (a :class:`tim_async.errors.TimError`)
from the admission, with the redis-py exception as ``__cause__``; the call is not sent. There is
no silent fallback to an in-process limiter: a process cannot know how much of the shared budget
the others are using, and admissions it made while Redis was away would be invisible to the
others once it is back. A failure to *record the finish* is only logged: the slot is already used,
the call's outcome is not lost, and the lease frees the slot. redis-py's own retry policy (set on
the client you pass, or through ``from_url(..., retry=...)``) applies before the error is raised.

Every process sharing a budget must use the same ``rate``, ``period`` and ``namespace``.
Each script touches a single key, so the limiter also works with Redis Cluster key distribution.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tim_async.errors import TimClosedError, TimConfigError, TimLimiterError

__all__ = ["RedisLimiter", "TimLimiterError"]

logger = logging.getLogger(__name__)


# Scores are integer microseconds of Redis's clock (exact in a Lua double up to 2**53, year
# 2255). Numbers passed to redis.call are formatted with 17 digits by Redis, so they stay exact;
# never build a score with `..` (that uses Lua's 14-digit tostring).
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local member = ARGV[1]
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function expire()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.floor((tonumber(last[2]) + period - now) / 1000) + 1)
  end
end
"""

# ARGV: member, period_us, rate, lease_us. Returns {1, delay}: admitted, start after `delay`
# microseconds (0: now); or {0, delay}: not admitted, ask again after `delay`.
_ADMIT = (
    _PRELUDE
    + """
local rate = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
local count = redis.call('ZCARD', key)
local start = now
if count >= rate then
  -- the slot that frees next: once its score is <= start - period, fewer than rate count
  local nth = redis.call('ZRANGE', key, count - rate, count - rate, 'WITHSCORES')
  local score = tonumber(nth[2])
  if score > now then
    return {0, period}  -- held by a call in flight: it frees a period after it finishes
  end
  start = score + period
end
redis.call('ZADD', key, start + tonumber(ARGV[4]), member)
expire()
return {1, start - now}
"""
)

# ARGV: member, period_us. Records the finish. Returns 1 if the member had lapsed (re-added).
_RELEASE = (
    _PRELUDE
    + """
local added = redis.call('ZADD', key, now, member)
expire()
return added
"""
)

# ARGV: member, period_us, lease_us. Extends a call in flight. Returns 1 if it had lapsed.
_RENEW = (
    _PRELUDE
    + """
local added = redis.call('ZADD', key, now + tonumber(ARGV[3]), member)
expire()
return added
"""
)


class _Shared:
    """What every view of one limiter shares: the client, its scripts, the member ids."""

    __slots__ = ("admit", "client", "closed", "ids", "release", "renew", "tasks", "token")

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.admit = client.register_script(_ADMIT)
        self.release = client.register_script(_RELEASE)
        self.renew = client.register_script(_RENEW)
        self.closed = False  # the client was closed by the limiter that owns it
        self.token = f"{os.getpid():x}:{os.urandom(6).hex()}:"
        self.ids = itertools.count()
        self.tasks: set[asyncio.Task[Any]] = set()  # short Redis work left behind by callers

    def new_member(self) -> str:
        return f"{self.token}{next(self.ids):x}"


class _Command:
    __slots__ = ("key", "lock")

    def __init__(self, key: str) -> None:
        self.key = key
        self.lock = asyncio.Lock()  # the queue of this process's waiters; its head asks Redis


class RedisLimiter:
    """At most ``rate`` calls of each REST command in any sliding ``period`` for one SDKAppID,
    shared by every process using the same Redis and ``namespace`` (see the module docstring
    for the algorithm and its guarantee).

    ``redis_client`` is a ``redis.asyncio.Redis``; the limiter does not close it unless it made
    it (:meth:`from_url`). Keys are ``{namespace}:{sdkappid}:{command}``: pass ``sdkappid`` here
    or get a bound view with :meth:`bind` (the SDK client binds its own SDKAppID). ``lease``
    bounds how long a crashed process can hold a slot (``lease + period``); live calls renew
    it, so it need not exceed the call timeout. ``jitter`` is the random extra sleep, in seconds,
    before a waiter retries.

    Redis unreachable or failing: entering ``acquire`` raises :class:`TimLimiterError` (chained
    to the redis-py error) and the call is not sent; there is no fallback to a local limit.
    Failing to record a finish is logged and left to the lease. Use ``async with`` or
    :meth:`aclose`.
    """

    def __init__(
        self,
        redis_client: Redis,
        *,
        rate: int = 200,
        period: float = 1.0,
        namespace: str = "tim_async",
        sdkappid: int | None = None,
        lease: float = 10.0,
        jitter: float = 0.002,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise TimConfigError(f"rate must be an integer of at least 1, got {rate!r}")
        if not period > 0:
            raise TimConfigError(f"period must be positive, got {period!r}")
        if not lease > 0:
            raise TimConfigError(f"lease must be positive, got {lease!r}")
        if not jitter >= 0:
            raise TimConfigError(f"jitter must not be negative, got {jitter!r}")
        if not namespace or ":" in namespace:
            raise TimConfigError(f"namespace must be non-empty without ':', got {namespace!r}")
        self.rate = rate
        self.period = period
        self.namespace = namespace
        self.sdkappid = sdkappid
        self.lease = lease
        self.jitter = jitter
        self._period_us = max(1, round(period * 1_000_000))
        self._lease_us = max(1, round(lease * 1_000_000))
        self._shared = _Shared(redis_client)
        self._owns_client = False
        self._closed = False
        self._commands: dict[str, _Command] = {}
        self._live: set[_Slot] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        rate: int = 200,
        period: float = 1.0,
        namespace: str = "tim_async",
        sdkappid: int | None = None,
        lease: float = 10.0,
        jitter: float = 0.002,
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
        view._period_us = self._period_us
        view._lease_us = self._lease_us
        view._shared = self._shared
        view._owns_client = False
        view._closed = False
        view._commands = {}
        view._live = set()
        return view

    def key(self, command: str) -> str:
        """The Redis key holding one command's window."""
        if self.sdkappid is None:
            raise TimConfigError(
                "RedisLimiter is not bound to an SDKAppID: pass sdkappid= or use bind(sdkappid)"
            )
        return f"{self.namespace}:{self.sdkappid}:{command}"

    def acquire(self, command: str) -> AbstractAsyncContextManager[_Slot]:
        if self._closed or self._shared.closed:
            raise TimClosedError("the rate limiter is closed")
        state = self._commands.get(command)
        if state is None:
            state = self._commands[command] = _Command(self.key(command))
        return _Slot(self, state, self._shared.new_member())

    async def aclose(self) -> None:
        """Stop renewing leases, finish pending Redis work, and close the client if this
        limiter made it. Calls still in flight keep their slots until their leases lapse."""
        if self._closed:
            return
        self._closed = True
        for slot in list(self._live):
            slot.stop_renewing()
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
            f"RedisLimiter(rate={self.rate}, period={self.period}, "
            f"namespace={self.namespace!r}, sdkappid={self.sdkappid!r}, lease={self.lease})"
        )

    # ------------------------------------------------------------------ internals

    def _track(self, task: asyncio.Task[Any]) -> None:
        tasks = self._shared.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _admit(self, state: _Command, member: str) -> None:
        """Wait until ``member`` is admitted into ``state``'s window and its start time came."""
        async with state.lock:
            while True:
                admitted, delay_us = await self._try_admit(state.key, member)
                if admitted:
                    break
                await asyncio.sleep(delay_us / 1_000_000 + random.uniform(0.0, self.jitter))
        if delay_us:  # a reservation: the next waiter may reserve the following slot meanwhile
            try:
                await asyncio.sleep(delay_us / 1_000_000)
            except asyncio.CancelledError:
                self._track(asyncio.create_task(self._give_back(state.key, member)))
                raise

    async def _try_admit(self, key: str, member: str) -> tuple[bool, int]:
        """One run of the admission script: (admitted, microseconds to wait)."""
        task = asyncio.ensure_future(self._run_admit(key, member))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The script may still admit us after we stopped listening: give that slot back
            # once its answer is in (a removal sent now could reach Redis before the script).
            self._track(asyncio.create_task(self._undo_admit(task, key, member)))
            raise

    async def _run_admit(self, key: str, member: str) -> tuple[bool, int]:
        try:
            admitted, delay_us = await self._shared.admit(
                keys=[key], args=[member, self._period_us, self.rate, self._lease_us]
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
            await self._shared.client.zrem(key, member)
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

    async def _release(self, key: str, member: str, renewing: asyncio.Task[None] | None) -> None:
        if renewing is not None and not renewing.done():
            await asyncio.wait([renewing])  # the finish must reach Redis after the renewal
        if self._shared.closed:
            return
        try:
            lapsed = await self._shared.release(keys=[key], args=[member, self._period_us])
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
        """See :meth:`tim_async.limiter.Slot.unanswered`."""
        self.answered = False

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        limiter = self._limiter
        self.stop_renewing()
        limiter._live.discard(self)
        task = asyncio.create_task(limiter._release(self._state.key, self._member, self._renewing))
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
