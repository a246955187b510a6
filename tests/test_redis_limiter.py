"""RedisLimiter against a real redis-server (started here on a free port).

Every call records ``(enter, exit)``: ``time.monotonic()`` just after admission and just before
release. Its arrival at a server lies somewhere in between, so the check that matters is
adversarial: place every arrival where it hurts most and count the arrivals one sliding period
can hold. CLOCK_MONOTONIC is system-wide, so subprocess records compare with ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tim_async.errors import TimClosedError, TimConfigError, TimError, TimLimiterError
from tim_async.limiter import LimiterClosedError, RateLimiter
from tim_async.limiter_redis import PACE_MEMBER, RedisLimiter
from tim_async.testing.redis_server import RedisServer, redis_server

REPO = Path(__file__).resolve().parent.parent
EPS = 0.002  # Redis's clock (realtime) against time.monotonic(): rounding only

Interval = tuple[float, float]


# --------------------------------------------------------------------------- redis-server


@contextlib.contextmanager
def throwaway_redis() -> Iterator[RedisServer]:
    """A throw-away redis-server; the test is skipped without the binary (failed on CI)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required on CI: apt-get install -y redis-server")
        pytest.skip("redis-server not installed: apt-get install redis-server")
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with throwaway_redis() as server:
        yield server.url


@pytest.fixture
def namespace() -> str:
    """One namespace per test, so tests share the server without sharing keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def make_limiter(
    redis_url: str, namespace: str
) -> AsyncIterator[Callable[..., RedisLimiter]]:
    """Each limiter gets its own Redis client, like a separate process."""
    made: list[RedisLimiter] = []

    def make(**options: Any) -> RedisLimiter:
        options.setdefault("namespace", namespace)
        options.setdefault("sdkappid", 1400000000)
        options.setdefault("rate", 5)
        options.setdefault("period", 0.2)
        limiter = RedisLimiter.from_url(redis_url, **options)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


# --------------------------------------------------------------------------- helpers


async def call(
    limiter: RedisLimiter, log: list[Interval], hold: float = 0.0, command: str = "cmd"
) -> None:
    async with limiter.acquire(command):
        enter = time.monotonic()
        await asyncio.sleep(hold)
        log.append((enter, time.monotonic()))


async def hold(
    limiter: RedisLimiter,
    release: asyncio.Event,
    admitted: asyncio.Event | None = None,
    command: str = "cmd",
) -> None:
    """Hold a slot of ``command`` until ``release`` is set; set ``admitted`` once admitted."""
    async with limiter.acquire(command):
        if admitted is not None:
            admitted.set()
        await release.wait()


async def start_holders(
    limiter: RedisLimiter, release: asyncio.Event, n: int, command: str = "cmd"
) -> list[asyncio.Task[None]]:
    """``n`` tasks holding slots of ``command`` until ``release``, returned once all admitted."""
    admitted = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(hold(limiter, release, e, command)) for e in admitted]
    async with asyncio.timeout(5):
        for event in admitted:
            await event.wait()
    return tasks


def max_arrivals(intervals: list[Interval], period: float) -> int:
    """The most calls that can arrive in one window ``[w, w + period)`` when each arrives
    anywhere in its ``[enter, exit]``: the intervals meeting the window. The maximum over ``w``
    is reached at some ``w = exit``."""
    return max(
        sum(1 for enter, exit_ in intervals if enter < w + period and exit_ >= w)
        for _, w in intervals
    )


async def calls_in(admin: aioredis.Redis, key: str) -> dict[str, float]:
    """The calls a budget key holds, member -> score (without the pacing schedule's member)."""
    members = cast(list[tuple[str, float]], await admin.zrange(key, 0, -1, withscores=True))
    return {member: score for member, score in members if member != PACE_MEMBER}


async def redis_now_us(admin: aioredis.Redis) -> int:
    seconds, micros = await admin.time()
    return seconds * 1_000_000 + micros


# --------------------------------------------------------------------------- the budget


async def test_several_limiters_share_one_budget(
    make_limiter: Callable[..., RedisLimiter],
) -> None:
    rate, period = 5, 0.2
    limiters = [make_limiter(rate=rate, period=period) for _ in range(4)]
    log: list[Interval] = []
    rng = random.Random(7)
    await asyncio.gather(
        *(call(lim, log, rng.uniform(0, 0.03)) for lim in limiters for _ in range(6))
    )
    assert len(log) == 24
    # Never more than `rate` arrivals in any sliding period, wherever each call arrived; and the
    # budget is actually used (calls ran concurrently up to the rate).
    assert max_arrivals(log, period) == rate


_CHILD = r"""
import asyncio, json, random, sys, time
from tim_async.limiter_redis import PACE_MEMBER, RedisLimiter
from tim_async.testing.redis_server import RedisServer, redis_server

async def main(url, namespace, calls):
    log = []
    async with RedisLimiter.from_url(
        url, rate=5, period=0.2, namespace=namespace, sdkappid=1
    ) as limiter:
        async def one():
            async with limiter.acquire("cmd"):
                enter = time.monotonic()
                await asyncio.sleep(random.uniform(0, 0.02))
                log.append((enter, time.monotonic()))
        print("ready", flush=True)
        sys.stdin.readline()  # go
        await asyncio.gather(*(one() for _ in range(calls)))
    print(json.dumps(log))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_processes_share_one_budget(
    redis_url: str, namespace: str, make_limiter: Callable[..., RedisLimiter]
) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            redis_url,
            namespace,
            "6",
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
    ours = make_limiter(rate=5, period=0.2, sdkappid=1)  # this process is the third
    log: list[Interval] = []
    outputs, _ = await asyncio.gather(
        asyncio.gather(*(proc.communicate(b"go\n") for proc in procs)),
        asyncio.gather(*(call(ours, log, random.uniform(0, 0.02)) for _ in range(6))),
    )
    assert [proc.returncode for proc in procs] == [0, 0]
    for out, _err in outputs:
        log += [(enter, exit_) for enter, exit_ in json.loads(out)]
    assert len(log) == 18
    assert max_arrivals(log, 0.2) == 5


async def test_call_in_flight_holds_its_slot_beyond_its_lease(
    make_limiter: Callable[..., RedisLimiter], caplog: pytest.LogCaptureFixture
) -> None:
    # lease 0.3 s, calls of 0.9 s: without renewal their slots would free at 0.4 s.
    period = 0.1
    holder = make_limiter(rate=2, period=period, lease=0.3)
    other = make_limiter(rate=2, period=period, lease=0.3)
    held: list[Interval] = []
    late: list[Interval] = []
    holding = asyncio.gather(call(holder, held, 0.9), call(holder, held, 0.9))
    await asyncio.sleep(0.05)
    await call(other, late)
    await holding
    # The newcomer got a slot only one period after a holder finished.
    assert late[0][0] - min(exit_ for _, exit_ in held) >= period - EPS
    assert max_arrivals(held + late, period) == 2
    assert "outlived its lease" not in caplog.text


_CRASHER = r"""
import asyncio, os, sys, time
from tim_async.limiter_redis import PACE_MEMBER, RedisLimiter
from tim_async.testing.redis_server import RedisServer, redis_server

async def main(url, namespace):
    limiter = RedisLimiter.from_url(
        url, rate=2, period=0.1, lease=0.3, namespace=namespace, sdkappid=1
    )
    before = time.monotonic()
    for _ in range(2):
        await limiter.acquire("cmd").__aenter__()
    print(before, flush=True)
    os._exit(0)  # die holding both slots: no release, no renewal

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_crashed_holder_lease_expires(
    redis_url: str,
    namespace: str,
    make_limiter: Callable[..., RedisLimiter],
    admin: aioredis.Redis,
) -> None:
    lease, period = 0.3, 0.1
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHER,
        redis_url,
        namespace,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    before = float(out)
    assert len(await calls_in(admin, f"{namespace}:1:cmd")) == 2  # held by a dead process

    limiter = make_limiter(rate=2, period=period, lease=lease, sdkappid=1)
    log: list[Interval] = []
    await asyncio.wait_for(call(limiter, log), 5.0)  # admitted once the leases lapsed...
    assert log[0][0] - before >= lease + period - EPS  # ...and not before


# --------------------------------------------------------------------------- unanswered calls


async def test_unanswered_call_holds_its_slot_for_the_extra_horizon(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    period, extra = 0.1, 0.6
    limiter = make_limiter(rate=1, period=period, unanswered_hold=extra)
    other = make_limiter(rate=1, period=period, unanswered_hold=extra)  # another process
    key = limiter.key("cmd")
    async with limiter.acquire("cmd") as slot:
        slot.unanswered()  # sent, no answer: the request may still be on its way
        gave_up = time.monotonic()  # before the finish is recorded
    now_us = await redis_now_us(admin)
    # Recorded as finishing `extra` after the call ended, on Redis's clock (TIME read here
    # comes after the release, by a round trip: half of `extra` is slack for it)...
    [score] = (await calls_in(admin, key)).values()
    assert score >= now_us + extra * 1_000_000 / 2
    log: list[Interval] = []
    await asyncio.wait_for(call(other, log), 5)
    # ...so the next call starts a period after that, not a period after the call ended.
    assert log[0][0] - gave_up >= extra + period - EPS


async def test_answered_call_frees_its_slot_a_period_after_it_ended(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    period = 0.1
    limiter = make_limiter(rate=1, period=period, unanswered_hold=30.0)
    async with limiter.acquire("cmd"):
        pass
    ended_us = await redis_now_us(admin)
    [score] = (await calls_in(admin, limiter.key("cmd"))).values()
    assert score <= ended_us  # the hold applies to unanswered calls only
    log: list[Interval] = []
    await asyncio.wait_for(call(limiter, log), 5)  # a period later, not 30 s
    assert len(log) == 1


# --------------------------------------------------------------------------- keys


async def test_commands_have_independent_budgets(
    make_limiter: Callable[..., RedisLimiter],
) -> None:
    limiter = make_limiter(rate=2)
    release = asyncio.Event()
    holders = await start_holders(limiter, release, 2, "a")
    third_admitted = asyncio.Event()
    third = asyncio.create_task(hold(limiter, release, third_admitted, "a"))
    log: list[Interval] = []
    # "b" gets its whole budget while "a" is full...
    await asyncio.wait_for(asyncio.gather(*(call(limiter, log, 0, "b") for _ in range(2))), 5)
    assert len(log) == 2
    # ...and "a" admits nobody more while its two calls are in flight.
    assert not third_admitted.is_set()
    release.set()
    await asyncio.gather(*holders, third)
    assert third_admitted.is_set()


async def test_budgets_are_per_sdkappid(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis, namespace: str
) -> None:
    root = make_limiter(rate=1, sdkappid=None)
    with pytest.raises(TimConfigError, match="bind"):
        root.acquire("cmd")
    app1, app2 = root.bind(1400000001), root.bind(1400000002)
    same_app_elsewhere = make_limiter(rate=1, sdkappid=1400000001)
    assert app1.key("cmd") == f"{namespace}:1400000001:cmd"

    release = asyncio.Event()
    [first] = await start_holders(app1, release, 1)
    log: list[Interval] = []
    await asyncio.wait_for(call(app2, log), 5)  # another app: its own budget
    assert len(log) == 1
    # The same app through another client shares app1's budget: not admitted while it holds.
    elsewhere_admitted = asyncio.Event()
    elsewhere = asyncio.create_task(hold(same_app_elsewhere, release, elsewhere_admitted))
    await asyncio.sleep(0.1)  # time to ask Redis (and be told to wait)
    assert not elsewhere_admitted.is_set()
    assert await admin.exists(f"{namespace}:1400000001:cmd", f"{namespace}:1400000002:cmd") == 2
    release.set()
    await asyncio.gather(first, elsewhere)
    assert elsewhere_admitted.is_set()
    await app1.aclose()
    await app2.aclose()


async def test_keys_expire(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    lease, period = 2.0, 0.3
    limiter = make_limiter(rate=3, period=period, lease=lease)
    key = limiter.key("cmd")
    async with limiter.acquire("cmd"):
        ttl = await admin.pttl(key)
        assert lease * 1000 - 500 < ttl <= (lease + period) * 1000 + 2  # covers the lease
    ttl = await admin.pttl(key)
    assert 0 < ttl <= period * 1000 + 2 or ttl == -2  # finished: kept one period at most
    await asyncio.sleep(period + 0.05)
    assert await admin.exists(key) == 0


# --------------------------------------------------------------------------- cancellation


async def test_cancelling_a_waiter_costs_no_capacity(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    limiter = make_limiter(rate=2, period=0.1)
    key = limiter.key("cmd")
    release = asyncio.Event()
    holders = await start_holders(limiter, release, 2)
    held = set(await calls_in(admin, key))
    assert len(held) == 2
    waiters = [asyncio.create_task(call(limiter, [])) for _ in range(3)]
    await asyncio.sleep(0.15)  # the head polled Redis and sleeps; the others queue locally
    for waiter in waiters:
        waiter.cancel()
    for waiter in waiters:
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert set(await calls_in(admin, key)) == held  # nothing was added
    release.set()
    await asyncio.gather(*holders)
    log: list[Interval] = []
    await asyncio.wait_for(asyncio.gather(call(limiter, log), call(limiter, log)), 5)
    assert len(log) == 2  # the queue still works after the cancellations


async def test_cancelling_a_reserved_waiter_gives_its_slot_back(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    first = make_limiter(rate=1, period=2.0)
    second = make_limiter(rate=1, period=2.0)
    key = first.key("cmd")
    await call(first, [])  # finished: its slot frees 2 s later
    waiter = asyncio.create_task(call(second, []))
    async with asyncio.timeout(5):
        # Redis state of another client: nothing to wait on but the key itself.
        while len(await calls_in(admin, key)) < 2:  # noqa: ASYNC110 (the waiter reserved, and sleeps)
            await asyncio.sleep(0.005)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await second.aclose()  # waits for the give-back
    assert len(await calls_in(admin, key)) == 1


async def test_cancelled_reservation_gives_its_place_in_the_pacing_schedule_back(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    lease = 60.0
    limiter = make_limiter(rate=4, period=40.0, lease=lease)  # paced 10 s apart, burst 2
    key = limiter.key("cmd")
    await call(limiter, [])
    await call(limiter, [])  # the burst: both at once

    async def reserve() -> tuple[asyncio.Task[None], float]:
        """Start a call that pacing makes wait; return it and its reserved start (Redis)."""
        before = await calls_in(admin, key)
        task = asyncio.create_task(call(limiter, []))
        async with asyncio.timeout(5):
            while len(new := await calls_in(admin, key)) == len(before):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        [score] = [score for member, score in new.items() if member not in before]
        return task, score - lease * 1_000_000

    first, start = await reserve()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(5):
        while len(await calls_in(admin, key)) == 3:  # noqa: ASYNC110 (the give-back)
            await asyncio.sleep(0.005)
    # The next call takes the place the cancelled one left, not the one after it.
    second, start_again = await reserve()
    assert start_again == start
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second


async def test_cancelling_during_the_admission_round_trip_gives_the_slot_back(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    limiter = make_limiter(rate=2)
    await call(limiter, [], 0, "warm-up")  # a pooled connection, the scripts loaded
    zrem_before = (await admin.info("commandstats")).get("cmdstat_zrem", {}).get("calls", 0)
    await admin.client_pause(800)  # Redis holds every command for 0.8 s
    waiter = asyncio.create_task(call(limiter, []))
    await asyncio.sleep(0.1)  # the admission script is on its way, unanswered
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await limiter.aclose()  # waits for the script's answer and the give-back
    # The script did admit the cancelled call once Redis resumed, and the slot was removed.
    zrem_after = (await admin.info("commandstats")).get("cmdstat_zrem", {}).get("calls", 0)
    assert zrem_after == zrem_before + 1
    assert await calls_in(admin, limiter.key("cmd")) == {}


async def test_cancelling_an_admitted_call_records_its_finish(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    limiter = make_limiter(rate=1, period=0.1, lease=30.0)
    entered = asyncio.Event()

    async def body() -> None:
        async with limiter.acquire("cmd"):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [score] = (await calls_in(admin, limiter.key("cmd"))).values()
    assert score <= await redis_now_us(admin)  # finished, not in flight for 30 s
    log: list[Interval] = []
    await asyncio.wait_for(call(limiter, log), 5)  # one period later, not 30 s
    assert len(log) == 1


# --------------------------------------------------------------------------- closing


async def test_close_fails_every_waiter_at_once_and_takes_no_slot(
    make_limiter: Callable[..., RedisLimiter], admin: aioredis.Redis
) -> None:
    # A long period: a waiter that kept polling or sleeping would wait 30 s, not fail at once.
    period = 30.0
    other = make_limiter(rate=2, period=period)  # another process sharing the budget
    limiter = make_limiter(rate=2, period=period)
    key = limiter.key("cmd")
    await call(other, [])  # finished: its slot frees 30 s from now
    release = asyncio.Event()
    holders = await start_holders(other, release, 1)  # in flight
    reserved = asyncio.create_task(call(limiter, []))
    async with asyncio.timeout(5):
        while len(await calls_in(admin, key)) < 3:  # noqa: ASYNC110 (Redis state of the waiter)
            await asyncio.sleep(0.005)
    # The next one polls (every slot in flight or reserved); the rest queue behind it.
    polling = [asyncio.create_task(call(limiter, [])) for _ in range(3)]
    await asyncio.sleep(0.2)
    held_before = set(await calls_in(admin, key))
    async with asyncio.timeout(10):  # "at once": well under the 30 s they would sleep
        await limiter.aclose()
        results = await asyncio.gather(reserved, *polling, return_exceptions=True)
    assert all(isinstance(r, LimiterClosedError) for r in results), results
    # The reservation was given back, and no waiter took a slot afterwards.
    await asyncio.sleep(0.1)
    held_after = set(await calls_in(admin, key))
    assert len(held_after) == 2 and held_after < held_before
    release.set()
    await asyncio.gather(*holders)


async def test_closing_the_owner_fails_the_waiters_of_its_views(
    make_limiter: Callable[..., RedisLimiter],
) -> None:
    owner = make_limiter(rate=1, period=30.0, sdkappid=None)
    view = owner.bind(1400000000)
    await call(view, [])  # its slot frees 30 s from now
    waiter = asyncio.create_task(call(view, []))
    await asyncio.sleep(0.1)
    async with asyncio.timeout(10):
        await owner.aclose()
        with pytest.raises(LimiterClosedError):
            await waiter
    with pytest.raises(TimClosedError):
        view.acquire("cmd")


# --------------------------------------------------------------------------- Redis failing


async def test_unreachable_redis_raises_a_typed_error() -> None:
    with throwaway_redis() as server:
        pass  # stopped: nothing listens at its URL any more
    limiter = RedisLimiter.from_url(server.url, sdkappid=1)
    sent = False
    with pytest.raises(TimLimiterError) as info:
        async with limiter.acquire("cmd"):
            sent = True
    assert not sent
    assert isinstance(info.value, TimError)
    assert isinstance(info.value.__cause__, RedisConnectionError)
    assert "tim_async:1:cmd" in str(info.value)
    await limiter.aclose()


async def test_redis_dying_mid_call_keeps_the_outcome_then_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with throwaway_redis() as server:
        limiter = RedisLimiter.from_url(server.url, sdkappid=1)
        with caplog.at_level(logging.WARNING, logger="tim_async.limiter_redis"):
            async with limiter.acquire("cmd"):
                server.stop()  # the call's answer is in; recording its finish will fail
                outcome = "answer"
        assert outcome == "answer"  # not replaced by an exception
        assert "could not record the finish" in caplog.text
        with pytest.raises(TimLimiterError) as info:
            async with limiter.acquire("cmd"):
                pass
        assert isinstance(info.value.__cause__, RedisConnectionError)
        await limiter.aclose()


# --------------------------------------------------------------------------- API


async def test_configuration_protocol_and_close(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    bad_options: list[dict[str, Any]] = [
        {"rate": 0},
        {"rate": 2.5},
        {"period": 0},
        {"period": float("inf")},
        {"lease": -1},
        {"lease": float("inf")},
        {"jitter": -0.1},
        {"jitter": float("inf")},
        {"namespace": "a:b"},
        {"burst": 0},
        {"rate": 5, "burst": 6},
        {"unanswered_hold": -1},
        {"unanswered_hold": float("inf")},
    ]
    for bad in bad_options:
        with pytest.raises(TimConfigError):
            RedisLimiter(client, **bad)
    limiter = RedisLimiter(client, sdkappid=1)
    assert isinstance(limiter, RateLimiter)
    assert (limiter.burst, limiter.unanswered_hold) == (4, 10.0)  # the in-process defaults
    with pytest.raises(TimConfigError):
        limiter.bind(-1)
    await limiter.aclose()
    with pytest.raises(LimiterClosedError):  # as the in-process limiter's later calls
        limiter.acquire("cmd")
    assert await client.ping()  # a client passed in is not closed by the limiter
    await client.aclose()

    async with RedisLimiter.from_url(redis_url, sdkappid=1) as owned:
        await call(owned, [])
    with pytest.raises(TimClosedError):
        owned.acquire("cmd")
