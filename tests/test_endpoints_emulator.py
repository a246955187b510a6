"""Every endpoint against the emulator (tim_async.testing.FakeTimServer) through TimClient:
returned values and what the emulator received."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tim_async.client import TimClient
from tim_async.errors import (
    TimNotFoundError,
    TimPagingError,
    TimPremiumRequiredError,
    TimValidationError,
)
from tim_async.models import CounterMode, ExtensionItem, ExtensionList, SetKeyResult
from tim_async.testing import FakeTimServer

GROUP_GET = "openim_msg_ext_http_svc/group_get_key_values"
C2C_GET = "openim_msg_ext_http_svc/get_key_values"


def _client(server: FakeTimServer, **kw: Any) -> TimClient:
    return TimClient(
        server.sdkappid,
        identifier=server.admin,
        secret_key=server.secret_key,
        base_url=server.base_url,
        **kw,
    )


@pytest.fixture
async def env() -> AsyncIterator[tuple[FakeTimServer, TimClient]]:
    async with FakeTimServer(group_attr_write_limit=None) as server, _client(server) as tim:
        yield server, tim


def _bodies(server: FakeTimServer, command: str) -> list[Any]:
    return [request.body for request in server.requests_for(command)]


# --------------------------------------------------------------------------- extension pulls


async def test_group_pull_over_200_keys_at_page_size_200(
    env: tuple[FakeTimServer, TimClient],
) -> None:
    server, tim = env
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    values = {f"key-{i:03}": f"value {i}" for i in range(260)}
    seqs = server.put_group_extensions(gid, seq, values)  # 13 set calls of 20 keys
    result = await tim.msg_ext.group_get_key_values(gid, seq)

    assert isinstance(result, ExtensionList)
    assert result.as_dict() == values
    assert {i.key: (i.value, i.seq) for i in result} == server.group_extensions(gid, seq)
    assert result.latest_seq == seqs[-1] == server.group_extension_meta(gid, seq).latest_seq
    assert result.clear_seq == 0
    # Page 1 holds 200 pairs ending at seq 10 (keys 180-199); page 2 starts there (inclusive).
    assert _bodies(server, GROUP_GET) == [
        {"GroupId": gid, "MsgSeq": seq},
        {"GroupId": gid, "MsgSeq": seq, "StartSeq": 10},
    ]
    assert server.requests[-1].body == {"GroupId": gid, "MsgSeq": seq, "StartSeq": 10}
    assert all(request.ok for request in server.requests)


@pytest.mark.parametrize("page_size", [21, 25, 40, 199, 300])
async def test_group_pull_at_small_page_sizes(
    env: tuple[FakeTimServer, TimClient], page_size: int
) -> None:
    server, tim = env
    server.page_size = page_size
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    values = {f"k{i}": str(i) for i in range(300)}  # the per-message maximum
    server.put_group_extensions(gid, seq, values)
    pages = [page async for page in tim.msg_ext.iter_group_key_values(gid, seq)]

    assert len(pages) == len(server.requests_for(GROUP_GET))
    assert pages[-1].complete and not any(p.complete for p in pages[:-1])
    yielded = [item.key for page in pages for item in page.items]
    assert len(yielded) == 300 == len(set(yielded))  # no pair yielded twice
    assert ExtensionList.from_pages(pages).as_dict() == values
    starts = [body.get("StartSeq", 0) for body in _bodies(server, GROUP_GET)]
    assert starts == sorted(starts)


async def test_group_pull_stuck_when_a_seq_group_fills_a_page(
    env: tuple[FakeTimServer, TimClient],
) -> None:
    server, tim = env
    server.page_size = 20
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.put_group_extensions(gid, seq, {f"k{i}": "v" for i in range(40)})  # 2 seqs of 20
    with pytest.raises(TimPagingError, match="StartSeq=1"):
        await tim.msg_ext.group_get_key_values(gid, seq)
    assert len(server.requests_for(GROUP_GET)) == 2


async def test_group_pull_drops_cleared_pairs(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    server.page_size = 3
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    for i in range(4):
        server.put_group_extensions(gid, seq, {f"old{i}": "x"})
    clear_seq = server.clear_group_extensions(gid, seq)
    server.put_group_extensions(gid, seq, {"new": "y", "old2": "z"})
    assert server.serve_cleared  # the emulator still serves the cleared pairs
    result = await tim.msg_ext.group_get_key_values(gid, seq)
    assert result.as_dict() == {"new": "y", "old2": "z"}
    assert result.clear_seq == clear_seq
    assert result.latest_seq == clear_seq + 1


async def test_group_pull_start_seq_and_early_break(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    server.page_size = 2
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    for i in range(6):
        server.put_group_extensions(gid, seq, {f"k{i}": str(i)})  # seqs 1..6
    result = await tim.msg_ext.group_get_key_values(gid, seq, start_seq=4)
    assert [(i.key, i.seq) for i in result] == [("k3", 4), ("k4", 5), ("k5", 6)]
    assert _bodies(server, GROUP_GET)[0] == {"GroupId": gid, "MsgSeq": seq, "StartSeq": 4}

    server.clear_log()
    async with aclosing(tim.msg_ext.iter_group_key_values(gid, seq)) as pages:
        async for page in pages:
            assert [i.key for i in page.items] == ["k0", "k1"]
            break
    assert len(server.requests) == 1


async def test_c2c_pull(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    server.page_size = 25
    msg_key = server.send_c2c_msg("alice", "bob")
    values = {f"k{i}": str(i) for i in range(45)}
    server.put_c2c_extensions("alice", "bob", msg_key, values)
    result = await tim.msg_ext.get_key_values("bob", msg_key, from_account="alice")
    assert result.as_dict() == values
    assert _bodies(server, C2C_GET)[0] == {
        "From_Account": "alice",
        "To_Account": "bob",
        "MsgKey": msg_key,
    }
    assert len(server.requests_for(C2C_GET)) == 2

    server.clear_log()
    pages = [page async for page in tim.msg_ext.iter_key_values("bob", msg_key, start_seq=3)]
    assert ExtensionList.from_pages(pages).as_dict() == {f"k{i}": str(i) for i in range(40, 45)}
    assert server.requests[-1].body == {"To_Account": "bob", "MsgKey": msg_key, "StartSeq": 3}


async def test_pull_missing_message_is_not_found(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    gid = server.create_group()
    with pytest.raises(TimNotFoundError) as info:
        await tim.msg_ext.group_get_key_values(gid, 999)
    assert info.value.code == 23004
    with pytest.raises(TimNotFoundError):
        await tim.msg_ext.get_key_values("bob", "no-such-key")


async def test_premium_required(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.premium = False
    with pytest.raises(TimPremiumRequiredError) as info:
        await tim.msg_ext.group_get_key_values(gid, seq)
    assert info.value.code == 10008
    with pytest.raises(TimPremiumRequiredError) as info:
        await tim.group_counter.get_group_counter(gid)
    assert info.value.code == 10059


# --------------------------------------------------------------------------- extension writes


@pytest.mark.parametrize("shape", ["nested", "flat"])
async def test_group_set_delete_clear(env: tuple[FakeTimServer, TimClient], shape: str) -> None:
    server, tim = env
    server.set_response_shape = shape
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    ext = tim.msg_ext

    results = await ext.group_set_key_values(gid, seq, {"a": "1", "b": "\u00e9" * 500})
    assert results == [SetKeyResult("a", "1", 1), SetKeyResult("b", "\u00e9" * 500, 1)]
    assert server.requests[-1].body == {
        "GroupId": gid,
        "MsgSeq": seq,
        "OperateType": 1,
        "ExtensionList": [
            {"Key": "a", "Value": "1", "Seq": 0},
            {"Key": "b", "Value": "\u00e9" * 500, "Seq": 0},
        ],
    }
    assert server.group_extensions(gid, seq) == {"a": ("1", 1), "b": ("\u00e9" * 500, 1)}

    results = await ext.group_set_key_values(gid, seq, ["a"], operation="delete")
    assert [r.key for r in results] == ["a"] and all(r.ok for r in results)
    assert server.requests[-1].body["ExtensionList"] == [{"Key": "a", "Value": "", "Seq": 0}]
    assert set(server.group_extensions(gid, seq)) == {"b"}

    await ext.group_set_key_values(gid, seq, operation="clear")
    assert server.requests[-1].body == {"GroupId": gid, "MsgSeq": seq, "OperateType": 3}
    assert server.group_extensions(gid, seq) == {}
    assert len(await ext.group_get_key_values(gid, seq)) == 0


async def test_c2c_set_and_read_back(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    msg_key = server.send_c2c_msg("alice", "bob")
    ext = tim.msg_ext
    await ext.set_key_values("bob", msg_key, {"vote": "yes"}, from_account="alice")
    assert server.requests[-1].body == {
        "From_Account": "alice",
        "To_Account": "bob",
        "MsgKey": msg_key,
        "OperateType": 1,
        "ExtensionList": [{"Key": "vote", "Value": "yes", "Seq": 0}],
    }
    read = await ext.get_key_values("bob", msg_key, from_account="alice")
    assert list(read) == [ExtensionItem("vote", "yes", 1)]
    await ext.set_key_values("bob", msg_key, {"vote": "no"}, operation=1, from_account="alice")
    assert server.c2c_extensions("alice", "bob", msg_key) == {"vote": ("no", 2)}
    await ext.set_key_values("bob", msg_key, ["vote"], operation=2, from_account="alice")
    assert server.c2c_extensions("alice", "bob", msg_key) == {}


async def test_validation_sends_nothing(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    with pytest.raises(TimValidationError, match="at most 20 pairs"):
        await tim.msg_ext.group_set_key_values(gid, seq, {f"k{i}": "v" for i in range(21)})
    with pytest.raises(TimValidationError, match="limit 32 bytes"):
        await tim.group_attr.modify_group_attr(gid, {"k" * 33: "v"})
    with pytest.raises(TimValidationError, match="signed 64-bit"):
        await tim.group_counter.update_group_counter(gid, {"c": 2**63})
    assert server.requests == []


# --------------------------------------------------------------------------- group attributes


async def test_group_attributes(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    gid = server.create_group()
    attr = tim.group_attr

    assert await attr.get_group_attr(gid) == {}
    assert server.requests[-1].command == "group_open_attr_http_svc/get_group_attr"
    assert server.requests[-1].body == {"GroupId": gid}

    assert await attr.modify_group_attr(gid, {"a": "1", "b": "2"}) is None
    assert server.requests[-1].command == "group_open_http_svc/modify_group_attr"
    assert server.requests[-1].body == {
        "GroupId": gid,
        "GroupAttr": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}],
    }
    await attr.modify_group_attr(gid, {"b": "3"})
    assert await attr.get_group_attr(gid) == {"a": "1", "b": "3"}

    await attr.set_group_attr(gid, {"c": "x" * 4000, "d": ""})
    assert server.requests[-1].command == "group_open_http_svc/set_group_attr"
    assert server.group_attrs(gid) == {"c": "x" * 4000, "d": ""}

    await attr.delete_group_attr(gid, ["d"])
    assert server.requests[-1].body == {"GroupId": gid, "GroupAttr": [{"key": "d"}]}
    assert await attr.get_group_attr(gid) == {"c": "x" * 4000}

    with pytest.raises(TimNotFoundError) as info:
        await attr.delete_group_attr(gid, ["nope"])
    assert info.value.code == 10050

    await attr.clear_group_attr(gid)
    assert server.requests[-1].command == "group_open_http_svc/clear_group_attr"
    assert server.requests[-1].body == {"GroupId": gid}
    assert server.group_attrs(gid) == {}


async def test_group_attr_missing_group(env: tuple[FakeTimServer, TimClient]) -> None:
    _, tim = env
    with pytest.raises(TimNotFoundError):
        await tim.group_attr.get_group_attr("@TGS#missing")


# --------------------------------------------------------------------------- group counters


async def test_group_counters(env: tuple[FakeTimServer, TimClient]) -> None:
    server, tim = env
    gid = server.create_group()
    counter = tim.group_counter

    assert await counter.update_group_counter(gid, {"like": 5, "unlike": 1}) == {
        "like": 5,
        "unlike": 1,
    }
    assert server.requests[-1].body == {
        "GroupId": gid,
        "GroupCounter": [{"Key": "like", "Value": 5}, {"Key": "unlike", "Value": 1}],
        "Mode": "Set",
    }
    assert await counter.update_group_counter(gid, {"like": 2}, mode=CounterMode.INCREASE) == {
        "like": 7
    }
    assert server.requests[-1].body["Mode"] == "Increase"
    assert await counter.update_group_counter(gid, {"new": 3}, mode="Decrease") == {"new": -3}
    assert await counter.get_group_counter(gid) == {"like": 7, "unlike": 1, "new": -3}
    assert server.requests[-1].body == {"GroupId": gid}
    assert await counter.get_group_counter(gid, ["like"]) == {"like": 7}
    assert server.requests[-1].body == {"GroupId": gid, "GroupCounterKeys": ["like"]}

    assert await counter.delete_group_counter(gid, ["new"]) is None
    assert server.requests[-1].body == {"GroupId": gid, "GroupCounterKeys": ["new"]}
    assert server.group_counters(gid) == {"like": 7, "unlike": 1}
    await counter.delete_group_counter(gid)
    assert server.requests[-1].body == {"GroupId": gid}
    assert await counter.get_group_counter(gid) == {}

    edges = {"lo": -(2**63), "hi": 2**63 - 1}
    assert await counter.update_group_counter(gid, edges) == edges


# --------------------------------------------------------------------------- paging property


class _Mirror:
    """What the emulator should hold after the same history (pairs served by pulls)."""

    def __init__(self, serve_cleared: bool) -> None:
        self.serve_cleared = serve_cleared
        self.seq = 0
        self.clear_seq = 0
        self.pairs: dict[str, tuple[str, int]] = {}

    def set(self, values: dict[str, str]) -> None:
        self.seq += 1
        for key, value in values.items():
            self.pairs.pop(key, None)
            self.pairs[key] = (value, self.seq)

    def delete(self, keys: list[str]) -> None:
        self.seq += 1
        for key in keys:
            self.pairs.pop(key, None)

    def clear(self) -> None:
        self.seq += 1
        self.clear_seq = self.seq

    def served(self, start_seq: int) -> list[tuple[str, str, int]]:
        rows = [
            (key, value, seq)
            for key, (value, seq) in self.pairs.items()
            if seq >= start_seq and (self.serve_cleared or seq > self.clear_seq)
        ]
        rows.sort(key=lambda row: row[2])
        return rows


def _stuck(rows: list[tuple[str, str, int]], page_size: int) -> bool:
    sizes = Counter(seq for _, _, seq in rows)
    return any(
        size >= page_size and sum(1 for row in rows if row[2] >= seq) > page_size
        for seq, size in sizes.items()
    )


@st.composite
def _histories(draw: st.DrawFn) -> dict[str, Any]:
    keyspace = draw(st.sampled_from([6, 60, 300]))
    serve_cleared = draw(st.booleans())
    mirror = _Mirror(serve_cleared)
    ops = []
    n_ops = draw(st.one_of(st.integers(0, 6), st.integers(8, 40)))
    for kind in draw(st.lists(st.sampled_from("ssssssssddc"), min_size=n_ops, max_size=n_ops)):
        size = draw(st.one_of(st.integers(1, 3), st.integers(1, 20 if kind == "s" else 5)))
        offset = draw(st.integers(0, keyspace - 1))
        keys = [f"k{(offset + i) % keyspace}" for i in range(min(size, keyspace))]
        ops.append((kind, keys))
        if kind == "s":
            mirror.set(dict.fromkeys(keys, ""))
        elif kind == "d":
            mirror.delete(keys)
        else:
            mirror.clear()
    start_seq = draw(st.one_of(st.just(0), st.integers(0, mirror.seq + 1)))
    rows = mirror.served(start_seq)
    largest = max(Counter(seq for _, _, seq in rows).values(), default=1)
    # Page sizes 1..200, often small enough for several pages, often above the largest
    # same-seq group so that the walk can get through.
    page_size = draw(
        st.one_of(
            st.integers(1, 200),
            st.integers(1, max(1, len(rows))),
            st.integers(min(largest + 1, 200), max(largest + 1, min(len(rows) // 2, 200))),
        )
    )
    return {
        "ops": ops,
        "serve_cleared": serve_cleared,
        "page_size": page_size,
        "start_seq": start_seq,
        "group": draw(st.booleans()),
    }


def test_paging_property_over_the_emulator() -> None:
    with asyncio.Runner() as runner:

        async def start() -> tuple[FakeTimServer, TimClient]:
            server = FakeTimServer(rate_limit=None)
            await server.start()
            tim = _client(server, rate_limit=None)
            await tim.__aenter__()
            return server, tim

        server, tim = runner.run(start())
        counter = iter(range(10**9))

        async def one(case: dict[str, Any]) -> None:
            n = next(counter)
            server.serve_cleared = case["serve_cleared"]
            server.page_size = case["page_size"]
            mirror = _Mirror(case["serve_cleared"])
            if case["group"]:
                gid = server.create_group()
                msg_seq = server.send_group_msg(gid)
                put = lambda v: server.put_group_extensions(gid, msg_seq, v)  # noqa: E731
                delete = lambda k: server.delete_group_extensions(gid, msg_seq, k)  # noqa: E731
                clear = lambda: server.clear_group_extensions(gid, msg_seq)  # noqa: E731
                visible = lambda: server.group_extensions(gid, msg_seq)  # noqa: E731
                pages_iter = tim.msg_ext.iter_group_key_values(
                    gid, msg_seq, start_seq=case["start_seq"]
                )
            else:
                msg_key = server.send_c2c_msg(f"a{n}", f"b{n}")
                put = lambda v: server.put_c2c_extensions(f"a{n}", f"b{n}", msg_key, v)  # noqa: E731
                delete = lambda k: server.delete_c2c_extensions(f"a{n}", f"b{n}", msg_key, k)  # noqa: E731
                clear = lambda: server.clear_c2c_extensions(f"a{n}", f"b{n}", msg_key)  # noqa: E731
                visible = lambda: server.c2c_extensions(f"a{n}", f"b{n}", msg_key)  # noqa: E731
                pages_iter = tim.msg_ext.iter_key_values(
                    f"b{n}", msg_key, from_account=f"a{n}", start_seq=case["start_seq"]
                )
            for kind, keys in case["ops"]:
                if kind == "s":
                    values = {key: f"{key}@{mirror.seq + 1}" for key in keys}
                    put(values)
                    mirror.set(values)
                elif kind == "d":
                    delete(keys)
                    mirror.delete(keys)
                else:
                    clear()
                    mirror.clear()
            # The mirror agrees with the emulator's own view.
            assert {k: v for k, v in mirror.pairs.items() if v[1] > mirror.clear_seq} == visible()

            rows = mirror.served(case["start_seq"])
            stuck = _stuck(rows, case["page_size"])
            event(f"stuck={stuck}")
            server.clear_log()
            pages = []
            error: TimPagingError | None = None
            try:
                async with aclosing(pages_iter) as it:
                    async for page in it:
                        pages.append(page)
            except TimPagingError as exc:
                error = exc
            calls = len(server.requests)
            assert calls <= len(rows) + 2
            event(f"pages={min(len(pages), 4)}")
            if stuck:
                assert error is not None
                return
            assert error is None
            result = ExtensionList.from_pages(pages)
            expected = [
                (k, v, s) for k, v, s in rows if s > mirror.clear_seq and s >= case["start_seq"]
            ]
            assert [(i.key, i.value, i.seq) for i in result] == expected
            assert result.latest_seq == mirror.seq
            assert result.clear_seq == mirror.clear_seq

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        )
        @given(_histories())
        def check(case: dict[str, Any]) -> None:
            runner.run(one(case))

        try:
            check()
        finally:

            async def stop() -> None:
                await tim.close()
                await server.close()

            runner.run(stop())
