"""Endpoint namespaces through a fake caller: request bodies, decoding, idempotency flags and
input validation (nothing is sent when validation fails)."""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from _fakes import FakeCaller

import tim_async
from tim_async import TimClient
from tim_async.endpoints import GroupAttr, GroupCounter, MsgExt
from tim_async.errors import (
    TimError,
    TimNotFoundError,
    TimTransportError,
    TimTypeError,
    TimValidationError,
)
from tim_async.models import CounterMode, ExtensionItem, SetKeyResult
from tim_async.testing import FakeTimServer

EMPTY_PULL = {"CompleteFlag": 1, "LatestSeq": 0, "ClearSeq": 0, "ExtensionList": []}
E_ACUTE = "\u00e9"  # 1 character, 2 bytes in UTF-8


# --------------------------------------------------------------------------- msg_ext bodies


async def test_group_set_key_values_body_and_results() -> None:
    caller = FakeCaller(
        {
            "ExtensionList": [
                {
                    "ErrorCode": 0,
                    "ErrorInfo": "",
                    "Extension": {"Key": "a", "Value": "1", "Seq": 3},
                },
                {"ErrorCode": 23001, "Extension": {"Key": "b", "Value": "newer", "Seq": 2}},
            ]
        }
    )
    values = {"a": "1", "b": "2"}
    results = await MsgExt(caller).group_set_key_values("@TGS#1", 158, values)
    assert values == {"a": "1", "b": "2"}  # the caller's input is untouched
    assert caller.last == (
        "openim_msg_ext_http_svc/group_set_key_values",
        {
            "GroupId": "@TGS#1",
            "MsgSeq": 158,
            "OperateType": 1,
            "ExtensionList": [
                {"Key": "a", "Value": "1", "Seq": 0},
                {"Key": "b", "Value": "2", "Seq": 0},
            ],
        },
        True,
    )
    assert results == [
        SetKeyResult("a", "1", 3),
        SetKeyResult("b", "newer", 2, error_code=23001),
    ]
    assert [r.ok for r in results] == [True, False]


async def test_set_results_flat_shape() -> None:
    caller = FakeCaller({"ExtensionList": [{"Key": "a", "Value": "1", "Seq": 4}]})
    results = await MsgExt(caller).set_key_values("u1", "mk", {"a": "1"})
    assert results == [SetKeyResult("a", "1", 4, 0, "")]
    assert caller.last[1] == {
        "To_Account": "u1",
        "MsgKey": "mk",
        "OperateType": 1,
        "ExtensionList": [{"Key": "a", "Value": "1", "Seq": 0}],
    }


async def test_set_key_values_with_from_account() -> None:
    caller = FakeCaller({"ExtensionList": []})
    await MsgExt(caller).set_key_values("116400", "k_1", {"k1": "v1"}, from_account="62768")
    assert caller.last[1]["From_Account"] == "62768"
    assert caller.last[0] == "openim_msg_ext_http_svc/set_key_values"


@pytest.mark.parametrize("operation", ["delete", "DELETE", 2])
async def test_delete_body(operation: Any) -> None:
    caller = FakeCaller({})
    results = await MsgExt(caller).group_set_key_values("g", 1, ["k1", "k2"], operation=operation)
    assert results == []  # no ExtensionList in the answer: no per-key results
    assert caller.last[1] == {
        "GroupId": "g",
        "MsgSeq": 1,
        "OperateType": 2,
        "ExtensionList": [
            {"Key": "k1", "Value": "", "Seq": 0},
            {"Key": "k2", "Value": "", "Seq": 0},
        ],
    }


async def test_delete_with_mapping_and_items() -> None:
    caller = FakeCaller({})
    ext = MsgExt(caller)
    await ext.group_set_key_values("g", 1, {"a": "ignored"}, operation="delete")
    await ext.group_set_key_values("g", 1, [ExtensionItem("b", "x", 7)], operation="delete")
    assert [body["ExtensionList"] for _, body, _ in caller.calls] == [
        [{"Key": "a", "Value": "", "Seq": 0}],
        [{"Key": "b", "Value": "", "Seq": 7}],
    ]


async def test_set_with_items_sends_their_seq() -> None:
    caller = FakeCaller({})
    await MsgExt(caller).set_key_values(
        "u", "mk", [ExtensionItem("a", "1", 5), ExtensionItem("b", "2", 6)], operation=1
    )
    assert caller.last[1]["ExtensionList"] == [
        {"Key": "a", "Value": "1", "Seq": 5},
        {"Key": "b", "Value": "2", "Seq": 6},
    ]


@pytest.mark.parametrize("operation", ["clear", 3])
@pytest.mark.parametrize("values", [None, [], {}])
async def test_clear_body(operation: Any, values: Any) -> None:
    caller = FakeCaller({})
    await MsgExt(caller).group_set_key_values("g", 5, values, operation=operation)
    assert caller.last[1] == {"GroupId": "g", "MsgSeq": 5, "OperateType": 3}
    caller2 = FakeCaller({})
    await MsgExt(caller2).set_key_values("u", "mk", operation=operation, from_account="s")
    assert caller2.last[1] == {
        "From_Account": "s",
        "To_Account": "u",
        "MsgKey": "mk",
        "OperateType": 3,
    }


async def test_limits_at_the_edge_are_accepted() -> None:
    caller = FakeCaller({})
    ext = MsgExt(caller)
    values = {f"k{i}": "v" for i in range(19)}
    values[E_ACUTE * 50] = E_ACUTE * 500  # 100-byte key, 1000-byte value
    await ext.group_set_key_values("g", 4294967295, values)
    await ext.set_key_values("u", "mk", [f"k{i}" for i in range(20)], operation="delete")
    assert len(caller.calls) == 2
    assert caller.calls[0][1]["MsgSeq"] == 4294967295
    assert len(caller.calls[0][1]["ExtensionList"]) == 20


async def test_get_key_values_body_without_optional_fields() -> None:
    caller = FakeCaller(EMPTY_PULL)
    await MsgExt(caller).get_key_values("u", "mk")
    assert caller.last == (
        "openim_msg_ext_http_svc/get_key_values",
        {"To_Account": "u", "MsgKey": "mk"},
        True,
    )


# --------------------------------------------------------------------------- validation


async def _group_get(ext: MsgExt, **kw: Any) -> Any:
    args = {"group_id": "g", "msg_seq": 1} | kw
    return await ext.group_get_key_values(args.pop("group_id"), args.pop("msg_seq"), **args)


async def _group_set(ext: MsgExt, **kw: Any) -> Any:
    args = {"group_id": "g", "msg_seq": 1, "values": {"k": "v"}} | kw
    return await ext.group_set_key_values(
        args.pop("group_id"), args.pop("msg_seq"), args.pop("values"), **args
    )


async def _c2c_get(ext: MsgExt, **kw: Any) -> Any:
    args = {"to_account": "u", "msg_key": "mk"} | kw
    return await ext.get_key_values(args.pop("to_account"), args.pop("msg_key"), **args)


async def _c2c_set(ext: MsgExt, **kw: Any) -> Any:
    args = {"to_account": "u", "msg_key": "mk", "values": {"k": "v"}} | kw
    return await ext.set_key_values(
        args.pop("to_account"), args.pop("msg_key"), args.pop("values"), **args
    )


MSG_EXT_BAD: list[tuple[Callable[..., Awaitable[Any]], dict[str, Any], type[TimError], str]] = [
    (_group_get, {"group_id": ""}, TimValidationError, "group_id: must not be empty"),
    (_group_get, {"group_id": 5}, TimTypeError, "group_id: expected str, got int"),
    (_group_get, {"group_id": None}, TimTypeError, "group_id"),
    (
        _group_get,
        {"group_id": "@TGS\ud800"},
        TimValidationError,
        "group_id: not encodable as UTF-8",
    ),
    (_c2c_get, {"to_account": "u\udc00"}, TimValidationError, "to_account: not encodable"),
    (_c2c_set, {"msg_key": "\ud800"}, TimValidationError, "msg_key: not encodable as UTF-8"),
    (_c2c_get, {"from_account": "\udfff"}, TimValidationError, "from_account: not encodable"),
    (_group_get, {"msg_seq": -1}, TimValidationError, "msg_seq: must be in 0..4294967295, got -1"),
    (_group_get, {"msg_seq": 2**32}, TimValidationError, "msg_seq: must be in 0..4294967295"),
    (_group_get, {"msg_seq": True}, TimTypeError, "msg_seq: expected int, got bool"),
    (_group_get, {"msg_seq": 5.0}, TimTypeError, "msg_seq: expected int, got float"),
    (_group_get, {"msg_seq": "158"}, TimTypeError, "msg_seq: expected int, got str"),
    (_group_get, {"start_seq": -1}, TimValidationError, "start_seq: must be in 0.."),
    (_group_get, {"start_seq": False}, TimTypeError, "start_seq: expected int, got bool"),
    (_group_get, {"start_seq": 2**64}, TimValidationError, "start_seq"),
    (_c2c_get, {"to_account": ""}, TimValidationError, "to_account: must not be empty"),
    (_c2c_get, {"msg_key": ""}, TimValidationError, "msg_key: must not be empty"),
    (_c2c_get, {"msg_key": 12}, TimTypeError, "msg_key: expected str"),
    (_c2c_get, {"from_account": ""}, TimValidationError, "from_account: must not be empty"),
    (_c2c_get, {"from_account": 62768}, TimTypeError, "from_account: expected str, got int"),
    (_c2c_get, {"start_seq": 1.5}, TimTypeError, "start_seq"),
    (
        _group_set,
        {"values": {f"k{i}": "v" for i in range(21)}},
        TimValidationError,
        "values: at most 20 pairs per set call, got 21",
    ),
    (
        _group_set,
        {"values": {"k": E_ACUTE * 501}},  # 501 characters, 1002 bytes
        TimValidationError,
        "values['k']: value is 1002 bytes, limit 1000 bytes (UTF-8)",
    ),
    (
        _c2c_set,
        {"values": {E_ACUTE * 50 + "a": "v"}},  # 51 characters, 101 bytes
        TimValidationError,
        "is 101 bytes, limit 100 bytes (UTF-8)",
    ),
    (_c2c_set, {"values": {"": "v"}}, TimValidationError, "values: key must not be empty"),
    (_c2c_set, {"values": {"k": 5}}, TimTypeError, "values['k']: value must be str, got int"),
    (_c2c_set, {"values": {1: "v"}}, TimTypeError, "values: key must be str, got int"),
    (_c2c_set, {"values": {"\ud800": "v"}}, TimValidationError, "not encodable as UTF-8"),
    (_c2c_set, {"values": {"k": "\udfff"}}, TimValidationError, "not encodable as UTF-8"),
    (_c2c_set, {"values": {}}, TimValidationError, "values: give at least one pair"),
    (_c2c_set, {"values": []}, TimValidationError, "values: give at least one pair"),
    (_c2c_set, {"values": None}, TimValidationError, "values: required for 'set'"),
    (_c2c_set, {"values": ["a", "b"]}, TimTypeError, "for 'set' give a mapping"),
    (_c2c_set, {"values": "abc"}, TimTypeError, "values: expected a mapping or an iterable"),
    (_c2c_set, {"values": 5}, TimTypeError, "values: expected a mapping or an iterable"),
    (_c2c_set, {"to_account": ""}, TimValidationError, "to_account: must not be empty"),
    (_c2c_set, {"from_account": ""}, TimValidationError, "from_account: must not be empty"),
    (
        _group_set,
        {"values": [ExtensionItem("a", "1", 0), ExtensionItem("a", "2", 0)]},
        TimValidationError,
        "values: duplicate key 'a'",
    ),
    (
        _group_set,
        {"values": [ExtensionItem("a", "x" * 1001, 0)]},
        TimValidationError,
        "values['a']: value is 1001 bytes, limit 1000 bytes (UTF-8)",
    ),
    (
        _group_set,
        {"values": [ExtensionItem("a", "1", -1)]},
        TimValidationError,
        "values['a'].seq: must be in 0..",
    ),
    (
        _group_set,
        {"values": ["a", "b", "a"], "operation": "delete"},
        TimValidationError,
        "values: duplicate key 'a'",
    ),
    (
        _group_set,
        {"values": [f"k{i}" for i in range(21)], "operation": "delete"},
        TimValidationError,
        "values: at most 20 keys per delete call, got 21",
    ),
    (
        _group_set,
        {"values": "k1", "operation": "delete"},
        TimTypeError,
        "values: expected a mapping or an iterable",
    ),
    (
        _group_set,
        {"values": ["k", 3], "operation": "delete"},
        TimTypeError,
        "values: key must be str, got int",
    ),
    (_group_set, {"values": [], "operation": 2}, TimValidationError, "give at least one key"),
    (_group_set, {"values": {"k": "v"}, "operation": "clear"}, TimValidationError, "clear"),
    (_group_set, {"values": "x", "operation": "clear"}, TimTypeError, "must be None for 'clear'"),
    (_group_set, {"operation": "upsert"}, TimValidationError, "operation: expected 'set'"),
    (_group_set, {"operation": 4}, TimValidationError, "operation: OperateType must be 1"),
    (_group_set, {"operation": 0}, TimValidationError, "operation: OperateType must be 1"),
    (_group_set, {"operation": True}, TimTypeError, "operation: expected str or int"),
    (_group_set, {"operation": 1.0}, TimTypeError, "operation: expected str or int"),
    (_group_set, {"msg_seq": -5}, TimValidationError, "msg_seq"),
    (_group_set, {"group_id": ""}, TimValidationError, "group_id: must not be empty"),
]


@pytest.mark.parametrize(("func", "kwargs", "exc_type", "message"), MSG_EXT_BAD)
async def test_msg_ext_validation(
    func: Callable[..., Awaitable[Any]],
    kwargs: dict[str, Any],
    exc_type: type[TimError],
    message: str,
) -> None:
    caller = FakeCaller(EMPTY_PULL)
    with pytest.raises(exc_type) as info:
        await func(MsgExt(caller), **kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, TimError)
    assert isinstance(info.value, ValueError if exc_type is TimValidationError else TypeError)
    assert caller.calls == []


def test_iterators_check_arguments_before_iterating() -> None:
    ext = MsgExt(FakeCaller(EMPTY_PULL))
    with pytest.raises(TimValidationError, match="group_id"):
        ext.iter_group_key_values("", 1)
    with pytest.raises(TimTypeError, match="start_seq"):
        ext.iter_key_values("u", "mk", start_seq="1")  # type: ignore[arg-type]


async def test_validation_error_field_attribute() -> None:
    caller = FakeCaller({})
    with pytest.raises(TimValidationError) as info:
        await MsgExt(caller).group_set_key_values("g", 1, {"k": "x" * 1001})
    assert info.value.field == "values['k']"


# --------------------------------------------------------------------------- group_attr


async def test_get_group_attr_uses_the_attr_service() -> None:
    caller = FakeCaller({"GroupAttrAry": [{"key": "a", "value": "1"}, {"key": "b", "value": ""}]})
    assert await GroupAttr(caller).get_group_attr("@TGS#x") == {"a": "1", "b": ""}
    assert caller.last == ("group_open_attr_http_svc/get_group_attr", {"GroupId": "@TGS#x"}, True)


async def test_get_group_attr_without_attributes() -> None:
    assert await GroupAttr(FakeCaller({})).get_group_attr("g") == {}
    assert await GroupAttr(FakeCaller({"GroupAttrAry": []})).get_group_attr("g") == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"GroupAttrAry": [{"key": "a", "value": 1}]},
        {"GroupAttrAry": [{"Key": "a", "Value": "1"}]},  # wrong case: counters' spelling
        {"GroupAttrAry": {"a": "1"}},
        {"GroupAttrAry": [{"key": "a"}]},
    ],
)
async def test_get_group_attr_malformed(bad: dict[str, Any]) -> None:
    with pytest.raises(TimTransportError) as info:
        await GroupAttr(FakeCaller(bad)).get_group_attr("g")
    assert "$.GroupAttrAry" in str(info.value)
    assert info.value.api == "group_open_attr_http_svc/get_group_attr"


@pytest.mark.parametrize(
    ("method", "api"),
    [("modify_group_attr", "modify_group_attr"), ("set_group_attr", "set_group_attr")],
)
async def test_attr_writes_body(method: str, api: str) -> None:
    caller = FakeCaller({})
    attrs_in = {"a": "1", "b": E_ACUTE * 2000}  # 4000 bytes: at the limit
    result = await getattr(GroupAttr(caller), method)("g", attrs_in)
    assert result is None
    assert caller.last == (
        f"group_open_http_svc/{api}",
        {
            "GroupId": "g",
            "GroupAttr": [{"key": "a", "value": "1"}, {"key": "b", "value": E_ACUTE * 2000}],
        },
        True,
    )


async def test_set_group_attr_refuses_an_empty_mapping() -> None:
    caller = FakeCaller({})
    with pytest.raises(TimValidationError, match="attrs: give at least one attribute"):
        await GroupAttr(caller).set_group_attr("g", {})
    assert caller.calls == []


async def test_delete_and_clear_group_attr_bodies() -> None:
    caller = FakeCaller({})
    attr = GroupAttr(caller)
    assert await attr.delete_group_attr("g", ("a", "b")) is None
    assert await attr.clear_group_attr("g") is None
    assert caller.calls == [
        (
            "group_open_http_svc/delete_group_attr",
            {"GroupId": "g", "GroupAttr": [{"key": "a"}, {"key": "b"}]},
            True,
        ),
        ("group_open_http_svc/clear_group_attr", {"GroupId": "g"}, True),
    ]


async def test_attr_totals_at_the_limit_are_accepted() -> None:
    caller = FakeCaller({})
    four_full = {f"k{i}": "x" * 4000 for i in range(4)}  # 16000 bytes
    await GroupAttr(caller).modify_group_attr("g", four_full)
    await GroupAttr(caller).modify_group_attr("g", {f"k{i}": "" for i in range(16)})
    await GroupAttr(caller).modify_group_attr("g", {"k" * 32: "v"})
    assert len(caller.calls) == 3


def _attr_call(method: str, *args: Any) -> Callable[[GroupAttr], Awaitable[Any]]:
    async def run(attr: GroupAttr) -> Any:
        return await getattr(attr, method)(*args)

    return run


GROUP_ATTR_BAD: list[tuple[Callable[[GroupAttr], Awaitable[Any]], type[TimError], str]] = [
    (_attr_call("get_group_attr", ""), TimValidationError, "group_id: must not be empty"),
    (_attr_call("get_group_attr", 1), TimTypeError, "group_id: expected str"),
    (_attr_call("clear_group_attr", ""), TimValidationError, "group_id"),
    (_attr_call("modify_group_attr", "", {"a": "1"}), TimValidationError, "group_id"),
    (
        _attr_call("modify_group_attr", "g", {f"k{i}": "v" for i in range(17)}),
        TimValidationError,
        "attrs: at most 16 attributes per write, got 17",
    ),
    (
        _attr_call("set_group_attr", "g", {"k" * 33: "v"}),
        TimValidationError,
        "is 33 bytes, limit 32 bytes (UTF-8)",
    ),
    (
        _attr_call("set_group_attr", "g", {E_ACUTE * 16 + "a": "v"}),  # 17 chars, 33 bytes
        TimValidationError,
        "is 33 bytes, limit 32 bytes",
    ),
    (
        _attr_call("modify_group_attr", "g", {"k": E_ACUTE * 2000 + "a"}),
        TimValidationError,
        "attrs['k']: value is 4001 bytes, limit 4000 bytes (UTF-8)",
    ),
    (
        _attr_call("modify_group_attr", "g", {**{f"k{i}": "x" * 4000 for i in range(4)}, "z": "y"}),
        TimValidationError,
        "attrs: values total 16001 bytes, limit 16000 bytes (UTF-8)",
    ),
    (_attr_call("modify_group_attr", "g", {}), TimValidationError, "give at least one attribute"),
    (_attr_call("modify_group_attr", "g", [("a", "1")]), TimTypeError, "attrs: expected a mapping"),
    (_attr_call("modify_group_attr", "g", {"a": 1}), TimTypeError, "attrs['a']: value must be str"),
    (_attr_call("modify_group_attr", "g", {"": "1"}), TimValidationError, "key must not be empty"),
    (_attr_call("delete_group_attr", "g", "abc"), TimTypeError, "keys: expected an iterable"),
    (_attr_call("delete_group_attr", "g", []), TimValidationError, "keys: give at least one key"),
    (_attr_call("delete_group_attr", "g", ["a", "a"]), TimValidationError, "duplicate key 'a'"),
    (
        _attr_call("delete_group_attr", "g", [f"k{i}" for i in range(17)]),
        TimValidationError,
        "keys: at most 16 keys per write, got 17",
    ),
    (
        _attr_call("delete_group_attr", "g", ["k" * 33]),
        TimValidationError,
        "limit 32 bytes",
    ),
    (_attr_call("delete_group_attr", "g", None), TimTypeError, "keys: expected an iterable"),
]


@pytest.mark.parametrize(("run", "exc_type", "message"), GROUP_ATTR_BAD)
async def test_group_attr_validation(
    run: Callable[[GroupAttr], Awaitable[Any]], exc_type: type[TimError], message: str
) -> None:
    caller = FakeCaller({})
    with pytest.raises(exc_type) as info:
        await run(GroupAttr(caller))
    assert message in str(info.value)
    assert caller.calls == []


# --------------------------------------------------------------------------- group_counter


async def test_get_group_counter_all_and_some() -> None:
    caller = FakeCaller({"GroupCounter": [{"Key": "like", "Value": 5}, {"Key": "x", "Value": -1}]})
    counter = GroupCounter(caller)
    assert await counter.get_group_counter("g") == {"like": 5, "x": -1}
    assert await counter.get_group_counter("g", iter(["like", "x"])) == {"like": 5, "x": -1}
    assert caller.calls == [
        ("group_open_http_svc/get_group_counter", {"GroupId": "g"}, True),
        (
            "group_open_http_svc/get_group_counter",
            {"GroupId": "g", "GroupCounterKeys": ["like", "x"]},
            True,
        ),
    ]


async def test_get_group_counter_without_counters() -> None:
    assert await GroupCounter(FakeCaller({})).get_group_counter("g") == {}


@pytest.mark.parametrize(
    ("mode", "wire", "idempotent"),
    [
        (CounterMode.SET, "Set", True),
        ("Set", "Set", True),
        ("set", "Set", True),
        (CounterMode.INCREASE, "Increase", False),
        ("Increase", "Increase", False),
        (CounterMode.DECREASE, "Decrease", False),
        ("Decrease", "Decrease", False),
    ],
)
async def test_update_group_counter_mode(mode: Any, wire: str, idempotent: bool) -> None:
    caller = FakeCaller({"GroupCounter": [{"Key": "like", "Value": 9}]})
    result = await GroupCounter(caller).update_group_counter("g", {"like": 2}, mode=mode)
    assert result == {"like": 9}
    api, body, flag = caller.last
    assert api == "group_open_http_svc/update_group_counter"
    assert body == {"GroupId": "g", "GroupCounter": [{"Key": "like", "Value": 2}], "Mode": wire}
    assert type(body["Mode"]) is str
    assert flag is idempotent


async def test_update_group_counter_default_mode_is_set_and_always_sent() -> None:
    caller = FakeCaller({"GroupCounter": []})
    await GroupCounter(caller).update_group_counter("g", {"a": 0})
    assert caller.last[1]["Mode"] == "Set"
    assert caller.last[2] is True


async def test_update_group_counter_int64_edges() -> None:
    caller = FakeCaller({"GroupCounter": [{"Key": "lo", "Value": -(2**63)}]})
    result = await GroupCounter(caller).update_group_counter("g", {"lo": -(2**63), "hi": 2**63 - 1})
    assert result == {"lo": -(2**63)}
    assert caller.last[1]["GroupCounter"] == [
        {"Key": "lo", "Value": -(2**63)},
        {"Key": "hi", "Value": 2**63 - 1},
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"GroupCounter": [{"Key": "a", "Value": "5"}]},
        {"GroupCounter": [{"Key": "a", "Value": 5.0}]},
        {"GroupCounter": [{"Key": "a", "Value": True}]},
        {"GroupCounter": [{"Key": "a"}]},
        {"GroupCounter": [{"key": "a", "value": 1}]},
    ],
)
async def test_update_group_counter_malformed_answer(bad: dict[str, Any]) -> None:
    with pytest.raises(TimTransportError) as info:
        await GroupCounter(FakeCaller(bad)).update_group_counter("g", {"a": 1})
    assert "$.GroupCounter[0]" in str(info.value)
    assert info.value.api == "group_open_http_svc/update_group_counter"


async def test_delete_group_counter_bodies() -> None:
    caller = FakeCaller({})
    counter = GroupCounter(caller)
    assert await counter.delete_group_counter("g") is None
    assert await counter.delete_group_counter("g", ["a"]) is None
    assert caller.calls == [
        ("group_open_http_svc/delete_group_counter", {"GroupId": "g"}, True),
        (
            "group_open_http_svc/delete_group_counter",
            {"GroupId": "g", "GroupCounterKeys": ["a"]},
            True,
        ),
    ]


def _counter_call(method: str, *args: Any, **kw: Any) -> Callable[[GroupCounter], Awaitable[Any]]:
    async def run(counter: GroupCounter) -> Any:
        return await getattr(counter, method)(*args, **kw)

    return run


GROUP_COUNTER_BAD: list[tuple[Callable[[GroupCounter], Awaitable[Any]], type[TimError], str]] = [
    (_counter_call("get_group_counter", ""), TimValidationError, "group_id: must not be empty"),
    (_counter_call("get_group_counter", "g", []), TimValidationError, "give at least one key"),
    (_counter_call("get_group_counter", "g", "like"), TimTypeError, "keys: expected an iterable"),
    (
        _counter_call("get_group_counter", "g", [f"k{i}" for i in range(21)]),
        TimValidationError,
        "keys: at most 20 keys per call, got 21",
    ),
    (
        _counter_call("get_group_counter", "g", ["k" * 129]),
        TimValidationError,
        "is 129 bytes, limit 128 bytes (UTF-8)",
    ),
    (_counter_call("delete_group_counter", "g", []), TimValidationError, "give at least one key"),
    (_counter_call("delete_group_counter", "g", ["a", "a"]), TimValidationError, "duplicate"),
    (_counter_call("delete_group_counter", ""), TimValidationError, "group_id"),
    (_counter_call("update_group_counter", "", {"a": 1}), TimValidationError, "group_id"),
    (
        _counter_call("update_group_counter", "g", {f"k{i}": 1 for i in range(21)}),
        TimValidationError,
        "counters: at most 20 counters per call, got 21",
    ),
    (
        _counter_call("update_group_counter", "g", {"a": 2**63}),
        TimValidationError,
        "counters['a']: value 9223372036854775808 is outside the signed 64-bit range",
    ),
    (
        _counter_call("update_group_counter", "g", {"a": -(2**63) - 1}),
        TimValidationError,
        "signed 64-bit",
    ),
    (
        _counter_call("update_group_counter", "g", {"a": True}),
        TimTypeError,
        "counters['a']: value must be int, got bool",
    ),
    (_counter_call("update_group_counter", "g", {"a": 1.0}), TimTypeError, "must be int"),
    (_counter_call("update_group_counter", "g", {"a": "1"}), TimTypeError, "must be int"),
    (_counter_call("update_group_counter", "g", {}), TimValidationError, "give at least one"),
    (_counter_call("update_group_counter", "g", [("a", 1)]), TimTypeError, "expected a mapping"),
    (
        _counter_call("update_group_counter", "g", {"k" * 129: 1}),
        TimValidationError,
        "limit 128 bytes",
    ),
    (
        _counter_call("update_group_counter", "g", {"a": 1}, mode="Add"),
        TimValidationError,
        "mode: expected 'Set', 'Increase' or 'Decrease', got 'Add'",
    ),
    (
        _counter_call("update_group_counter", "g", {"a": 1}, mode=1),
        TimTypeError,
        "mode: expected CounterMode or str",
    ),
]


@pytest.mark.parametrize(("run", "exc_type", "message"), GROUP_COUNTER_BAD)
async def test_group_counter_validation(
    run: Callable[[GroupCounter], Awaitable[Any]], exc_type: type[TimError], message: str
) -> None:
    caller = FakeCaller({})
    with pytest.raises(exc_type) as info:
        await run(GroupCounter(caller))
    assert message in str(info.value)
    assert caller.calls == []


# --------------------------------------------------------------------------- errors, layering


async def test_api_errors_propagate_unchanged() -> None:
    # Through the real session against the emulator: a deleted group answers 10010, which
    # reaches the caller of the typed method as TimNotFoundError with the server's words.
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        server.set_group_counters(gid, {"a": 1})
        server.delete_group(gid)
        async with TimClient(
            server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
        ) as tim:
            with pytest.raises(TimNotFoundError) as info:
                await tim.group_counter.get_group_counter(gid)
        log = server.requests_for("group_open_http_svc/get_group_counter")
    assert [entry.error_code for entry in log] == [10010]  # not retried
    assert info.value.code == 10010
    assert info.value.api == "group_open_http_svc/get_group_counter"
    assert info.value.info and info.value.info in str(info.value)
    assert info.value.body["ErrorCode"] == 10010


def test_endpoint_layer_never_imports_aiohttp() -> None:
    root = pathlib.Path(tim_async.__file__).parent
    files = [
        root / "models.py",
        root / "_wire.py",
        root / "_validate.py",
        root / "paging.py",
        *sorted((root / "endpoints").glob("*.py")),
    ]
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith("aiohttp"), f"{path.name} imports {name}"
                assert not name.startswith(("tim_async.session", "tim_async.client")), (
                    f"{path.name} imports {name}: the arrows point down"
                )
