"""Writes under injected faults, against the emulator on 127.0.0.1.

Increase/Decrease counter updates are not idempotent: once a request may have reached the server
(connection dropped after sending, a slow answer past the timeout, a gateway error, an unreadable
answer) it is never resent and the caller gets :class:`TimOutcomeUnknownError`. Rejections the
server certainly did not apply (503, busy and rate-limit codes) are resent. Set-mode counter
updates and attribute writes are idempotent and are resent after any of these faults.

Every call is matched with its requests in the emulator's log through a unique amount or value.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import AsyncIterator

import pytest

from tim_async import errors
from tim_async.client import TimClient
from tim_async.models import CounterMode
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault, LoggedRequest

UPDATE = "group_open_http_svc/update_group_counter"
MODIFY_ATTR = "group_open_http_svc/modify_group_attr"
SET_ATTR = "group_open_http_svc/set_group_attr"
DELETE_ATTR = "group_open_http_svc/delete_group_attr"
CLEAR_ATTR = "group_open_http_svc/clear_group_attr"
MAX_RETRIES = 3
TIMEOUT = 1.0

#: Faults after which the request may have been applied: a non-idempotent call stops there.
MAYBE_APPLIED = {
    Fault.DROP_AFTER_APPLY,
    Fault.DROP_BEFORE_APPLY,  # the client cannot tell it from a drop after applying
    Fault.slow(1.5),
    Fault.http(502),
    Fault.TRUNCATED_JSON,
    Fault.NON_JSON,
}
#: Faults the server answers without applying, in a way the client can recognise: resent.
REJECTED = {Fault.http(503), Fault.code(10002), Fault.code(60007)}

MIXED = {
    Fault.DROP_AFTER_APPLY: 0.10,
    Fault.slow(1.5): 0.04,
    Fault.DROP_BEFORE_APPLY: 0.03,
    Fault.http(502): 0.03,
    Fault.TRUNCATED_JSON: 0.03,
    Fault.http(503): 0.05,
    Fault.code(10002): 0.05,
    Fault.code(60007): 0.05,
}


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None, seed=5, group_attr_write_limit=None) as srv:
        yield srv


def make_client(server: FakeTimServer, max_retries: int = MAX_RETRIES) -> TimClient:
    return TimClient(
        server.sdkappid,
        server.admin,
        secret_key=TEST_SECRET_KEY,
        base_url=server.base_url,
        rate_limit=None,
        timeout=TIMEOUT,
        retry=RetryPolicy(max_retries=max_retries, backoff_base=0.01),
    )


def applied(entry: LoggedRequest) -> bool:
    """The emulator ran the command and it succeeded (whatever the client then saw)."""
    return entry.error_code == 0


# --------------------------------------------------------------------------- Increase / Decrease


@pytest.mark.parametrize("mode", [CounterMode.INCREASE, CounterMode.DECREASE])
async def test_relative_counter_updates_are_never_resent(
    server: FakeTimServer, mode: CounterMode
) -> None:
    calls = 300
    gid = server.create_group()
    server.set_group_counters(gid, {"n": 0})
    server.faults.random(MIXED, seed=99, commands=[UPDATE])
    sign = 1 if mode is CounterMode.INCREASE else -1

    timed_out: set[int] = set()

    async def update(amount: int) -> str:
        try:
            latest = await tim.group_counter.update_group_counter(gid, {"n": amount}, mode=mode)
        except errors.TimOutcomeUnknownError as exc:
            if isinstance(exc.__cause__, errors.TimTimeoutError):
                timed_out.add(amount)
            return "unknown"
        except errors.TimError as exc:
            return type(exc).__name__
        assert set(latest) == {"n"}
        return "ok"

    # Amount i identifies call i in the log (sum 1..300 stays far inside int64).
    async with make_client(server) as tim:
        results = await asyncio.gather(*(update(i) for i in range(1, calls + 1)))

    attempts: dict[int, list[LoggedRequest]] = collections.defaultdict(list)
    for entry in server.requests_for(UPDATE):
        (counter,) = entry.body["GroupCounter"]
        attempts[counter["Value"]].append(entry)

    tally = collections.Counter(results)
    applied_amounts = []
    for amount, outcome in enumerate(results, start=1):
        entries = attempts[amount]
        faults = [entry.fault for entry in entries]
        # Only rejections are followed by another attempt: never a resend after a maybe.
        assert all(f in REJECTED for f in faults[:-1]), (amount, faults)
        assert len(entries) <= MAX_RETRIES + 1
        done = [entry for entry in entries if applied(entry)]
        assert len(done) <= 1, (amount, faults)  # never applied twice
        if outcome == "ok":
            assert done == entries[-1:] and faults[-1] is None
        elif outcome == "unknown":
            # A maybe-applied fault, or (on a very busy machine) the timeout.
            assert faults[-1] in MAYBE_APPLIED or amount in timed_out, (amount, faults)
        else:  # rejected until the retries (or the time) ran out: certainly not applied
            assert done == [] and all(f in REJECTED for f in faults), (amount, faults)
        applied_amounts += [amount] * len(done)

    unknown_applied = sum(
        1
        for amount, outcome in enumerate(results, 1)
        if outcome == "unknown" and attempts[amount] and applied(attempts[amount][-1])
    )
    assert sum(tally.values()) == calls
    assert tally["unknown"] > 0 and tally["ok"] > calls // 2
    assert server.group_counters(gid) == {"n": sign * sum(applied_amounts)}
    assert len(applied_amounts) == tally["ok"] + unknown_applied
    print(
        f"\nCOUNTER {mode.value}: calls={calls} ok={tally['ok']} unknown={tally['unknown']} "
        f"other={calls - tally['ok'] - tally['unknown']} ({dict(tally)}) "
        f"applied_by_emulator={len(applied_amounts)} (ok + {unknown_applied} unknown applied) "
        f"attempts={sum(len(v) for v in attempts.values())} final={server.group_counters(gid)}"
    )


@pytest.mark.parametrize(
    "fault", [Fault.DROP_AFTER_APPLY, Fault.slow(1.5)], ids=["drop_after_apply", "slow"]
)
async def test_one_increment_under_a_maybe_applied_fault_is_outcome_unknown(
    server: FakeTimServer, fault: Fault
) -> None:
    gid = server.create_group()
    server.set_group_counters(gid, {"n": 10})
    server.faults.script(UPDATE, [fault])
    async with make_client(server) as tim:
        with pytest.raises(errors.TimOutcomeUnknownError) as caught:
            await tim.group_counter.update_group_counter(gid, {"n": 5}, mode="Increase")
        assert tim.stats.attempts == 1 and tim.stats.retries == 0
        # The client is fine afterwards and the increment was applied exactly once.
        assert await tim.group_counter.get_group_counter(gid) == {"n": 15}
    assert isinstance(caught.value.__cause__, errors.TimTransportError)
    assert [entry.fault for entry in server.requests_for(UPDATE)] == [fault]


# --------------------------------------------------------------------------- Set and attributes


async def test_set_mode_counter_updates_are_resent_and_end_with_the_value(
    server: FakeTimServer,
) -> None:
    gid = server.create_group()
    server.set_group_counters(gid, {"n": 0})
    server.faults.script(UPDATE, [Fault.DROP_AFTER_APPLY, Fault.DROP_AFTER_APPLY, Fault.http(502)])
    async with make_client(server) as tim:
        assert await tim.group_counter.update_group_counter(gid, {"n": 42}) == {"n": 42}
        assert tim.stats.retries == 3
        # Then many Set calls, one after the other, under random maybe-applied faults.
        weights = {f: 0.06 for f in MAYBE_APPLIED if f.kind != "slow"}
        server.faults.random(weights, seed=3, commands=[UPDATE])
        for value in range(1, 61):
            latest = await tim.group_counter.update_group_counter(gid, {"n": value}, mode="Set")
            assert latest == {"n": value}
            assert server.group_counters(gid) == {"n": value}
    log = server.requests_for(UPDATE)
    # Resent after faults that may have applied the write.
    assert sum(1 for e in log if e.fault is Fault.DROP_AFTER_APPLY) >= 3
    assert len(log) > 61


async def test_set_mode_counter_update_past_the_timeout_is_a_timeout_not_unknown(
    server: FakeTimServer,
) -> None:
    """A slow answer eats the whole timeout: no time is left to resend; since resending a Set is
    safe, the error is a plain timeout (the caller may call again)."""
    gid = server.create_group()
    server.faults.script(UPDATE, [Fault.slow(1.5)])
    async with make_client(server) as tim:
        with pytest.raises(errors.TimTimeoutError) as caught:
            await tim.group_counter.update_group_counter(gid, {"n": 7})
        assert not isinstance(caught.value, errors.TimOutcomeUnknownError)
        assert await tim.group_counter.update_group_counter(gid, {"n": 7}) == {"n": 7}
    assert server.group_counters(gid) == {"n": 7}


async def test_attribute_writes_are_resent_and_end_with_the_intended_value(
    server: FakeTimServer,
) -> None:
    gid = server.create_group()
    rng = random.Random(8)
    weights = {f: 0.05 for f in MAYBE_APPLIED | REJECTED if f.kind != "slow"}
    server.faults.random(weights, seed=4, commands=[MODIFY_ATTR, SET_ATTR, CLEAR_ATTR])
    expected: dict[str, str] = {}
    # Enough retries that no write runs out of them (45 % of the requests fail here).
    async with make_client(server, max_retries=10) as tim:
        for i in range(60):
            step = rng.choice(["modify", "modify", "set", "clear"])
            if step == "modify":
                change = {f"k{rng.randrange(16)}": f"v{i}-é"}
                await tim.group_attr.modify_group_attr(gid, change)
                expected.update(change)
            elif step == "set":
                expected = {f"s{j}": f"{i}" for j in range(1 + rng.randrange(3))}
                await tim.group_attr.set_group_attr(gid, expected)
            else:
                await tim.group_attr.clear_group_attr(gid)
                expected = {}
            assert server.group_attrs(gid) == expected, (i, step)
        assert await tim.group_attr.get_group_attr(gid) == expected
        retries = tim.stats.retries
    faulted = [
        e for c in (MODIFY_ATTR, SET_ATTR, CLEAR_ATTR) for e in server.requests_for(c) if e.fault
    ]
    assert retries == len(faulted) > 0
    assert any(e.fault is Fault.DROP_AFTER_APPLY for e in faulted)


async def test_delete_group_attr_resent_after_drop_after_apply_reports_10050(
    server: FakeTimServer,
) -> None:
    """Documented behaviour (README, group attributes): a delete is retried like the other
    attribute writes; when the first attempt was applied and its answer lost, the retry finds
    the key gone and the server answers 10050. The state is right and the error says so."""
    gid = server.create_group()
    server.set_group_attrs(gid, {"a": "1", "b": "2"})
    server.faults.script(DELETE_ATTR, [Fault.DROP_AFTER_APPLY])
    async with make_client(server) as tim:
        with pytest.raises(errors.TimNotFoundError) as info:
            await tim.group_attr.delete_group_attr(gid, ["a"])
    assert info.value.code == 10050
    assert server.group_attrs(gid) == {"b": "2"}
    assert len(server.requests_for(DELETE_ATTR)) == 2


async def test_set_group_attr_with_an_empty_mapping_is_refused_before_sending(
    server: FakeTimServer,
) -> None:
    """The server rejects an empty GroupAttr (10004); the SDK refuses it up front and points to
    clear_group_attr, which removes every attribute."""
    gid = server.create_group()
    server.set_group_attrs(gid, {"a": "1"})
    async with make_client(server) as tim:
        with pytest.raises(errors.TimValidationError, match="clear_group_attr"):
            await tim.group_attr.set_group_attr(gid, {})
        assert server.requests == []
        await tim.group_attr.clear_group_attr(gid)
    assert server.group_attrs(gid) == {}
