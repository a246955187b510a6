"""The emulator's state model (properties), seeding helpers, the pytest fixture and the
standalone process (python -m tim_async.testing)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tim_async.testing import (
    TEST_ADMIN,
    TEST_SDKAPPID,
    TEST_SECRET_KEY,
    EmulatorError,
    FakeTimServer,
)
from tim_async.testing.__main__ import seed
from tim_async.testing.state import Extensions, TimState

# --------------------------------------------------------------------------- extension model

_keys = st.sampled_from([f"k{i}" for i in range(30)])
_op = st.one_of(
    st.tuples(
        st.just("set"),
        st.lists(st.tuples(_keys, st.text(max_size=3)), min_size=1, max_size=20),
    ),
    st.tuples(st.just("delete"), st.lists(_keys, min_size=1, max_size=5)),
    st.tuples(st.just("clear"), st.just(None)),
)


def _apply(ext: Extensions, op: tuple[str, Any]) -> None:
    kind, arg = op
    if kind == "set":
        ext.set(arg)
    elif kind == "delete":
        ext.delete(arg)
    else:
        ext.clear()


def _walk(ext: Extensions, page_size: int) -> tuple[dict[str, tuple[str, int]], int]:
    """The client's walk: StartSeq = highest seq seen, dedupe by key, drop Seq <= ClearSeq."""
    seen: dict[str, tuple[str, int]] = {}
    start = 0
    pages = 0
    while True:
        items, complete = ext.page(start, page_size)
        pages += 1
        for item in items:
            seen[item["Key"]] = (item["Value"], item["Seq"])
        if complete:
            break
        start = max(seq for _, seq in seen.values())
        assert pages < 1000
    return {k: v for k, v in seen.items() if v[1] > ext.clear_seq}, pages


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=25), page_size=st.integers(min_value=21, max_value=60))
def test_extension_model_properties(ops: list[tuple[str, Any]], page_size: int) -> None:
    ext = Extensions()
    for n, op in enumerate(ops, start=1):
        _apply(ext, op)
        assert ext.latest_seq == n  # every write takes exactly one new seq
    seqs = [seq for _, seq in ext.pairs.values()]
    assert seqs == sorted(seqs)  # storage order is seq order
    assert all(0 < seq <= ext.latest_seq for seq in seqs)
    assert ext.clear_seq <= ext.latest_seq
    # a full pull serves every stored pair (cleared ones included), sorted by seq
    items, complete = ext.page(0, 10_000)
    assert complete
    assert [(i["Key"], i["Value"], i["Seq"]) for i in items] == [
        (k, v, s) for k, (v, s) in ext.pairs.items()
    ]
    # the documented client walk reconstructs exactly the visible state
    visible, _ = _walk(ext, page_size)
    assert visible == ext.visible()
    assert ext.meta().visible == len(visible) <= 300
    # without serve_cleared the pull serves the visible pairs only
    items, _ = ext.page(0, 10_000, serve_cleared=False)
    assert {i["Key"]: (i["Value"], i["Seq"]) for i in items} == ext.visible()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=8),
    page_size=st.integers(min_value=1, max_value=25),
    start=st.integers(min_value=0, max_value=10),
)
def test_pages_are_cut_at_page_size(sizes: list[int], page_size: int, start: int) -> None:
    ext = Extensions()
    for n, size in enumerate(sizes):
        ext.set([(f"m{n}k{i}", "v") for i in range(size)])
    expected = [(k, s) for k, (_, s) in ext.pairs.items() if s >= start]
    items, complete = ext.page(start, page_size)
    assert [(i["Key"], i["Seq"]) for i in items] == expected[:page_size]
    assert complete == (len(expected) <= page_size)


def test_put_extensions_splits_into_calls_of_20() -> None:
    server = FakeTimServer()
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    assert server.put_group_extensions(gid, seq, {f"k{i}": str(i) for i in range(45)}) == [1, 2, 3]
    visible = server.group_extensions(gid, seq)
    assert visible["k0"] == ("0", 1) and visible["k20"] == ("20", 2) and visible["k44"] == ("44", 3)
    with pytest.raises(EmulatorError) as info:
        server.put_group_extensions(gid, seq, {"x" * 101: "v"})
    assert info.value.code == 10004
    with pytest.raises(EmulatorError) as info:
        server.put_group_extensions(gid, seq, {f"n{i}": "v" for i in range(256)})
    # 45 + 12 calls of 20 = 285 pairs applied; the 13th call (305 pairs) was refused whole
    assert info.value.code == 10004
    meta = server.group_extension_meta(gid, seq)
    assert (meta.visible, meta.latest_seq) == (285, 15)
    assert server.delete_group_extensions(gid, seq, ["k0"]) == 16
    assert server.clear_group_extensions(gid, seq) == 17
    assert server.group_extensions(gid, seq) == {}
    with pytest.raises(EmulatorError) as info:
        server.group_extensions(gid, 99)
    assert info.value.code == 23004


def test_groups_and_messages() -> None:
    a, b = FakeTimServer(seed=5), FakeTimServer(seed=5)
    ids = [a.create_group() for _ in range(3)]
    assert ids == [b.create_group() for _ in range(3)]  # deterministic with a seed
    assert all(re.fullmatch(r"@TGS#[A-Z0-9]{10}", gid) for gid in ids)
    gid = ids[0]
    assert [a.send_group_msg(gid) for _ in range(3)] == [1, 2, 3]
    assert a.send_group_msg(gid, msg_seq=100) == 100
    assert a.send_group_msg(gid) == 101
    with pytest.raises(ValueError):
        a.send_group_msg(gid, msg_seq=50)
    with pytest.raises(ValueError):
        a.create_group(gid)
    with pytest.raises(ValueError):
        a.create_group(group_type="Nope")
    with pytest.raises(ValueError):
        a.create_group("g" * 49)
    assert a.create_group("mine", "Community") == "mine"
    clock = lambda: 1665388280.5  # noqa: E731
    state = TimState(seed=1, clock=clock)
    keys = [state.send_c2c_msg("62768", "116400") for _ in range(2)]
    assert all(re.fullmatch(r"\d+_\d+_1665388280", key) for key in keys)
    assert keys[0] != keys[1]
    with pytest.raises(ValueError):
        state.send_c2c_msg("a", "b", msg_key=keys[0])


def test_seeding_helpers_check_limits() -> None:
    server = FakeTimServer()
    gid = server.create_group()
    server.set_group_attrs(gid, {"a": "1"})
    assert server.group_attrs(gid) == {"a": "1"}
    with pytest.raises(EmulatorError) as info:
        server.set_group_attrs(gid, {f"k{i}": "v" for i in range(17)})
    assert info.value.code == 10047
    assert server.group_attrs(gid) == {"a": "1"}
    server.set_group_attrs(gid, {})
    assert server.group_attrs(gid) == {}
    server.set_group_counters(gid, {"x": 1})
    with pytest.raises(EmulatorError):
        server.set_group_counters(gid, {"y": 2**63})
    assert server.group_counters(gid) == {"x": 1}


def test_seed_is_deterministic() -> None:
    a, b = FakeTimServer(seed=9), FakeTimServer(seed=9)
    assert seed(a, "@TGS#S", 5, 40) == seed(b, "@TGS#S", 5, 40)
    for msg_seq in range(1, 6):
        pairs = a.group_extensions("@TGS#S", msg_seq)
        assert pairs == b.group_extensions("@TGS#S", msg_seq)
        assert 1 <= len(pairs) <= 40


# --------------------------------------------------------------------------- pytest fixture


async def test_tim_server_fixture(tim_server: FakeTimServer) -> None:
    assert tim_server.sdkappid == TEST_SDKAPPID
    assert tim_server.secret_key == TEST_SECRET_KEY
    assert tim_server.admin == TEST_ADMIN
    assert tim_server.rate_limit == 200 and tim_server.page_size == 200
    assert tim_server.base_url.startswith("http://127.0.0.1:")
    gid = tim_server.create_group()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            tim_server.url("group_open_attr_http_svc/get_group_attr"),
            data=orjson.dumps({"GroupId": gid}),
        ) as resp,
    ):
        assert (await resp.json())["ErrorCode"] == 0


@pytest.mark.tim_server(page_size=7, premium=False, admins=("ops",))
async def test_tim_server_fixture_marker(tim_server: FakeTimServer) -> None:
    assert (tim_server.page_size, tim_server.premium, tim_server.admin) == (7, False, "ops")
