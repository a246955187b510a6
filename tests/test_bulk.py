"""``tim.msg_ext.pull_many``: bulk pulls against the emulator (exactness, failures, laziness,
cleanup, no head-of-line blocking between commands) and its models."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import pytest

from tim_async import C2CMessage, GroupMessage, PullResult, PullStats, TimClient
from tim_async.errors import (
    TimNotFoundError,
    TimTimeoutError,
    TimTransportError,
    TimTypeError,
    TimValidationError,
)
from tim_async.limiter import SlidingWindowLimiter, Slot
from tim_async.models import ExtensionList
from tim_async.retry import RetryPolicy
from tim_async.testing import FakeTimServer, Fault

GROUP_API = "openim_msg_ext_http_svc/group_get_key_values"
C2C_API = "openim_msg_ext_http_svc/get_key_values"
WAIT = 30.0  # generous bound for a test that would otherwise hang when the behaviour breaks


def client(server: FakeTimServer, **options: Any) -> TimClient:
    options.setdefault("rate_limit", None)
    options.setdefault("retry", RetryPolicy(max_retries=3, backoff_base=0.001))
    return TimClient(
        server.sdkappid,
        server.admin,
        secret_key=server.secret_key,
        base_url=server.base_url,
        **options,
    )


def seed(
    server: FakeTimServer, groups: int, c2c: int, rng: random.Random
) -> tuple[list[GroupMessage], list[C2CMessage]]:
    """Group and one-to-one messages, some with more than one page of pairs, some cleared."""
    gid = server.create_group()
    group_targets = []
    for i in range(groups):
        seq = server.send_group_msg(gid)
        count = rng.randint(201, 260) if i % 9 == 4 else rng.randint(0, 30)
        server.put_group_extensions(gid, seq, {f"k{j}": f"g{seq}.{j}" for j in range(count)})
        if i % 7 == 3:
            server.clear_group_extensions(gid, seq)
            server.put_group_extensions(gid, seq, {"after": "clear"})
        group_targets.append(GroupMessage(gid, seq))
    c2c_targets = []
    for i in range(c2c):
        key = server.send_c2c_msg("alice", f"user{i % 5}")
        count = rng.randint(201, 240) if i % 8 == 2 else rng.randint(0, 25)
        server.put_c2c_extensions(
            "alice", f"user{i % 5}", key, {f"e{j}": f"c{i}.{j}" for j in range(count)}
        )
        c2c_targets.append(C2CMessage(f"user{i % 5}", key, from_account="alice"))
    return group_targets, c2c_targets


def expected(server: FakeTimServer, target: GroupMessage | C2CMessage) -> tuple[Any, int, int]:
    if isinstance(target, GroupMessage):
        meta = server.group_extension_meta(target.group_id, target.msg_seq)
        state = server.group_extensions(target.group_id, target.msg_seq)
    else:
        assert target.from_account is not None
        meta = server.c2c_extension_meta(target.from_account, target.to_account, target.msg_key)
        state = server.c2c_extensions(target.from_account, target.to_account, target.msg_key)
    return state, meta.latest_seq, meta.clear_seq


def same(extensions: ExtensionList, want: tuple[Any, int, int]) -> bool:
    state, latest, clear = want
    pulled = {item.key: (item.value, item.seq) for item in extensions.items}
    return (
        pulled == state
        and len(pulled) == len(extensions.items)
        and (extensions.latest_seq, extensions.clear_seq) == (latest, clear)
    )


def connections(tim: TimClient, server: FakeTimServer) -> tuple[int, int]:
    """(client connections in use, server transports open but not idle in the client's pool).

    Private reads: neither aiohttp's connector nor the emulator exposes these counts; the same
    reads are used in tests/test_reliability_cancel.py."""
    http = tim._session._http
    if http is None:  # no call made yet: no connection
        return 0, 0
    assert http.connector is not None
    in_use = len(http.connector._acquired)
    idle = sum(len(c) for c in http.connector._conns.values())
    runner = server._runner
    assert runner is not None and runner.server is not None
    open_ = sum(1 for t in runner.server._connections.values() if not t.is_closing())
    return in_use, open_ - idle


def _is_emulator_task(task: asyncio.Task[Any]) -> bool:
    """A task of the emulator's web server (a connection's handler, or a slow fault still
    sleeping after its client went away): not the client's business."""
    coro: Any = task.get_coro()
    code = getattr(coro, "cr_code", None)
    where = code.co_filename if code is not None else ""
    return "aiohttp/web_" in where or "tim_async/testing" in where or where.endswith("locks.py")


def new_tasks(baseline: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks beyond ``baseline``, except the emulator's (its connections are counted by
    :func:`connections` instead)."""
    return {task for task in asyncio.all_tasks() - baseline if not _is_emulator_task(task)}


async def settle(tim: TimClient, server: FakeTimServer, baseline: set[asyncio.Task[Any]]) -> None:
    """Wait (bounded) until no task beyond ``baseline`` is left and no connection is in use;
    then assert it."""
    for _ in range(500):
        if not new_tasks(baseline) and connections(tim, server) == (0, 0):
            break
        await asyncio.sleep(0.01)
    assert new_tasks(baseline) == set()
    assert connections(tim, server) == (0, 0)


# --------------------------------------------------------------------------- models


def test_models_are_validated_at_construction() -> None:
    with pytest.raises(TimValidationError, match="group_id"):
        GroupMessage("", 1)
    with pytest.raises(TimTypeError, match="group_id"):
        GroupMessage(5, 1)  # type: ignore[arg-type]
    with pytest.raises(TimValidationError, match="msg_seq"):
        GroupMessage("g", 2**32)
    with pytest.raises(TimTypeError, match="msg_seq"):
        GroupMessage("g", True)
    with pytest.raises(TimTypeError, match="to_account"):
        C2CMessage(None, "k")  # type: ignore[arg-type]
    with pytest.raises(TimValidationError, match="msg_key"):
        C2CMessage("bob", "")
    with pytest.raises(TimTypeError, match="from_account"):
        C2CMessage("bob", "k", from_account=7)  # type: ignore[arg-type]
    with pytest.raises(TimTypeError, match="target"):
        PullResult("g", None, None, 0)  # type: ignore[arg-type]
    with pytest.raises(TimTypeError, match="error"):
        PullResult(GroupMessage("g", 1), None, ValueError("x"), 0)  # type: ignore[arg-type]
    message = GroupMessage("g", 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.msg_seq = 2  # type: ignore[misc]
    assert C2CMessage("bob", "k").from_account is None
    assert GroupMessage("g", 1) == GroupMessage("g", 1)


async def test_bad_arguments_raise_before_anything_runs() -> None:
    async with FakeTimServer() as server, client(server) as tim:
        with pytest.raises(TimValidationError, match="concurrency"):
            tim.msg_ext.pull_many([], concurrency=0)
        with pytest.raises(TimTypeError, match="concurrency"):
            tim.msg_ext.pull_many([], concurrency=2.5)  # type: ignore[arg-type]
        with pytest.raises(TimValidationError, match="start_seq"):
            tim.msg_ext.pull_many([], start_seq=-1)
        with pytest.raises(TimTypeError, match="targets"):
            tim.msg_ext.pull_many(5)  # type: ignore[arg-type]
        with pytest.raises(TimTypeError, match="stats"):
            tim.msg_ext.pull_many([], stats={})  # type: ignore[arg-type]
        assert server.requests == []


# --------------------------------------------------------------------------- results


async def test_mixed_targets_with_faults_equal_the_emulator_state() -> None:
    rng = random.Random(3)
    async with FakeTimServer(page_size=100) as server:
        groups, c2cs = seed(server, 60, 40, rng)
        targets: list[GroupMessage | C2CMessage] = [*groups, *c2cs]
        rng.shuffle(targets)
        faults = [Fault.http(502), Fault.code(10002), Fault.DROP_BEFORE_APPLY, None, None]
        server.faults.script(GROUP_API, faults * 4)
        server.faults.script(C2C_API, faults * 3)
        stats = PullStats()
        async with client(server) as tim:
            results = [r async for r in tim.msg_ext.pull_many(targets, concurrency=8, stats=stats)]
        assert sorted(map(repr, (r.target for r in results))) == sorted(map(repr, targets))
        for result in results:
            assert result.error is None, result.error
            assert result.extensions is not None
            assert same(result.extensions, expected(server, result.target)), result.target
        pages = sum(r.pages for r in results)
        assert any(r.pages > 1 for r in results)
        assert stats.done == len(targets) and stats.failed == 0 and stats.ok == len(targets)
        assert stats.pages == pages == sum(stats.calls.values())
        assert stats.pairs == sum(len(r.extensions or ()) for r in results)
        answered = [r for r in server.requests if r.fault is None]
        assert stats.calls[GROUP_API] == sum(1 for r in answered if r.command == GROUP_API)
        assert stats.calls[C2C_API] == sum(1 for r in answered if r.command == C2C_API)
        assert stats.in_flight == 0 and stats.finished is not None


async def test_start_seq_is_applied_to_every_target() -> None:
    async with FakeTimServer() as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        server.put_group_extensions(gid, seq, {"old": "1"})
        (second,) = server.put_group_extensions(gid, seq, {"new": "2"})
        async with client(server) as tim:
            (result,) = [
                r async for r in tim.msg_ext.pull_many([GroupMessage(gid, seq)], start_seq=second)
            ]
        assert result.extensions is not None
        assert [i.key for i in result.extensions.items] == ["new"]


async def test_a_missing_target_fails_alone() -> None:
    async with FakeTimServer() as server:
        (ok,), _ = seed(server, 1, 0, random.Random(1))
        missing = GroupMessage(ok.group_id, ok.msg_seq + 100)
        gone = C2CMessage("nobody", "1_2_3", from_account="alice")
        stats = PullStats()
        async with client(server) as tim:
            results = {
                r.target: r async for r in tim.msg_ext.pull_many([missing, ok, gone], stats=stats)
            }
        assert results[ok].ok and results[ok].extensions is not None
        for target in (missing, gone):
            result = results[target]
            assert not result.ok and result.extensions is None and result.pages == 0
            assert isinstance(result.error, TimNotFoundError) and result.error.code == 23004
        assert (stats.done, stats.failed, stats.ok) == (3, 2, 1)


async def test_a_transport_failure_after_retries_is_a_result() -> None:
    async with FakeTimServer() as server:
        (target,), _ = seed(server, 1, 0, random.Random(1))
        server.faults.script(GROUP_API, [Fault.http(502)] * 3)
        async with client(server, retry=RetryPolicy(max_retries=2, backoff_base=0.001)) as tim:
            (result,) = [r async for r in tim.msg_ext.pull_many([target])]
        assert isinstance(result.error, TimTransportError) and result.error.status == 502
        assert len(server.requests) == 3


async def test_the_client_timeout_bounds_each_target_across_its_pages() -> None:
    """The README: ``timeout`` bounds each target (all its pages). A two-page target whose
    pages take 0.6 s each, each well within the 1 s timeout, fails with the timeout; a deadline
    per page would let it succeed. A busy machine only makes the pages slower."""
    async with FakeTimServer() as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        server.put_group_extensions(gid, seq, {f"k{i}": "v" for i in range(300)})
        server.faults.script(GROUP_API, [Fault.slow(0.6), Fault.slow(0.6)])
        async with client(server, timeout=1.0) as tim:
            (result,) = [r async for r in tim.msg_ext.pull_many([GroupMessage(gid, seq)])]
        assert isinstance(result.error, TimTimeoutError), result
        assert result.pages == 1  # the first page arrived; the second ran out of time
        starts = [entry.body.get("StartSeq", 0) > 0 for entry in server.requests_for(GROUP_API)]
        assert starts[:2] == [False, True]


async def test_a_bug_propagates_and_stops_the_run() -> None:
    """An exception that is not a TimError (here raised by the targets' iterator, and by a
    target of the wrong type) is not a result: it reaches the consumer and the run stops."""
    async with FakeTimServer() as server:
        groups, _ = seed(server, 5, 0, random.Random(1))

        def broken() -> Iterator[GroupMessage]:
            yield from groups[:2]
            raise ValueError("bug in the caller's generator")

        async with client(server) as tim:
            baseline = asyncio.all_tasks()
            with pytest.raises(ValueError, match="bug in the caller"):
                async for _ in tim.msg_ext.pull_many(broken()):
                    pass
            await settle(tim, server, baseline)
            with pytest.raises(TimTypeError, match="targets"):
                async for _ in tim.msg_ext.pull_many([groups[0], "not a target"]):  # type: ignore[list-item]
                    pass
            await settle(tim, server, baseline)


async def test_a_bug_inside_a_worker_propagates() -> None:
    """A worker's exception that is not a TimError (a caller whose call raises RuntimeError,
    wrapping the real session) ends the run with that exception, not an ExceptionGroup."""
    from tim_async.endpoints.msg_ext import MsgExt

    async with FakeTimServer() as server:
        groups, _ = seed(server, 6, 0, random.Random(1))
        async with client(server) as tim:
            session = tim._session  # the real Caller; only its call is wrapped

            class Buggy:
                def operation(self) -> Any:
                    return session.operation()

                async def call(self, api: str, body: dict[str, Any], **kw: Any) -> Any:
                    if body.get("MsgSeq") == groups[3].msg_seq:
                        raise RuntimeError("bug below the engine")
                    return await session.call(api, body, **kw)

            baseline = asyncio.all_tasks()
            with pytest.raises(RuntimeError, match="bug below"):
                async for _ in MsgExt(Buggy()).pull_many(groups, concurrency=2):
                    pass
            await settle(tim, server, baseline)


# --------------------------------------------------------------------------- laziness


async def test_targets_are_read_lazily_from_a_generator() -> None:
    concurrency = 4
    async with FakeTimServer() as server:
        groups, c2cs = seed(server, 3, 2, random.Random(2))
        pool = [*groups, *c2cs]
        produced = 0

        def endless() -> Iterator[GroupMessage | C2CMessage]:
            nonlocal produced
            while True:
                produced += 1
                yield pool[produced % len(pool)]

        taken = 0
        most_held = 0
        async with client(server) as tim:
            results = tim.msg_ext.pull_many(endless(), concurrency=concurrency)
            async with contextlib.aclosing(results):
                async for _ in results:
                    taken += 1
                    most_held = max(most_held, produced - taken)
                    await asyncio.sleep(0.001)  # a slow consumer
                    if taken == 200:
                        break
        # at most 2 x concurrency targets held (in flight, queued, or finished not taken)
        assert most_held <= 2 * concurrency
        assert produced <= taken + 2 * concurrency


async def test_an_async_iterable_is_read_lazily_and_closed() -> None:
    async with FakeTimServer() as server:
        groups, _ = seed(server, 4, 0, random.Random(2))
        produced = 0
        closed = False

        async def source() -> AsyncIterator[GroupMessage]:
            nonlocal produced, closed
            try:
                while True:
                    produced += 1
                    yield groups[produced % len(groups)]
            finally:
                closed = True

        async with client(server) as tim:
            results = tim.msg_ext.pull_many(source(), concurrency=3)
            async with contextlib.aclosing(results):
                async for result in results:
                    assert result.ok
                    assert produced <= 50 + 6
                    if produced >= 50:
                        break
        assert closed


# --------------------------------------------------------------------------- cleanup


async def _one_slow_run(server: FakeTimServer, count: int) -> list[GroupMessage]:
    groups, _ = seed(server, count, 0, random.Random(4))
    server.faults.script(GROUP_API, [None, None, *[Fault.slow(30.0)] * 20])
    return groups


async def test_break_stops_every_worker() -> None:
    async with FakeTimServer() as server:
        groups = await _one_slow_run(server, 30)
        async with client(server) as tim:
            baseline = asyncio.all_tasks()
            async for _ in tim.msg_ext.pull_many(groups, concurrency=8):
                break  # the other workers are still waiting for slow answers
            # a plain break leaves the generator to the garbage collector, which closes it
            await settle(tim, server, baseline)


async def test_aclose_stops_every_worker() -> None:
    async with FakeTimServer() as server:
        groups = await _one_slow_run(server, 30)
        async with client(server) as tim:
            baseline = asyncio.all_tasks()
            results = tim.msg_ext.pull_many(groups, concurrency=8)
            await anext(results)
            assert len(new_tasks(baseline)) > 0
            await results.aclose()  # type: ignore[attr-defined]
            assert new_tasks(baseline) == set()  # at once: aclose waits for the workers
            await settle(tim, server, baseline)


async def test_cancelling_the_consumer_stops_every_worker() -> None:
    async with FakeTimServer() as server:
        groups = await _one_slow_run(server, 30)
        async with client(server) as tim:
            baseline = asyncio.all_tasks()
            got: list[PullResult] = []
            two = asyncio.Event()

            async def consume() -> None:
                async for result in tim.msg_ext.pull_many(groups, concurrency=8):
                    got.append(result)
                    if len(got) == 2:
                        two.set()

            task = asyncio.create_task(consume())
            await two.wait()
            await asyncio.sleep(0.05)  # slow requests are now in flight at the emulator
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await settle(tim, server, baseline | {task})


async def test_a_whole_run_deadline_cleans_up() -> None:
    """The README's advice: ``asyncio.timeout`` around the loop bounds the whole run."""
    async with FakeTimServer() as server:
        groups = await _one_slow_run(server, 30)
        async with client(server) as tim:
            baseline = asyncio.all_tasks()
            done = 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    async for _ in tim.msg_ext.pull_many(groups, concurrency=8):
                        done += 1
            assert done == 2
            await settle(tim, server, baseline)


# --------------------------------------------------------------------------- commands


class GatedLimiter:
    """A limiter that admits one-to-one calls at once and holds group calls until ``open``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.inner = SlidingWindowLimiter(1000)

    @contextlib.asynccontextmanager
    async def _slot(self, command: str) -> AsyncIterator[Slot]:
        if command == GROUP_API:
            await self.gate.wait()
        async with self.inner.acquire(command) as slot:
            yield slot

    def acquire(self, command: str) -> contextlib.AbstractAsyncContextManager[Slot]:
        return self._slot(command)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_one_command_waiting_does_not_hold_up_the_other() -> None:
    """Group targets first, their command's budget exhausted (the gate closed): every
    one-to-one target after them is pulled while all group calls wait."""
    concurrency = 8
    async with FakeTimServer() as server:
        groups, c2cs = seed(server, 12, 20, random.Random(5))
        limiter = GatedLimiter()
        order: list[str] = []
        async with client(server, limiter=limiter) as tim, asyncio.timeout(WAIT):
            async for result in tim.msg_ext.pull_many([*groups, *c2cs], concurrency=concurrency):
                assert result.ok, result.error
                order.append(type(result.target).__name__)
                if order.count("C2CMessage") == len(c2cs):
                    limiter.gate.set()
        assert order == ["C2CMessage"] * len(c2cs) + ["GroupMessage"] * len(groups)


async def test_each_command_has_its_own_workers() -> None:
    """With the group command stalled, one-to-one calls still run ``concurrency`` at once."""
    concurrency = 4
    async with FakeTimServer() as server:
        groups, c2cs = seed(server, 4, 12, random.Random(6))
        server.faults.script(C2C_API, [Fault.slow(0.2)] * len(c2cs))
        limiter = GatedLimiter()
        stats = PullStats()
        most = 0
        async with client(server, limiter=limiter) as tim, asyncio.timeout(WAIT):
            results = tim.msg_ext.pull_many([*groups, *c2cs], concurrency=concurrency, stats=stats)

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max(most, stats.in_flight)
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            count = 0
            async for _ in results:
                count += 1
                if count == 4:
                    limiter.gate.set()
            watcher.cancel()
        # 4 group targets wait at the gate, and up to 4 one-to-one targets run beside them
        assert most == 2 * concurrency
