"""Reliability under injected faults, against the emulator on 127.0.0.1 (no mocks).

* The fault matrix: 200 concurrent full pulls (``tim.msg_ext.group_get_key_values``) of
  messages holding 1 to 300 pairs (page size 200: some pulls take two pages) while the emulator
  injects one kind of fault into 15 % of the requests (fixed seeds). Every list returned equals
  the emulator's state exactly, every failure is a typed :class:`TimError`, most calls succeed,
  no page is attempted more than ``max_retries + 1`` times and a call that fails does so within
  its timeout.
* Server-side rate limiting: the emulator accepts 150 calls/s while the client sends 200/s; the
  client backs off on 60007 and every call completes.

Figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

from tim_async import errors
from tim_async.client import TimClient
from tim_async.models import ExtensionList
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault

PULL = "openim_msg_ext_http_svc/group_get_key_values"
GET_COUNTER = "group_open_http_svc/get_group_counter"

MESSAGES = 200
MAX_RETRIES = 3
TIMEOUT = 1.0
#: A slow answer comes long after the timeout, so "given up at the deadline" needs no tight bound.
SLOW = 30.0
#: Time a failed pull may take beyond its timeout: the first page of a two-page pull (answered
#: at once), scheduling of 200 concurrent tasks on a busy 2-core machine (generous: the property
#: is "no wait for a slow answer", far below ``SLOW``).
SLACK = 4.0

FAULTS = {
    "http_502": Fault.http(502),
    "http_503": Fault.http(503),
    "code_10002": Fault.code(10002),
    "code_60007": Fault.code(60007),
    "drop_before_apply": Fault.DROP_BEFORE_APPLY,
    "drop_after_apply": Fault.DROP_AFTER_APPLY,
    "slow_past_timeout": Fault.slow(SLOW),
    "non_json": Fault.NON_JSON,
    "truncated_json": Fault.TRUNCATED_JSON,
}

#: The public error each fault ends in once the retries are used up.
EXPECTED_ERROR: dict[str, type[errors.TimError]] = {
    "http_502": errors.TimTransportError,
    "http_503": errors.TimTransportError,
    "code_10002": errors.TimServerBusyError,
    "code_60007": errors.TimRateLimitedError,
    "drop_before_apply": errors.TimTransportError,
    "drop_after_apply": errors.TimTransportError,
    "slow_past_timeout": errors.TimTimeoutError,
    "non_json": errors.TimTransportError,
    "truncated_json": errors.TimTransportError,
}


@attrs.define
class Outcome:
    msg_seq: int
    elapsed: float
    result: ExtensionList | None = None
    error: BaseException | None = None


def seed_messages(server: FakeTimServer, rng: random.Random, count: int) -> tuple[str, list[int]]:
    """One group with ``count`` messages holding 1 to 300 pairs each (written 20 per seq)."""
    gid = server.create_group()
    seqs = []
    for _ in range(count):
        seq = server.send_group_msg(gid)
        n = rng.randint(1, 300)
        server.put_group_extensions(
            gid, seq, {f"k{i}-{rng.randrange(10**6)}": f"v{seq}-{i}-ü中" for i in range(n)}
        )
        seqs.append(seq)
    return gid, seqs


def wrong(server: FakeTimServer, gid: str, seq: int, got: ExtensionList) -> str | None:
    """Why ``got`` differs from the emulator's state of message ``seq`` (None: it is exact)."""
    expected = server.group_extensions(gid, seq)
    items = [(item.key, item.value, item.seq) for item in got]
    if len(items) != len(expected):
        return f"{len(items)} pairs, expected {len(expected)}"
    if {key: (value, s) for key, value, s in items} != expected:
        return "keys, values or seqs differ"
    if [s for _, _, s in items] != sorted(s for _, _, s in items):
        return "not sorted by seq"
    meta = server.group_extension_meta(gid, seq)
    if (got.latest_seq, got.clear_seq) != (meta.latest_seq, meta.clear_seq):
        return f"latest/clear seq {got.latest_seq}/{got.clear_seq}, expected {meta}"
    return None


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None, seed=7) as srv:
        yield srv


def fast_client(server: FakeTimServer, **kw: Any) -> TimClient:
    kw.setdefault("rate_limit", None)
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("retry", RetryPolicy(max_retries=MAX_RETRIES, backoff_base=0.01))
    return TimClient(
        server.sdkappid, server.admin, secret_key=TEST_SECRET_KEY, base_url=server.base_url, **kw
    )


async def timed_pull(tim: TimClient, gid: str, seq: int) -> Outcome:
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        result = await tim.msg_ext.group_get_key_values(gid, seq)
    except Exception as exc:
        return Outcome(seq, loop.time() - start, error=exc)
    return Outcome(seq, loop.time() - start, result=result)


# --------------------------------------------------------------------------- the fault matrix


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault_matrix_pulls_are_exact_or_typed_errors(
    server: FakeTimServer, name: str
) -> None:
    fault = FAULTS[name]
    gid, seqs = seed_messages(server, random.Random(20240601), MESSAGES)
    assert any(len(server.group_extensions(gid, s)) > server.page_size for s in seqs)
    server.faults.random({fault: 0.15}, seed=sum(map(ord, name)), commands=[PULL])

    # The 1 s timeout matters for the slow fault only; elsewhere a roomier one keeps a busy
    # machine from turning into timeouts.
    timeout = TIMEOUT if fault.kind == "slow" else 5 * TIMEOUT
    async with fast_client(server, timeout=timeout) as tim:
        outcomes = await asyncio.gather(*(timed_pull(tim, gid, seq) for seq in seqs))
        stats = tim.stats

    # Every list is exactly the emulator's state; every failure is the typed error expected.
    wrong_lists = {
        o.msg_seq: why
        for o in outcomes
        if o.result and (why := wrong(server, gid, o.msg_seq, o.result))
    }
    failed = [o for o in outcomes if o.error is not None]
    untyped = [repr(o.error) for o in failed if not isinstance(o.error, EXPECTED_ERROR[name])]
    assert wrong_lists == {}
    assert untyped == []
    successes = len(outcomes) - len(failed)
    assert successes >= 0.7 * len(outcomes), f"only {successes} of {len(outcomes)} succeeded"

    # Attempts, from the emulator's log: each page (msg_seq, StartSeq) at most max_retries + 1
    # times; a page that failed for good was tried exactly that often, each time faulted.
    log = server.requests_for(PULL)
    assert stats.attempts == len(log)
    per_page: dict[tuple[int, int], list[Fault | None]] = collections.defaultdict(list)
    per_call: collections.Counter[int] = collections.Counter()
    for entry in log:
        key = (entry.body["MsgSeq"], entry.body.get("StartSeq", 0))
        per_page[key].append(entry.fault)
        per_call[key[0]] += 1
    assert max(len(v) for v in per_page.values()) <= MAX_RETRIES + 1
    if fault.kind != "slow":
        for o in failed:
            last_page = max((k for k in per_page if k[0] == o.msg_seq), key=lambda k: k[1])
            assert per_page[last_page] == [fault] * (MAX_RETRIES + 1), (
                o.msg_seq,
                per_page[last_page],
            )
    assert stats.retries == sum(1 for entry in log if entry.fault is not None) - len(failed)

    # A failed call ends within its timeout (a slow answer is given up at the deadline).
    max_failed_elapsed = max((o.elapsed for o in failed), default=0.0)
    assert max_failed_elapsed <= timeout + SLACK
    if fault.kind == "slow" and failed:
        assert min(o.elapsed for o in failed) >= timeout * 0.95  # the timeout, not a hang

    print(
        f"\nFAULT {name:<18} calls={len(outcomes)} ok={successes} typed_errors={len(failed)} "
        f"wrong=0 attempts={len(log)} faults={sum(e.fault is not None for e in log)} "
        f"max_attempts/page={max(len(v) for v in per_page.values())} "
        f"max_attempts/call={max(per_call.values())} "
        f"max_failed_elapsed={max_failed_elapsed:.3f}s"
    )


async def test_timeout_bounds_a_whole_multi_page_pull(server: FakeTimServer) -> None:
    """``timeout`` bounds the whole pull (one deadline shared by its pages): a two-page pull whose
    pages take 0.6 s each, each well within the 1 s timeout, fails with the timeout on its
    second page. A deadline per page (or none) would let it succeed. A busy machine only makes
    the pages slower, so the assertion cannot race."""
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.put_group_extensions(gid, seq, {f"k{i}": "v" for i in range(300)})
    server.faults.script(PULL, [Fault.slow(0.6), Fault.slow(0.6)])
    async with fast_client(server) as tim:
        outcome = await timed_pull(tim, gid, seq)
    assert isinstance(outcome.error, errors.TimTimeoutError), outcome
    log = server.requests_for(PULL)
    assert [entry.body.get("StartSeq", 0) > 0 for entry in log] == [False, True]  # two pages
    assert outcome.elapsed >= TIMEOUT * 0.95  # the deadline, not an early error


# --------------------------------------------------------------------------- server rate limit


async def test_server_rate_limit_below_client_rate_backs_off_and_completes() -> None:
    """Emulator at 150 calls/s, client at 200/s: the surplus is answered 60007; the client backs
    off and retries (defaults: max_retries=3, timeout=10 s) and every call completes."""
    calls = 300  # 1.5 s of the server's budget: enough for a surplus to be rejected and retried
    async with FakeTimServer(rate_limit=150, seed=11) as server:
        gid = server.create_group()
        server.set_group_counters(gid, {"a": 1, "b": 2})
        async with TimClient(
            server.sdkappid,
            server.admin,
            secret_key=TEST_SECRET_KEY,
            base_url=server.base_url,
            rate_limit=200,
        ) as tim:
            loop = asyncio.get_running_loop()
            start = loop.time()
            results = await asyncio.gather(
                *(tim.group_counter.get_group_counter(gid) for _ in range(calls)),
                return_exceptions=True,
            )
            elapsed = loop.time() - start
            stats = tim.stats
        log = server.requests_for(GET_COUNTER)
    failures = [r for r in results if isinstance(r, BaseException)]
    rejected = sum(1 for entry in log if entry.error_code == 60007)
    print(
        f"\nRATE150 calls={calls} ok={calls - len(failures)} attempts={stats.attempts} "
        f"retries={stats.retries} rejected_60007={rejected} by_reason={stats.retried_by_reason} "
        f"elapsed={elapsed:.2f}s"
    )
    assert failures == []
    assert results == [{"a": 1, "b": 2}] * calls
    assert rejected > 0  # the server did push back
    assert stats.retries == rejected == stats.retried_by_reason.get("ErrorCode 60007")
    assert stats.attempts == len(log) == calls + rejected
