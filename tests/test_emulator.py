"""The emulator (tim_async.testing) over real HTTP on 127.0.0.1: the 12 commands against
Tencent's documented samples, every limit and error code, URL/UserSig checks, rate enforcement
and the request log. Raw aiohttp clients, real UserSigs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tim_async.testing import GROUP_TYPES, FakeTimServer
from tim_async.usersig import generate_usersig

EXT = "openim_msg_ext_http_svc"
GET_KV = f"{EXT}/get_key_values"
GROUP_GET_KV = f"{EXT}/group_get_key_values"
SET_KV = f"{EXT}/set_key_values"
GROUP_SET_KV = f"{EXT}/group_set_key_values"
GET_ATTR = "group_open_attr_http_svc/get_group_attr"
MODIFY_ATTR = "group_open_http_svc/modify_group_attr"
SET_ATTR = "group_open_http_svc/set_group_attr"
DELETE_ATTR = "group_open_http_svc/delete_group_attr"
CLEAR_ATTR = "group_open_http_svc/clear_group_attr"
GET_COUNTER = "group_open_http_svc/get_group_counter"
UPDATE_COUNTER = "group_open_http_svc/update_group_counter"
DELETE_COUNTER = "group_open_http_svc/delete_group_counter"

# Tencent's documented samples (a copy of shared/spec/samples/seed-samples.json).
_SAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "data" / "seed-samples.json").read_text(encoding="utf-8")
)
SAMPLE_GROUP_GET_KV: dict[str, Any] = _SAMPLES["group_get_key_values"]
SAMPLE_GET_KV: dict[str, Any] = _SAMPLES["get_key_values"]
SAMPLE_GET_ATTR: dict[str, Any] = _SAMPLES["get_group_attr"]
SAMPLE_UPDATE_COUNTER: dict[str, Any] = _SAMPLES["update_group_counter"]


class Clock:
    """A clock the test moves by hand on top of a real one."""

    def __init__(self, base: Any = time.monotonic) -> None:
        self.base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return float(self.base()) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def mono() -> Clock:
    return Clock(time.monotonic)


@pytest.fixture
def wall() -> Clock:
    # Stopped at the real time (UserSigs the tests sign with the real clock stay valid): it
    # moves only when a test moves it, so an expiry one second away cannot race.
    start = time.time()
    return Clock(lambda: start)


@pytest.fixture
async def server(mono: Clock, wall: Clock) -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(seed=1, monotonic=mono, clock=wall) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    server: FakeTimServer,
    command: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    **query: str | int | None,
) -> dict[str, Any]:
    """POST one request; the emulator answers every API result with HTTP 200 JSON."""
    data = raw if raw is not None else orjson.dumps(body if body is not None else {})
    async with http.post(server.url(command, **query), data=data) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        result: dict[str, Any] = orjson.loads(await resp.read())
    assert set(result) >= {"ActionStatus", "ErrorCode", "ErrorInfo"}
    assert result["ActionStatus"] == ("OK" if result["ErrorCode"] == 0 else "FAIL")
    return result


async def code_of(
    http: aiohttp.ClientSession, server: FakeTimServer, command: str, body: Any = None, **kw: Any
) -> int:
    code: int = (await call(http, server, command, body, **kw))["ErrorCode"]
    return code


def message(server: FakeTimServer, **kw: Any) -> tuple[str, int]:
    gid = server.create_group(**kw)
    return gid, server.send_group_msg(gid)


# =========================================================================== documented samples


async def test_sample_group_get_key_values(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid = server.create_group("@TGS#1YMVAB3IZ")
    assert server.send_group_msg(gid, msg_seq=158) == 158
    server.put_group_extensions(gid, 158, {"key1": "1", "key2": "2"})
    server.put_group_extensions(gid, 158, {"key3": "3"})
    expected = SAMPLE_GROUP_GET_KV["response"]
    resp = await call(http, server, GROUP_GET_KV, SAMPLE_GROUP_GET_KV["requests"][0])
    assert resp == expected
    assert list(resp) == list(expected)  # field order too
    resp = await call(http, server, GROUP_GET_KV, SAMPLE_GROUP_GET_KV["requests"][1])
    assert resp == {**expected, "ExtensionList": [{"Key": "key3", "Value": "3", "Seq": 2}]}


async def test_sample_get_key_values(server: FakeTimServer, http: aiohttp.ClientSession) -> None:
    key = server.send_c2c_msg("62768", "116400", msg_key="44739199_12_1665388280")
    # written over HTTP with the documented set_key_values request, then one more key
    set_body = {
        "From_Account": "62768",
        "To_Account": "116400",
        "MsgKey": key,
        "OperateType": 1,
        "ExtensionList": [{"Key": "k1", "Value": "v1", "Seq": 0}, {"Key": "k2", "Value": "v2"}],
    }
    assert await code_of(http, server, SET_KV, set_body) == 0
    server.put_c2c_extensions("62768", "116400", key, {"k3": "v3"})
    expected = SAMPLE_GET_KV["response"]
    resp = await call(http, server, GET_KV, SAMPLE_GET_KV["requests"][0])
    assert resp == expected
    assert list(resp) == list(expected)
    resp = await call(http, server, GET_KV, SAMPLE_GET_KV["requests"][1])
    assert resp["ExtensionList"] == [{"Key": "k3", "Value": "v3", "Seq": 2}]
    assert resp["CompleteFlag"] == 1


async def test_sample_get_group_attr(server: FakeTimServer, http: aiohttp.ClientSession) -> None:
    gid = server.create_group("@TGS#aC5SZEAEF")
    attrs = [{"key": "attr_key1", "value": "attr_val1"}, {"key": "attr_key2", "value": "x"}]
    assert await code_of(http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": attrs}) == 0
    attrs = [{"key": "attr_key2", "value": "attr_val2"}]
    assert await code_of(http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": attrs}) == 0
    expected = SAMPLE_GET_ATTR["response"]
    resp = await call(http, server, GET_ATTR, SAMPLE_GET_ATTR["requests"][0])
    assert resp == expected
    assert list(resp) == list(expected)


async def test_sample_update_group_counter(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    server.create_group("@TGS#aC5SZEAEF")
    expected = SAMPLE_UPDATE_COUNTER["response"]
    resp = await call(http, server, UPDATE_COUNTER, SAMPLE_UPDATE_COUNTER["requests"][0])
    assert resp == expected
    assert list(resp) == list(expected)
    assert server.group_counters("@TGS#aC5SZEAEF") == {"like": 5, "unlike": 1}


# =========================================================================== message extensions


async def test_extension_seq_delete_clear_semantics(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid, seq = message(server)

    async def write(op: int, items: list[dict[str, Any]] | None = None) -> list[Any]:
        body: dict[str, Any] = {"GroupId": gid, "MsgSeq": seq, "OperateType": op}
        if items is not None:
            body["ExtensionList"] = items
        resp = await call(http, server, GROUP_SET_KV, body)
        assert resp["ErrorCode"] == 0, resp
        result: list[Any] = resp["ExtensionList"]
        return result

    async def pull(start: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"GroupId": gid, "MsgSeq": seq}
        if start is not None:
            body["StartSeq"] = start
        return await call(http, server, GROUP_GET_KV, body)

    def pairs(resp: dict[str, Any]) -> list[tuple[str, str, int]]:
        return [(i["Key"], i["Value"], i["Seq"]) for i in resp["ExtensionList"]]

    # one set call stamps all its keys with one new seq (nested per-key results by default)
    assert await write(1, [{"Key": "k1", "Value": "a"}, {"Key": "k2", "Value": "b"}]) == [
        {"ErrorCode": 0, "ErrorInfo": "", "Extension": {"Key": "k1", "Value": "a", "Seq": 1}},
        {"ErrorCode": 0, "ErrorInfo": "", "Extension": {"Key": "k2", "Value": "b", "Seq": 1}},
    ]
    await write(1, [{"Key": "k3", "Value": "c", "Seq": 0}])
    await write(1, [{"Key": "k1", "Value": "A", "Seq": 1}])  # overwrite: moves to the end
    resp = await pull()
    assert pairs(resp) == [("k2", "b", 1), ("k3", "c", 2), ("k1", "A", 3)]
    assert (resp["LatestSeq"], resp["ClearSeq"], resp["CompleteFlag"]) == (3, 0, 1)

    # delete removes the listed keys and takes a new seq
    assert await write(2, [{"Key": "k2", "Value": ""}]) == [
        {"ErrorCode": 0, "ErrorInfo": "", "Extension": {"Key": "k2", "Value": "", "Seq": 4}}
    ]
    resp = await pull()
    assert pairs(resp) == [("k3", "c", 2), ("k1", "A", 3)]
    assert resp["LatestSeq"] == 4

    # clear takes a new seq and sets ClearSeq; older pairs are still served
    assert await write(3) == []
    resp = await pull()
    assert pairs(resp) == [("k3", "c", 2), ("k1", "A", 3)]
    assert (resp["LatestSeq"], resp["ClearSeq"]) == (5, 5)
    assert server.group_extensions(gid, seq) == {}
    meta = server.group_extension_meta(gid, seq)
    assert (meta.latest_seq, meta.clear_seq, meta.stored, meta.visible) == (5, 5, 2, 0)

    # a later write replaces the stored pre-clear pair
    await write(1, [{"Key": "k3", "Value": "new"}])
    resp = await pull()
    assert pairs(resp) == [("k1", "A", 3), ("k3", "new", 6)]
    assert server.group_extensions(gid, seq) == {"k3": ("new", 6)}
    assert pairs(await pull(4)) == [("k3", "new", 6)]
    assert pairs(await pull(6)) == [("k3", "new", 6)]
    resp = await pull(7)
    assert (resp["ExtensionList"], resp["CompleteFlag"], resp["LatestSeq"]) == ([], 1, 6)

    server.serve_cleared = False
    assert pairs(await pull()) == [("k3", "new", 6)]


async def test_extension_flat_response_shape(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    server.set_response_shape = "flat"
    key = server.send_c2c_msg("alice", "bob")
    body = {"To_Account": "bob", "MsgKey": key, "OperateType": 1}
    resp = await call(http, server, SET_KV, {**body, "ExtensionList": [{"Key": "x", "Value": "1"}]})
    assert resp["ExtensionList"] == [{"Key": "x", "Value": "1", "Seq": 1}]
    resp = await call(
        http, server, SET_KV, {**body, "OperateType": 2, "ExtensionList": [{"Key": "x"}]}
    )
    assert resp["ExtensionList"] == [{"Key": "x", "Value": "", "Seq": 2}]
    with pytest.raises(ValueError):
        server.set_response_shape = "other"


async def test_paging_cuts_inside_a_same_seq_run(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid, seq = message(server)
    server.put_group_extensions(gid, seq, {k: k.upper() for k in "abcde"})  # seq 1
    server.put_group_extensions(gid, seq, {"f": "F", "g": "G"})  # seq 2
    server.page_size = 3

    async def page(start: int) -> tuple[list[tuple[str, int]], int]:
        resp = await call(
            http, server, GROUP_GET_KV, {"GroupId": gid, "MsgSeq": seq, "StartSeq": start}
        )
        assert resp["LatestSeq"] == 2
        return [(i["Key"], i["Seq"]) for i in resp["ExtensionList"]], resp["CompleteFlag"]

    assert await page(0) == ([("a", 1), ("b", 1), ("c", 1)], 0)
    # StartSeq is inclusive: restarting at seq 1 serves the same cut page again
    assert await page(1) == ([("a", 1), ("b", 1), ("c", 1)], 0)
    assert await page(2) == ([("f", 2), ("g", 2)], 1)
    server.page_size = 6
    assert await page(0) == ([("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1), ("f", 2)], 0)
    server.page_size = 7  # exactly the remaining items: complete
    assert (await page(0))[1] == 1
    assert await page(3) == ([], 1)
    with pytest.raises(ValueError):
        server.page_size = 0


async def test_c2c_message_lookup(server: FakeTimServer, http: aiohttp.ClientSession) -> None:
    key = server.send_c2c_msg("alice", "bob")
    server.put_c2c_extensions("alice", "bob", key, {"k": "v"})
    for accounts in (
        {"To_Account": "bob"},
        {"To_Account": "alice"},
        {"From_Account": "alice", "To_Account": "bob"},
        {"From_Account": "bob", "To_Account": "alice"},
    ):
        resp = await call(http, server, GET_KV, {**accounts, "MsgKey": key})
        assert resp["ExtensionList"] == [{"Key": "k", "Value": "v", "Seq": 1}], accounts
    for body in (
        {"To_Account": "carol", "MsgKey": key},
        {"From_Account": "carol", "To_Account": "bob", "MsgKey": key},
        {"To_Account": "bob", "MsgKey": "1_2_3"},
    ):
        assert await code_of(http, server, GET_KV, body) == 23004
        assert await code_of(http, server, SET_KV, {**body, "OperateType": 3}) == 23004
    # account fields must be strings (60015); other required fields 10004
    assert await code_of(http, server, GET_KV, {"To_Account": 7, "MsgKey": key}) == 60015
    assert (
        await code_of(http, server, GET_KV, {"From_Account": 1, "To_Account": "bob", "MsgKey": key})
        == 60015
    )
    assert await code_of(http, server, GET_KV, {"MsgKey": key}) == 10004
    assert await code_of(http, server, GET_KV, {"To_Account": "bob"}) == 10004
    assert await code_of(http, server, GET_KV, {"To_Account": "bob", "MsgKey": 5}) == 10004
    assert server.c2c_extensions("alice", "bob", key) == {"k": ("v", 1)}
    assert server.c2c_extension_meta("alice", "bob", key).latest_seq == 1
    assert server.clear_c2c_extensions("alice", "bob", key) == 2
    assert server.delete_c2c_extensions("alice", "bob", key, ["k"]) == 3
    assert server.c2c_extensions("alice", "bob", key) == {}


def _ext(key: str, value: Any = "v") -> dict[str, Any]:
    return {"Key": key, "Value": value}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"OperateType": 1, "ExtensionList": [_ext(f"k{i}") for i in range(21)]}, "at most 20"),
        ({"OperateType": 1, "ExtensionList": [_ext("é" * 50 + "a")]}, "101 bytes"),
        ({"OperateType": 1, "ExtensionList": [_ext("k", "é" * 500 + "a")]}, "1001 bytes"),
        ({"OperateType": 1, "ExtensionList": [_ext("")]}, "Key"),
        ({"OperateType": 1, "ExtensionList": [{"Key": "k"}]}, "Value"),
        ({"OperateType": 1, "ExtensionList": [_ext("k", 5)]}, "Value"),
        ({"OperateType": 1, "ExtensionList": [{"Key": "k", "Value": "v", "Seq": "1"}]}, "Seq"),
        ({"OperateType": 1, "ExtensionList": ["k"]}, "object"),
        ({"OperateType": 1, "ExtensionList": []}, "at least one"),
        ({"OperateType": 1}, "ExtensionList"),
        ({"OperateType": 1, "ExtensionList": {"k": "v"}}, "array"),
        ({"OperateType": 2, "ExtensionList": []}, "at least one"),
        ({"OperateType": 2, "ExtensionList": [{"Key": f"k{i}"} for i in range(21)]}, "at most 20"),
        ({"OperateType": 4, "ExtensionList": [_ext("k")]}, "OperateType"),
        ({"OperateType": "1", "ExtensionList": [_ext("k")]}, "OperateType"),
        ({"OperateType": True, "ExtensionList": [_ext("k")]}, "OperateType"),
        ({"ExtensionList": [_ext("k")]}, "OperateType"),
    ],
)
async def test_extension_set_invalid(
    server: FakeTimServer, http: aiohttp.ClientSession, body: dict[str, Any], fragment: str
) -> None:
    gid, seq = message(server)
    server.put_group_extensions(gid, seq, {"keep": "me"})
    resp = await call(http, server, GROUP_SET_KV, {"GroupId": gid, "MsgSeq": seq, **body})
    assert resp["ErrorCode"] == 10004
    assert fragment in resp["ErrorInfo"]
    assert server.group_extension_meta(gid, seq).latest_seq == 1  # nothing applied
    assert server.group_extensions(gid, seq) == {"keep": ("me", 1)}


async def test_extension_size_limits_accept_the_maximum(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid, seq = message(server)
    items = [_ext("é" * 50, "é" * 500)] + [_ext(f"k{i}") for i in range(19)]
    resp = await call(
        http,
        server,
        GROUP_SET_KV,
        {"GroupId": gid, "MsgSeq": seq, "OperateType": 1, "ExtensionList": items},
    )
    assert resp["ErrorCode"] == 0
    assert len(server.group_extensions(gid, seq)) == 20


async def test_extension_300_pairs_counts_visible_only(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid, seq = message(server)
    assert len(server.put_group_extensions(gid, seq, {f"k{i}": "v" for i in range(300)})) == 15
    base = {"GroupId": gid, "MsgSeq": seq, "OperateType": 1}
    resp = await call(http, server, GROUP_SET_KV, {**base, "ExtensionList": [_ext("new")]})
    assert resp["ErrorCode"] == 10004
    assert "301" in resp["ErrorInfo"] and "300" in resp["ErrorInfo"]
    # overwriting existing keys is fine at the limit
    resp = await call(http, server, GROUP_SET_KV, {**base, "ExtensionList": [_ext("k0", "x")]})
    assert resp["ErrorCode"] == 0
    # after a clear the 300 stored pairs are hidden and do not count
    assert await code_of(http, server, GROUP_SET_KV, {**base, "OperateType": 3}) == 0
    new = [_ext(f"n{i}") for i in range(20)]
    assert await code_of(http, server, GROUP_SET_KV, {**base, "ExtensionList": new}) == 0
    meta = server.group_extension_meta(gid, seq)
    assert (meta.stored, meta.visible) == (320, 20)
    # an overwritten pre-clear key counts again as a new visible pair
    assert await code_of(http, server, GROUP_SET_KV, {**base, "ExtensionList": [_ext("k5")]}) == 0
    assert server.group_extension_meta(gid, seq).visible == 21


async def test_extension_message_errors(server: FakeTimServer, http: aiohttp.ClientSession) -> None:
    gid, seq = message(server)
    plain = server.send_group_msg(gid, support_extension=False)
    av, av_seq = message(server, group_type="AVChatRoom")
    set_body = {"OperateType": 1, "ExtensionList": [_ext("k")]}
    for command, extra in ((GROUP_GET_KV, {}), (GROUP_SET_KV, set_body)):
        assert (
            await code_of(http, server, command, {"GroupId": gid, "MsgSeq": 999, **extra}) == 23004
        )
        assert (
            await code_of(http, server, command, {"GroupId": "@TGS#NONE", "MsgSeq": seq, **extra})
            == 23004
        )
        resp = await call(http, server, command, {"GroupId": gid, "MsgSeq": plain, **extra})
        assert resp["ErrorCode"] == 10004 and "SupportMessageExtension" in resp["ErrorInfo"]
        assert (
            await code_of(http, server, command, {"GroupId": av, "MsgSeq": av_seq, **extra})
            == 10004
        )
        assert (
            await code_of(http, server, command, {"GroupId": gid, "MsgSeq": "1", **extra}) == 10004
        )
        assert (
            await code_of(http, server, command, {"GroupId": gid, "MsgSeq": -1, **extra}) == 10004
        )
        assert (
            await code_of(http, server, command, {"GroupId": gid, "MsgSeq": 2**32, **extra})
            == 10004
        )
        assert (
            await code_of(http, server, command, {"GroupId": gid, "MsgSeq": 1.0, **extra}) == 10004
        )
        assert await code_of(http, server, command, {"MsgSeq": seq, **extra}) == 10004
        assert (
            await code_of(http, server, command, {"GroupId": "", "MsgSeq": seq, **extra}) == 10004
        )
        assert await code_of(http, server, command, {"GroupId": gid, **extra}) == 10004
    pull = {"GroupId": gid, "MsgSeq": seq}
    assert await code_of(http, server, GROUP_GET_KV, {**pull, "StartSeq": -1}) == 10004
    assert await code_of(http, server, GROUP_GET_KV, {**pull, "StartSeq": "2"}) == 10004
    # unknown request fields are ignored; JSON null counts as absent
    assert await code_of(http, server, GROUP_GET_KV, {**pull, "Foo": [1], "StartSeq": None}) == 0
    key = server.send_c2c_msg("a", "b", support_extension=False)
    assert await code_of(http, server, GET_KV, {"To_Account": "b", "MsgKey": key}) == 10004


async def test_extensions_need_premium(server: FakeTimServer, http: aiohttp.ClientSession) -> None:
    gid, seq = message(server)
    key = server.send_c2c_msg("a", "b")
    server.premium = False
    c2c = {"To_Account": "b", "MsgKey": key, "OperateType": 3}
    group = {"GroupId": gid, "MsgSeq": seq, "OperateType": 3}
    for command, body in (
        (GET_KV, c2c),
        (SET_KV, c2c),
        (GROUP_GET_KV, group),
        (GROUP_SET_KV, group),
    ):
        assert await code_of(http, server, command, body) == 10008
    assert server.group_extension_meta(gid, seq).latest_seq == 0
    server.premium = True
    assert await code_of(http, server, GROUP_SET_KV, group) == 0


# =========================================================================== group attributes


def _attrs(**kv: str) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in kv.items()]


async def test_group_attr_commands(
    server: FakeTimServer, http: aiohttp.ClientSession, mono: Clock
) -> None:
    gid = server.create_group()

    async def get() -> list[dict[str, str]]:
        resp = await call(http, server, GET_ATTR, {"GroupId": gid})
        assert resp["ErrorCode"] == 0
        result: list[dict[str, str]] = resp["GroupAttrAry"]
        return result

    assert await get() == []
    resp = await call(
        http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(a="1", b="2")}
    )
    assert resp == {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}
    assert (
        await code_of(http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(b="3", c="")})
        == 0
    )
    assert await get() == _attrs(a="1", b="3", c="")
    assert await code_of(http, server, SET_ATTR, {"GroupId": gid, "GroupAttr": _attrs(x="9")}) == 0
    assert server.group_attrs(gid) == {"x": "9"}
    assert (
        await code_of(http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(y="8")}) == 0
    )
    assert (
        await code_of(http, server, DELETE_ATTR, {"GroupId": gid, "GroupAttr": [{"key": "x"}]}) == 0
    )
    assert await get() == _attrs(y="8")
    mono.advance(1.0)  # 5 writes per second per group
    assert await code_of(http, server, CLEAR_ATTR, {"GroupId": gid}) == 0
    assert await get() == []


async def test_group_attr_limits(
    server: FakeTimServer, http: aiohttp.ClientSession, mono: Clock
) -> None:
    gid = server.create_group()

    async def modify(attrs: list[dict[str, Any]], command: str = MODIFY_ATTR) -> int:
        mono.advance(1.0)  # stay clear of the 5 writes/s limit
        return await code_of(http, server, command, {"GroupId": gid, "GroupAttr": attrs})

    assert await modify(_attrs(**{"k" * 32: "v"})) == 0
    assert await modify(_attrs(**{"k" * 33: "v"})) == 10045
    assert await modify(_attrs(**{"é" * 16 + "a": "v"})) == 10045  # 33 bytes
    assert await modify(_attrs(big="x" * 4000)) == 0
    assert await modify(_attrs(big="x" * 4001)) == 10046
    assert await modify(_attrs(big="é" * 2000 + "x")) == 10046
    # 16 keys at most
    server.set_group_attrs(gid, {f"k{i}": "v" for i in range(16)})
    assert await modify(_attrs(k0="w")) == 0
    assert await modify(_attrs(k16="v")) == 10047
    assert await modify(_attrs(**{f"n{i}": "v" for i in range(17)}), SET_ATTR) == 10047
    # values together at most 16000 bytes
    assert await modify(_attrs(**{f"v{i}": "x" * 4000 for i in range(4)}), SET_ATTR) == 0
    assert await modify(_attrs(v4="x")) == 10048
    assert await modify(_attrs(v0="x" * 3999, v4="x")) == 0
    assert server.group_attrs(gid)["v4"] == "x"
    # deleting a key that does not exist: 10050, nothing deleted
    resp = await call(
        http, server, DELETE_ATTR, {"GroupId": gid, "GroupAttr": [{"key": "v1"}, {"key": "nope"}]}
    )
    assert resp["ErrorCode"] == 10050 and "nope" in resp["ErrorInfo"]
    assert "v1" in server.group_attrs(gid)
    # malformed requests
    for body in (
        {"GroupId": gid},
        {"GroupId": gid, "GroupAttr": []},
        {"GroupId": gid, "GroupAttr": {"a": "b"}},
        {"GroupId": gid, "GroupAttr": [{"key": "a"}]},
        {"GroupId": gid, "GroupAttr": [{"key": "a", "value": 1}]},
        {"GroupId": gid, "GroupAttr": [{"key": "", "value": "1"}]},
        {"GroupId": 5, "GroupAttr": _attrs(a="1")},
        {"GroupAttr": _attrs(a="1")},
    ):
        mono.advance(1.0)
        assert await code_of(http, server, MODIFY_ATTR, body) == 10004, body
    assert await code_of(http, server, DELETE_ATTR, {"GroupId": gid, "GroupAttr": []}) == 10004
    assert await code_of(http, server, GET_ATTR, {}) == 10004


async def test_group_attr_write_rate(
    server: FakeTimServer, http: aiohttp.ClientSession, mono: Clock
) -> None:
    gid = server.create_group()
    other = server.create_group()
    writes = [
        (MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(a="1")}),
        (SET_ATTR, {"GroupId": gid, "GroupAttr": _attrs(a="2", b="1")}),
        (DELETE_ATTR, {"GroupId": gid, "GroupAttr": [{"key": "b"}]}),
        (CLEAR_ATTR, {"GroupId": gid}),
        (MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(c="1")}),
    ]
    for command, body in writes:
        assert await code_of(http, server, command, body) == 0
    assert await code_of(http, server, GET_ATTR, {"GroupId": gid}) == 0  # reads do not count
    resp = await call(http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(d="1")})
    assert resp["ErrorCode"] == 10049
    assert await code_of(http, server, CLEAR_ATTR, {"GroupId": gid}) == 10049
    assert server.group_attrs(gid) == {"c": "1"}
    # the limit is per group
    assert await code_of(http, server, CLEAR_ATTR, {"GroupId": other}) == 0
    mono.advance(1.0)
    assert (
        await code_of(http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(d="1")}) == 0
    )


@pytest.mark.parametrize("group_type", sorted(GROUP_TYPES))
async def test_group_attr_group_types(
    server: FakeTimServer, http: aiohttp.ClientSession, group_type: str
) -> None:
    gid = server.create_group(group_type=group_type)
    assert (
        await code_of(http, server, MODIFY_ATTR, {"GroupId": gid, "GroupAttr": _attrs(a="1")}) == 0
    )
    assert await code_of(http, server, SET_ATTR, {"GroupId": gid, "GroupAttr": _attrs(a="2")}) == 0
    assert (
        await code_of(http, server, DELETE_ATTR, {"GroupId": gid, "GroupAttr": [{"key": "a"}]}) == 0
    )
    assert await code_of(http, server, GET_ATTR, {"GroupId": gid}) == 0
    expected = 10007 if group_type == "Community" else 0
    assert await code_of(http, server, CLEAR_ATTR, {"GroupId": gid}) == expected


async def test_group_errors_missing_and_invalid_group(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gone = server.create_group()
    server.delete_group(gone)
    bodies: dict[str, dict[str, Any]] = {
        GET_ATTR: {},
        MODIFY_ATTR: {"GroupAttr": _attrs(a="1")},
        SET_ATTR: {"GroupAttr": _attrs(a="1")},
        DELETE_ATTR: {"GroupAttr": [{"key": "a"}]},
        CLEAR_ATTR: {},
        GET_COUNTER: {},
        UPDATE_COUNTER: {"GroupCounter": [{"Key": "a", "Value": 1}], "Mode": "Set"},
        DELETE_COUNTER: {},
    }
    for command, body in bodies.items():
        assert await code_of(http, server, command, {"GroupId": gone, **body}) == 10010, command
        assert await code_of(http, server, command, {"GroupId": "", **body}) == 10015, command
        assert await code_of(http, server, command, {"GroupId": "g" * 49, **body}) == 10015
        assert await code_of(http, server, command, {"GroupId": 12, **body}) == 10004, command


# =========================================================================== group counters


async def test_group_counter_commands(server: FakeTimServer, http: aiohttp.ClientSession) -> None:
    gid = server.create_group()

    async def update(mode: str, **kv: int) -> dict[str, Any]:
        counters = [{"Key": k, "Value": v} for k, v in kv.items()]
        return await call(
            http, server, UPDATE_COUNTER, {"GroupId": gid, "GroupCounter": counters, "Mode": mode}
        )

    async def get(keys: list[str] | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"GroupId": gid}
        if keys is not None:
            body["GroupCounterKeys"] = keys
        resp = await call(http, server, GET_COUNTER, body)
        assert resp["ErrorCode"] == 0
        result: list[dict[str, Any]] = resp["GroupCounter"]
        return result

    assert await get() == []
    assert (await update("Set", a=5, b=-2))["GroupCounter"] == [
        {"Key": "a", "Value": 5},
        {"Key": "b", "Value": -2},
    ]
    # Increase/Decrease on a missing key start at 0; the answer holds the updated values only
    assert (await update("Increase", a=3, c=4))["GroupCounter"] == [
        {"Key": "a", "Value": 8},
        {"Key": "c", "Value": 4},
    ]
    assert (await update("Decrease", c=10))["GroupCounter"] == [{"Key": "c", "Value": -6}]
    assert (await update("Decrease", d=1))["GroupCounter"] == [{"Key": "d", "Value": -1}]
    assert await get() == [
        {"Key": "a", "Value": 8},
        {"Key": "b", "Value": -2},
        {"Key": "c", "Value": -6},
        {"Key": "d", "Value": -1},
    ]
    assert await get(["c", "nope", "a"]) == [{"Key": "c", "Value": -6}, {"Key": "a", "Value": 8}]
    resp = await call(
        http, server, DELETE_COUNTER, {"GroupId": gid, "GroupCounterKeys": ["a", "nope"]}
    )
    assert resp == {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}
    assert server.group_counters(gid) == {"b": -2, "c": -6, "d": -1}
    assert await code_of(http, server, DELETE_COUNTER, {"GroupId": gid}) == 0
    assert server.group_counters(gid) == {}


async def test_group_counter_limits(server: FakeTimServer, http: aiohttp.ClientSession) -> None:
    gid = server.create_group()

    async def update(counters: list[Any], mode: Any = "Set") -> int:
        # stdlib json: orjson cannot encode integers beyond 64 bits
        body = {"GroupId": gid, "GroupCounter": counters, "Mode": mode}
        return await code_of(http, server, UPDATE_COUNTER, raw=json.dumps(body).encode())

    def kv(key: str, value: Any) -> dict[str, Any]:
        return {"Key": key, "Value": value}

    assert await update([kv(f"c{i}", i) for i in range(21)]) == 10063
    assert await update([kv(f"c{i}", i) for i in range(20)]) == 0
    assert await update([kv("c20", 1)]) == 10063  # the group would hold 21
    assert await update([kv("c19", 1)]) == 0
    assert (
        await code_of(
            http,
            server,
            GET_COUNTER,
            {"GroupId": gid, "GroupCounterKeys": [f"c{i}" for i in range(21)]},
        )
        == 10063
    )
    assert (
        await code_of(
            http,
            server,
            DELETE_COUNTER,
            {"GroupId": gid, "GroupCounterKeys": [f"c{i}" for i in range(21)]},
        )
        == 10063
    )
    server.set_group_counters(gid, {})
    assert await code_of(http, server, DELETE_COUNTER, {"GroupId": gid}) == 0
    assert await update([kv("k" * 128, 1)]) == 0
    assert await update([kv("k" * 129, 1)]) == 10004
    assert await update([kv("", 1)]) == 10004
    assert await update([kv("max", 2**63 - 1), kv("min", -(2**63))]) == 0
    assert await update([kv("x", 2**63)]) == 10004
    assert await update([kv("x", -(2**63) - 1)]) == 10004
    assert await update([kv("x", 2**64)]) == 10004
    assert await update([kv("max", 1)], "Increase") == 10004  # overflow
    assert await update([kv("min", 1)], "Decrease") == 10004
    assert await update([kv("ok", 1), kv("max", 1)], "Increase") == 10004  # all or nothing
    assert "ok" not in server.group_counters(gid)
    for bad in ("5", 5.0, True, None):
        assert await update([kv("x", bad)]) == 10004
    assert await update([{"Value": 1}]) == 10004
    assert await update(["x"]) == 10004
    assert await update([]) == 10004
    assert await update([kv("x", 1)], "set") == 10004
    assert await update([kv("x", 1)], 1) == 10004
    assert (
        await code_of(http, server, UPDATE_COUNTER, {"GroupId": gid, "GroupCounter": [kv("x", 1)]})
        == 10004
    )
    assert (
        await code_of(http, server, GET_COUNTER, {"GroupId": gid, "GroupCounterKeys": "x"}) == 10004
    )
    assert (
        await code_of(http, server, GET_COUNTER, {"GroupId": gid, "GroupCounterKeys": [1]}) == 10004
    )
    assert server.group_counters(gid) == {"k" * 128: 1, "max": 2**63 - 1, "min": -(2**63)}


async def test_group_counter_community_and_premium(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    community = server.create_group(group_type="Community")
    gid = server.create_group()
    update = {"GroupCounter": [{"Key": "a", "Value": 1}], "Mode": "Increase"}
    for command, body in ((GET_COUNTER, {}), (UPDATE_COUNTER, update), (DELETE_COUNTER, {})):
        assert await code_of(http, server, command, {"GroupId": community, **body}) == 10007
    server.premium = False
    for command, body in ((GET_COUNTER, {}), (UPDATE_COUNTER, update), (DELETE_COUNTER, {})):
        assert await code_of(http, server, command, {"GroupId": gid, **body}) == 10059
    # group attributes do not depend on the switch
    assert await code_of(http, server, GET_ATTR, {"GroupId": gid}) == 0
    assert server.group_counters(gid) == {}


# =========================================================================== URL and UserSig


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"sdkappid": None}, 60012),
        ({"sdkappid": ""}, 60012),
        ({"sdkappid": "abc"}, 60012),
        ({"sdkappid": "¹⁴"}, 60012),
        ({"sdkappid": "-1400000000"}, 60012),
        ({"sdkappid": "1400000001"}, 70020),
        ({"sdkappid": "9" * 5000}, 70020),
        ({"sdkappid": "01400000000"}, 0),
        ({"random": None}, 60002),
        ({"random": "x"}, 60002),
        ({"random": "²"}, 60002),
        ({"random": "1.5"}, 60002),
        ({"random": "9" * 5000}, 60002),
        ({"random": "-1"}, 60002),
        ({"random": "4294967296"}, 60002),
        ({"random": "4294967295"}, 0),
        ({"random": "0"}, 0),
        ({"contenttype": None}, 60002),
        ({"contenttype": "JSON"}, 60002),
        ({"contenttype": "xml"}, 60002),
        ({"identifier": None}, 60004),
        ({"identifier": ""}, 60004),
        ({"usersig": None}, 70002),
        ({"usersig": ""}, 70002),
        ({"usersig": "not-a-usersig"}, 70003),
        ({"usersig": "eJyrVspNzcnPS8nMS1eyUjI0MjFV0lFKLSrKLEhNUbI1MDAwUqoFAIcMCHU_"}, 70003),
    ],
)
async def test_url_checks(
    server: FakeTimServer,
    http: aiohttp.ClientSession,
    query: dict[str, Any],
    code: int,
) -> None:
    gid = server.create_group()
    resp = await call(http, server, GET_ATTR, {"GroupId": gid}, **query)
    assert resp["ErrorCode"] == code, resp
    assert server.requests[-1].error_code == code


async def test_usersig_checks(
    server: FakeTimServer, http: aiohttp.ClientSession, wall: Clock
) -> None:
    gid = server.create_group()
    body = {"GroupId": gid}
    admin, key, app = server.admin, server.secret_key, server.sdkappid
    now = int(wall())
    cases = [
        (generate_usersig(app + 1, admin, key), admin, 70014),
        (generate_usersig(app, "bob", key), admin, 70013),
        (generate_usersig(app, admin, "another-app-key"), admin, 70009),
        (generate_usersig(app, admin, key, 60, now=now - 61), admin, 70001),
        (generate_usersig(app, "bob", key), "bob", 60010),
        (generate_usersig(app, admin, key, 60, now=now - 30), admin, 0),
        (generate_usersig(app, admin, key, userbuf=b"buf"), admin, 0),
    ]
    for usersig, identifier, code in cases:
        assert (
            await code_of(http, server, GET_ATTR, body, usersig=usersig, identifier=identifier)
            == code
        )
    # verification is cached per signature, but the expiry is checked on every request
    sig = generate_usersig(app, admin, key, 100, now=now)
    assert await code_of(http, server, GET_ATTR, body, usersig=sig) == 0
    wall.advance(99 - (wall() - now))  # TLS.time + TLS.expire is still ahead
    assert await code_of(http, server, GET_ATTR, body, usersig=sig) == 0
    wall.advance(2)
    assert await code_of(http, server, GET_ATTR, body, usersig=sig) == 70001
    # several admins
    async with FakeTimServer(admins=("ops", "administrator")) as multi:
        multi.create_group("@TGS#G")
        for identifier in ("ops", "administrator"):
            assert (
                await code_of(http, multi, GET_ATTR, {"GroupId": "@TGS#G"}, identifier=identifier)
                == 0
            )
        assert multi.admin == "ops"


async def test_body_method_and_path_errors(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid = server.create_group()
    for raw in (b"", b"not json", b"[1, 2]", b'"text"', b"{bad", b"\xff\xfe"):
        assert await code_of(http, server, GET_ATTR, raw=raw) == 60003, raw
    # a URL error comes before the body check
    assert await code_of(http, server, GET_ATTR, raw=b"x", usersig="") == 70002
    assert await code_of(http, server, GET_ATTR, {"GroupId": gid, "Extra": {"x": 1}}) == 0
    # unknown command or path: 60009, HTTP 200
    assert await code_of(http, server, "openim_msg_ext_http_svc/nope", {}) == 60009
    assert (
        await code_of(http, server, "group_open_http_svc/get_group_attr", {"GroupId": gid}) == 60009
    )
    for path in ("/", "/v4", "/foo/bar", "/v4/a/b/c"):
        async with http.post(server.base_url + path, data=b"{}") as resp:
            assert resp.status == 200
            assert (await resp.json())["ErrorCode"] == 60009
    assert server.requests[-1].command == "a/b/c"
    assert server.requests[-1].error_code == 60009
    # methods other than POST
    async with http.get(server.url(GET_ATTR)) as resp:
        assert resp.status == 200
        assert (await resp.json())["ErrorCode"] == 60002


# =========================================================================== rate enforcement


async def test_rate_limit_sliding_window(
    server: FakeTimServer, http: aiohttp.ClientSession, mono: Clock
) -> None:
    gid = server.create_group()
    server.rate_limit = 5
    body = {"GroupId": gid}
    codes = [await code_of(http, server, GET_ATTR, body) for _ in range(7)]
    assert codes == [0] * 5 + [60007] * 2
    resp = await call(http, server, GET_ATTR, body)
    assert resp["ErrorCode"] == 60007 and "5" in resp["ErrorInfo"]
    # per command: another command has its own window
    assert await code_of(http, server, GET_COUNTER, body) == 0
    mono.advance(0.5)
    assert await code_of(http, server, GET_ATTR, body) == 60007
    # rejected requests do not count: once the first 5 leave the window, 5 more pass
    mono.advance(0.6)
    codes = [await code_of(http, server, GET_ATTR, body) for _ in range(6)]
    assert codes == [0] * 5 + [60007]
    # changed at run time; None = no enforcement
    server.rate_limit = 7
    assert [await code_of(http, server, GET_ATTR, body) for _ in range(3)] == [0, 0, 60007]
    server.rate_limit = None
    assert {await code_of(http, server, GET_ATTR, body) for _ in range(20)} == {0}
    with pytest.raises(ValueError):
        server.rate_limit = 0
    log = server.requests_for(GET_ATTR)
    assert sum(r.error_code == 60007 for r in log) == 6
    # rejected by a URL check: not counted either
    server.rate_limit = 1
    mono.advance(2)
    assert await code_of(http, server, GET_ATTR, body, usersig="") == 70002
    assert await code_of(http, server, GET_ATTR, body) == 0


async def test_rate_limit_concurrent_burst(
    server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid = server.create_group()
    server.rate_limit = 5
    codes = await asyncio.gather(
        *(code_of(http, server, GET_ATTR, {"GroupId": gid}) for _ in range(12))
    )
    assert sorted(codes) == [0] * 5 + [60007] * 7


#: The clock of the marker's server below: it moves only when the test moves it.
MARKER_CLOCK = Clock(lambda: 1000.0)


@pytest.mark.tim_server(rate_limit=5, monotonic=MARKER_CLOCK)
async def test_rate_limit_set_by_the_plugin_marker(
    tim_server: FakeTimServer, http: aiohttp.ClientSession
) -> None:
    gid = tim_server.create_group()
    body = {"GroupId": gid}
    assert [await code_of(http, tim_server, GET_ATTR, body) for _ in range(6)] == [0] * 5 + [60007]
    MARKER_CLOCK.advance(0.98)  # the first five still inside the sliding second
    assert await code_of(http, tim_server, GET_ATTR, body) == 60007
    MARKER_CLOCK.advance(0.04)  # now they have left it
    assert await code_of(http, tim_server, GET_ATTR, body) == 0


async def test_the_default_clock_is_the_monotonic_clock(http: aiohttp.ClientSession) -> None:
    # The rate windows and the log's times run on time.monotonic() unless told otherwise
    # (the request is logged between the two readings; no upper bound on how long it takes).
    async with FakeTimServer() as server:
        gid = server.create_group()
        before = time.monotonic()
        assert await code_of(http, server, GET_ATTR, {"GroupId": gid}) == 0
        after = time.monotonic()
    assert before <= server.requests[0].time <= after


# =========================================================================== request log


async def test_request_log(server: FakeTimServer, http: aiohttp.ClientSession, mono: Clock) -> None:
    gid, seq = message(server)
    server.clear_log()
    before = mono()
    body = {"GroupId": gid, "MsgSeq": seq, "OperateType": 1, "ExtensionList": [_ext("k")]}
    await call(http, server, GROUP_SET_KV, body, random=77)
    await call(http, server, GROUP_GET_KV, {"GroupId": gid, "MsgSeq": 404})
    await call(http, server, GET_ATTR, raw=b"garbage")
    log = server.requests
    assert [r.command for r in log] == [GROUP_SET_KV, GROUP_GET_KV, GET_ATTR]
    assert [r.error_code for r in log] == [0, 23004, 60003]
    assert [r.http_status for r in log] == [200, 200, 200]
    assert [r.fault for r in log] == [None, None, None]
    assert before <= log[0].time <= log[1].time <= log[2].time <= mono()
    assert log[0].body == body
    assert log[2].body is None
    assert log[0].query["random"] == "77"
    assert log[0].query["identifier"] == server.admin
    assert log[0].query["sdkappid"] == str(server.sdkappid)
    assert log[0].query["contenttype"] == "json"
    sig = log[0].query["usersig"]
    assert sig and sig not in repr(log[0]) and "<redacted>" in repr(log[0])
    assert log[0].ok and not log[1].ok
    assert server.requests_for("/v4/" + GROUP_GET_KV) == [log[1]]
    server.clear_log()
    assert server.requests == []


async def test_secrets_stay_out_of_reprs_and_logs(
    server: FakeTimServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    gid = server.create_group()
    sig = server.usersig()
    for usersig in (sig, "garbage", ""):
        await call(http, server, GET_ATTR, {"GroupId": gid}, usersig=usersig)
    text = caplog.text + repr(server) + repr(server.emulator) + repr(server.requests)
    assert sig not in text
    assert server.secret_key not in text


async def test_server_lifecycle() -> None:
    server = FakeTimServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    await server.start()
    try:
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        with pytest.raises(RuntimeError):
            await server.start()
    finally:
        await server.close()
    await server.close()  # idempotent
    with pytest.raises(ValueError):
        FakeTimServer(admins=())
    with pytest.raises(ValueError):
        FakeTimServer(secret_key="")
