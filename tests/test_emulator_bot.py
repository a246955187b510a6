"""The commands a bot needs around extensions, as the emulator serves them: send_group_msg,
openim/sendmsg, get_group_info, and 60009 for every command it does not emulate. Through
TimClient.call (the user's path) and raw aiohttp (the exact envelope)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tim_async import TimClient
from tim_async.errors import TimAPIError, TimOutcomeUnknownError
from tim_async.retry import RetryPolicy
from tim_async.testing import GROUP_TYPES, EmulatorError, FakeTimServer, Fault
from tim_async.testing.state import NO_EXTENSION_CODE

SEND_GROUP = "group_open_http_svc/send_group_msg"
SENDMSG = "openim/sendmsg"
GROUP_INFO = "group_open_http_svc/get_group_info"
GROUP_GET_KV = "openim_msg_ext_http_svc/group_get_key_values"
GROUP_SET_KV = "openim_msg_ext_http_svc/group_set_key_values"
GET_KV = "openim_msg_ext_http_svc/get_key_values"
SET_KV = "openim_msg_ext_http_svc/set_key_values"


def text(t: str) -> list[dict[str, Any]]:
    return [{"MsgType": "TIMTextElem", "MsgContent": {"Text": t}}]


def group_msg(gid: str, support: int | None = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"GroupId": gid, "Random": 8912345, "MsgBody": text("hello")}
    if support is not None:
        body["SupportMessageExtension"] = support
    return {**body, **extra}


def c2c_msg(to: str, support: int | None = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "SyncOtherMachine": 2,
        "To_Account": to,
        "MsgRandom": 1287657,
        "MsgBody": text("hi"),
    }
    if support is not None:
        body["SupportMessageExtension"] = support
    return {**body, **extra}


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(seed=5) as srv:
        yield srv


@pytest.fixture
async def tim(server: FakeTimServer) -> AsyncIterator[TimClient]:
    async with TimClient(
        server.sdkappid,
        secret_key=server.secret_key,
        base_url=server.base_url,
        retry=RetryPolicy(max_retries=0),
    ) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def raw(
    http: aiohttp.ClientSession, server: FakeTimServer, command: str, body: Any, **query: Any
) -> dict[str, Any]:
    async with http.post(server.url(command, **query), data=orjson.dumps(body)) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
        return answer


# --------------------------------------------------------------------------- send_group_msg


async def test_send_group_msg_seq_per_group_then_extensions(
    server: FakeTimServer, tim: TimClient, http: aiohttp.ClientSession
) -> None:
    a, b = server.create_group("@TGS#A"), server.create_group("@TGS#B")
    seqs_a = [
        (await tim.call(SEND_GROUP, group_msg(a), idempotent=False))["MsgSeq"] for _ in range(3)
    ]
    seqs_b = [
        (await tim.call(SEND_GROUP, group_msg(b), idempotent=False))["MsgSeq"] for _ in range(2)
    ]
    assert seqs_a == [1, 2, 3] and seqs_b == [1, 2]  # each group from 1, strictly increasing
    seeded = server.send_group_msg(a)  # seeding and HTTP share one sequence
    assert seeded == 4
    assert (await tim.call(SEND_GROUP, group_msg(a), idempotent=False))["MsgSeq"] == 5
    answer = await raw(http, server, SEND_GROUP, group_msg(a))
    assert list(answer)[:3] == ["ActionStatus", "ErrorInfo", "ErrorCode"]
    assert answer["ErrorCode"] == 0 and answer["MsgSeq"] == 6
    assert isinstance(answer["MsgTime"], int) and answer["MsgTime"] > 1_600_000_000
    # the message carries extensions through the typed SDK
    await tim.msg_ext.group_set_key_values(a, 2, {"like": "1"})
    ext = await tim.msg_ext.group_get_key_values(a, 2)
    assert ext.as_dict() == {"like": "1"}
    assert server.state.groups[a].messages[2].msg_body == text("hello")


async def test_send_group_msg_without_extension_support_refuses_extensions(
    server: FakeTimServer, tim: TimClient, http: aiohttp.ClientSession
) -> None:
    gid = server.create_group()
    plain0 = (await tim.call(SEND_GROUP, group_msg(gid, support=0), idempotent=False))["MsgSeq"]
    plain = (await tim.call(SEND_GROUP, group_msg(gid, support=None), idempotent=False))["MsgSeq"]
    ok = (await tim.call(SEND_GROUP, group_msg(gid), idempotent=False))["MsgSeq"]
    for seq in (plain0, plain):
        for command, body in (
            (GROUP_GET_KV, {"GroupId": gid, "MsgSeq": seq}),
            (
                GROUP_SET_KV,
                {
                    "GroupId": gid,
                    "MsgSeq": seq,
                    "OperateType": 1,
                    "ExtensionList": [{"Key": "k", "Value": "v"}],
                },
            ),
        ):
            answer = await raw(http, server, command, body)
            assert answer["ErrorCode"] == NO_EXTENSION_CODE == 10004
            assert "SupportMessageExtension" in answer["ErrorInfo"]
        with pytest.raises(TimAPIError) as info:
            await tim.msg_ext.group_get_key_values(gid, seq)
        assert info.value.code == NO_EXTENSION_CODE
    assert (await tim.msg_ext.group_get_key_values(gid, ok)).as_dict() == {}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"GroupId": "@TGS#NOPE"}, 10010),
        ({"GroupId": ""}, 10015),
        ({"Random": None}, 10004),
        ({"Random": -1}, 10004),
        ({"MsgBody": []}, 10004),
        ({"MsgBody": [{"MsgType": "TIMImageElem", "MsgContent": {}}]}, 10004),
        ({"MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": 5}}]}, 10004),
        ({"SupportMessageExtension": 2}, 10004),
        ({"From_Account": 7}, 60015),
    ],
)
async def test_send_group_msg_refusals(
    server: FakeTimServer, http: aiohttp.ClientSession, change: dict[str, Any], code: int
) -> None:
    gid = server.create_group()
    body = {k: v for k, v in {**group_msg(gid), **change}.items() if v is not None}
    answer = await raw(http, server, SEND_GROUP, body)
    assert answer["ErrorCode"] == code, answer
    assert server.state.groups[gid].last_msg_seq == 0  # nothing was recorded


# --------------------------------------------------------------------------- openim/sendmsg


async def test_sendmsg_key_works_with_get_key_values(
    server: FakeTimServer, tim: TimClient, http: aiohttp.ClientSession
) -> None:
    sent = await tim.call(SENDMSG, c2c_msg("bob", From_Account="alice"), idempotent=False)
    key = sent["MsgKey"]
    random_, seq, when = key.split("_")
    assert random_ == "1287657" and seq.isdigit() and abs(int(when) - sent["MsgTime"]) <= 1
    await tim.msg_ext.set_key_values("bob", key, {"k": "v"}, from_account="alice")
    ext = await tim.msg_ext.get_key_values("bob", key, from_account="alice")
    assert ext.as_dict() == {"k": "v"}
    assert (await tim.msg_ext.get_key_values("alice", key)).as_dict() == {"k": "v"}
    # two sends never share a key, even with the same MsgRandom
    other = (await raw(http, server, SENDMSG, c2c_msg("bob", From_Account="alice")))["MsgKey"]
    assert other != key
    # no From_Account: the message is from the App admin
    admin_key = (await tim.call(SENDMSG, c2c_msg("carol"), idempotent=False))["MsgKey"]
    await tim.msg_ext.set_key_values("carol", admin_key, {"a": "1"}, from_account=server.admin)
    assert server.c2c_extensions(server.admin, "carol", admin_key) == {"a": ("1", 1)}


async def test_sendmsg_without_extension_support_refuses_extensions(
    server: FakeTimServer, tim: TimClient
) -> None:
    for support in (0, None):
        key = (await tim.call(SENDMSG, c2c_msg("bob", support=support), idempotent=False))["MsgKey"]
        with pytest.raises(TimAPIError) as info:
            await tim.msg_ext.get_key_values("bob", key)
        assert info.value.code == NO_EXTENSION_CODE
        assert "SupportMessageExtension" in info.value.info
        with pytest.raises(TimAPIError) as info:
            await tim.msg_ext.set_key_values("bob", key, {"k": "v"})
        assert info.value.code == NO_EXTENSION_CODE


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"To_Account": None}, 10004),
        ({"To_Account": 5}, 60015),
        ({"MsgRandom": None}, 10004),
        ({"SyncOtherMachine": 3}, 10004),
        ({"MsgBody": "hi"}, 10004),
    ],
)
async def test_sendmsg_refusals(
    server: FakeTimServer, http: aiohttp.ClientSession, change: dict[str, Any], code: int
) -> None:
    body = {k: v for k, v in {**c2c_msg("bob"), **change}.items() if v is not None}
    assert (await raw(http, server, SENDMSG, body))["ErrorCode"] == code
    assert server.state.c2c == {}


# --------------------------------------------------------------------------- get_group_info


async def test_get_group_info(server: FakeTimServer, tim: TimClient) -> None:
    gid = server.create_group("@TGS#aC5SZEAEF", "Work", name="Launch team")
    server.send_group_msg(gid)
    server.send_group_msg(gid)
    other = server.create_group(group_type="Community")
    answer = await tim.call(GROUP_INFO, {"GroupIdList": [gid, "@TGS#GONE", other]})
    first, missing, third = answer["GroupInfo"]
    assert first["GroupId"] == gid and first["ErrorCode"] == 0
    assert (first["Type"], first["Name"], first["NextMsgSeq"]) == ("Work", "Launch team", 3)
    assert isinstance(first["CreateTime"], int)
    assert missing["GroupId"] == "@TGS#GONE" and missing["ErrorCode"] == 10010
    assert "Type" not in missing
    assert (third["Type"], third["Name"]) == ("Community", other)  # name defaults to the id
    filtered = await tim.call(
        GROUP_INFO,
        {"GroupIdList": [gid], "ResponseFilter": {"GroupBaseInfoFilter": ["Name"]}},
    )
    assert filtered["GroupInfo"] == [{"GroupId": gid, "ErrorCode": 0, "Name": "Launch team"}]


@pytest.mark.parametrize("ids", [[], [f"@TGS#{i}" for i in range(51)], "x", [5]])
async def test_get_group_info_refusals(
    server: FakeTimServer, http: aiohttp.ClientSession, ids: Any
) -> None:
    assert (await raw(http, server, GROUP_INFO, {"GroupIdList": ids}))["ErrorCode"] == 10004


# --------------------------------------------------------------------------- not emulated


@pytest.mark.parametrize(
    "command",
    ["group_open_http_svc/create_group", "openim/admin_getroammsg", "sns/friend_add"],
)
async def test_other_commands_answer_60009_naming_them(
    server: FakeTimServer, tim: TimClient, command: str
) -> None:
    with pytest.raises(TimAPIError) as info:
        await tim.call(command, {"Owner_Account": "x"})
    assert info.value.code == 60009
    assert "not emulated by tim_async.testing" in info.value.info
    assert command in info.value.info
    assert server.requests[-1].command == command
    assert server.requests[-1].error_code == 60009


# --------------------------------------------------------------------------- same pipeline


@pytest.mark.parametrize("command", [SEND_GROUP, SENDMSG, GROUP_INFO, "openim/not_served"])
async def test_new_commands_checked_rated_and_faulted_like_the_others(
    server: FakeTimServer, http: aiohttp.ClientSession, command: str
) -> None:
    gid = server.create_group()
    body = {
        SEND_GROUP: group_msg(gid),
        SENDMSG: c2c_msg("bob"),
        GROUP_INFO: {"GroupIdList": [gid]},
    }.get(command, {})
    expect = 60009 if command == "openim/not_served" else 0
    # UserSig check: a UserSig for another identifier, a corrupt one
    assert (await raw(http, server, command, body, usersig=server.usersig("x")))[
        "ErrorCode"
    ] == 70013
    assert (await raw(http, server, command, body, usersig="garbage"))["ErrorCode"] == 70003
    # faults, scripted by command
    server.faults.script(command, [Fault.code(10002), Fault.http(502)])
    assert (await raw(http, server, command, body))["ErrorCode"] == 10002
    async with http.post(server.url(command), data=orjson.dumps(body)) as resp:
        assert resp.status == 502
    # rate enforcement: per command, over the sliding second
    server.rate_limit = 3
    codes = [(await raw(http, server, command, body))["ErrorCode"] for _ in range(5)]
    assert codes == [expect] * 3 + [60007] * 2
    assert len(server.requests_for(command)) == 9


async def test_send_is_not_resent_after_apply_then_drop(
    server: FakeTimServer, tim: TimClient
) -> None:
    gid = server.create_group()
    server.faults.script(SEND_GROUP, [Fault.DROP_AFTER_APPLY])
    async with TimClient(
        server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
    ) as retrying:
        with pytest.raises(TimOutcomeUnknownError):
            await retrying.call(SEND_GROUP, group_msg(gid), idempotent=False)
    assert server.state.groups[gid].last_msg_seq == 1  # applied once, not resent
    assert len(server.requests_for(SEND_GROUP)) == 1


@pytest.mark.parametrize("group_type", sorted(GROUP_TYPES))
async def test_send_group_msg_in_every_group_type(
    server: FakeTimServer, tim: TimClient, group_type: str
) -> None:
    gid = server.create_group(group_type=group_type)
    seq = (await tim.call(SEND_GROUP, group_msg(gid), idempotent=False))["MsgSeq"]
    assert seq == 1
    if group_type == "AVChatRoom":  # keeps no history: no extensions
        with pytest.raises(TimAPIError) as info:
            await tim.msg_ext.group_get_key_values(gid, seq)
        assert info.value.code == NO_EXTENSION_CODE
    else:
        assert len(await tim.msg_ext.group_get_key_values(gid, seq)) == 0


# --------------------------------------------------------------------------- group types


@pytest.mark.parametrize("group_type", sorted(GROUP_TYPES))
async def test_counters_and_clear_by_group_type(
    server: FakeTimServer, tim: TimClient, group_type: str
) -> None:
    gid = server.create_group(group_type=group_type)
    server.set_group_attrs(gid, {"topic": "launch"})
    if group_type == "Community":
        with pytest.raises(EmulatorError, match="10007"):
            server.set_group_counters(gid, {"likes": 1})  # seeding obeys the same rule
        calls = [
            tim.group_counter.get_group_counter(gid),
            tim.group_counter.update_group_counter(gid, {"likes": 1}),
            tim.group_counter.delete_group_counter(gid),
            tim.group_attr.clear_group_attr(gid),
        ]
        for call in calls:
            with pytest.raises(TimAPIError) as info:
                await call
            assert info.value.code == 10007
            assert "Community" in info.value.info
        assert server.group_attrs(gid) == {"topic": "launch"}  # nothing applied
        assert server.group_counters(gid) == {}
        # what Community groups do support
        await tim.group_attr.set_group_attr(gid, {"topic": "v2"})
        await tim.group_attr.delete_group_attr(gid, ["topic"])
        await tim.group_attr.modify_group_attr(gid, {"a": "1"})
        assert await tim.group_attr.get_group_attr(gid) == {"a": "1"}
    else:
        assert await tim.group_counter.update_group_counter(gid, {"likes": 2}) == {"likes": 2}
        assert await tim.group_counter.get_group_counter(gid) == {"likes": 2}
        await tim.group_counter.delete_group_counter(gid)
        await tim.group_attr.clear_group_attr(gid)
        assert server.group_attrs(gid) == {} and server.group_counters(gid) == {}
