"""The 12 REST commands: request validation, state calls and response bodies.

Each command is a function ``(state, body, now) -> response dict`` (``now`` is the request's
monotonic arrival time). It raises :class:`~tim_async.testing.state.EmulatorError` for an API
error. Unknown request fields are ignored; a missing required field or a field of the wrong type
is 10004 (a non-string account field is 60015).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .state import (
    U32_MAX,
    C2CMessage,
    EmulatorError,
    Extensions,
    GroupMessage,
    Message,
    TimState,
)

__all__ = ["COMMANDS", "Command", "error_body"]

Body = dict[str, Any]
Command = Callable[[TimState, Body, float], Body]

EXT_SVC: Final = "openim_msg_ext_http_svc"
GROUP_SVC: Final = "group_open_http_svc"
GROUP_ATTR_SVC: Final = "group_open_attr_http_svc"

_MISSING: Final = object()


def error_body(code: int, info: str) -> Body:
    return {"ActionStatus": "FAIL", "ErrorInfo": info, "ErrorCode": code}


def _ext_ok(**fields: Any) -> Body:
    # Field order of Tencent's extension samples.
    return {"ErrorCode": 0, "ErrorInfo": "", "ActionStatus": "OK", **fields}


def _group_ok(**fields: Any) -> Body:
    # Field order of Tencent's group samples.
    return {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0, **fields}


# --------------------------------------------------------------------------- field readers


def _get(body: Body, name: str, required: bool) -> Any:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise EmulatorError(10004, f"{name} is required")
        return _MISSING
    return value


def _str(body: Body, name: str) -> str:
    value = _get(body, name, True)
    if not isinstance(value, str):
        raise EmulatorError(10004, f"{name} must be a string, got {type(value).__name__}")
    return value


def _account(body: Body, name: str, required: bool) -> str | None:
    value = _get(body, name, required)
    if value is _MISSING:
        return None
    if not isinstance(value, str):
        raise EmulatorError(60015, f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise EmulatorError(10004, f"{name} must not be empty")
    return value


def _int(body: Body, name: str, required: bool, default: int = 0, lo: int = 0) -> int:
    value = _get(body, name, required)
    if value is _MISSING:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmulatorError(10004, f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= U32_MAX:
        raise EmulatorError(10004, f"{name} must be in [{lo}, {U32_MAX}], got {value}")
    return value


def _list(body: Body, name: str, required: bool) -> list[Any] | None:
    value = _get(body, name, required)
    if value is _MISSING:
        return None
    if not isinstance(value, list):
        raise EmulatorError(10004, f"{name} must be an array, got {type(value).__name__}")
    return value


def _item_str(item: Any, field: str, index: int, key: str, required: bool = True) -> str:
    if not isinstance(item, dict):
        raise EmulatorError(10004, f"{field}[{index}] must be an object")
    value = item.get(key)
    if value is None:
        if required:
            raise EmulatorError(10004, f"{field}[{index}].{key} is required")
        return ""
    if not isinstance(value, str):
        raise EmulatorError(
            10004, f"{field}[{index}].{key} must be a string, got {type(value).__name__}"
        )
    return value


def _str_list(body: Body, name: str) -> list[str] | None:
    values = _list(body, name, False)
    if values is None:
        return None
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise EmulatorError(10004, f"{name}[{i}] must be a string")
    return values


# --------------------------------------------------------------------------- message extensions


def _premium_ext(state: TimState) -> None:
    if not state.premium:
        raise EmulatorError(
            10008, "message extensions need a paid edition with the feature switched on"
        )


def _pull(state: TimState, ext: Extensions, body: Body) -> Body:
    start_seq = _int(body, "StartSeq", False)
    items, complete = ext.page(start_seq, state.page_size, serve_cleared=state.serve_cleared)
    return _ext_ok(
        CompleteFlag=1 if complete else 0,
        LatestSeq=ext.latest_seq,
        ClearSeq=ext.clear_seq,
        ExtensionList=items,
    )


def _set(state: TimState, message: Message, body: Body) -> Body:
    op = _get(body, "OperateType", True)
    if isinstance(op, bool) or op not in (1, 2, 3):
        raise EmulatorError(10004, f"OperateType must be 1, 2 or 3, got {op!r}")
    items: list[tuple[str, str]] = []
    if op != 3:
        raw = _list(body, "ExtensionList", True)
        assert raw is not None
        for i, item in enumerate(raw):
            key = _item_str(item, "ExtensionList", i, "Key")
            # Value is required to set; a delete may leave it out (Tencent's sample sends "").
            value = _item_str(item, "ExtensionList", i, "Value", required=op == 1)
            seq = item.get("Seq")
            if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
                raise EmulatorError(10004, f"ExtensionList[{i}].Seq must be an integer")
            items.append((key, value))
    # Requests come from the App admin: Seq is not version-checked.
    _, results = state.write_extensions(message, op, items)
    if op == 3:
        return _ext_ok(ExtensionList=[])
    if state.set_response_shape == "nested":
        return _ext_ok(
            ExtensionList=[{"ErrorCode": 0, "ErrorInfo": "", "Extension": r} for r in results]
        )
    return _ext_ok(ExtensionList=results)


def _c2c_message(state: TimState, body: Body) -> C2CMessage:
    _premium_ext(state)
    from_account = _account(body, "From_Account", False)
    to_account = _account(body, "To_Account", True)
    assert to_account is not None
    msg_key = _str(body, "MsgKey")
    if not msg_key:
        raise EmulatorError(10004, "MsgKey must not be empty")
    return state.c2c_message(from_account, to_account, msg_key)


def _group_message(state: TimState, body: Body) -> GroupMessage:
    _premium_ext(state)
    group_id = _str(body, "GroupId")
    if not group_id:
        raise EmulatorError(10004, "GroupId must not be empty")
    msg_seq = _int(body, "MsgSeq", True)
    return state.group_message(group_id, msg_seq)


def get_key_values(state: TimState, body: Body, now: float) -> Body:
    return _pull(state, _c2c_message(state, body).ext, body)


def group_get_key_values(state: TimState, body: Body, now: float) -> Body:
    return _pull(state, _group_message(state, body).ext, body)


def set_key_values(state: TimState, body: Body, now: float) -> Body:
    return _set(state, _c2c_message(state, body), body)


def group_set_key_values(state: TimState, body: Body, now: float) -> Body:
    return _set(state, _group_message(state, body), body)


# --------------------------------------------------------------------------- group attributes


def _attr_items(body: Body, with_values: bool) -> list[tuple[str, str]]:
    raw = _list(body, "GroupAttr", True)
    assert raw is not None
    items: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        key = _item_str(item, "GroupAttr", i, "key")
        value = _item_str(item, "GroupAttr", i, "value") if with_values else ""
        items.append((key, value))
    return items


def get_group_attr(state: TimState, body: Body, now: float) -> Body:
    attrs = state.get_group_attrs(_str(body, "GroupId"))
    return _group_ok(GroupAttrAry=[{"key": k, "value": v} for k, v in attrs.items()])


def modify_group_attr(state: TimState, body: Body, now: float) -> Body:
    group_id = _str(body, "GroupId")
    state.modify_group_attrs(group_id, _attr_items(body, True), now=now)
    return _group_ok()


def set_group_attr(state: TimState, body: Body, now: float) -> Body:
    group_id = _str(body, "GroupId")
    state.set_group_attrs(group_id, _attr_items(body, True), now=now)
    return _group_ok()


def delete_group_attr(state: TimState, body: Body, now: float) -> Body:
    group_id = _str(body, "GroupId")
    items = _attr_items(body, False)
    if not items:
        raise EmulatorError(10004, "GroupAttr must hold at least one key")
    state.delete_group_attrs(group_id, [k for k, _ in items], now=now)
    return _group_ok()


def clear_group_attr(state: TimState, body: Body, now: float) -> Body:
    state.clear_group_attrs(_str(body, "GroupId"), now=now)
    return _group_ok()


# --------------------------------------------------------------------------- group counters


def _premium_counter(state: TimState) -> None:
    if not state.premium:
        raise EmulatorError(10059, "group counters need a paid edition")


def get_group_counter(state: TimState, body: Body, now: float) -> Body:
    _premium_counter(state)
    group_id = _str(body, "GroupId")
    counters = state.get_group_counters(group_id, _str_list(body, "GroupCounterKeys"))
    return _group_ok(GroupCounter=[{"Key": k, "Value": v} for k, v in counters])


def update_group_counter(state: TimState, body: Body, now: float) -> Body:
    _premium_counter(state)
    group_id = _str(body, "GroupId")
    raw = _list(body, "GroupCounter", True)
    assert raw is not None
    items: list[tuple[str, int]] = []
    for i, item in enumerate(raw):
        key = _item_str(item, "GroupCounter", i, "Key")
        value = item.get("Value")
        if isinstance(value, bool) or not isinstance(value, int):
            raise EmulatorError(10004, f"GroupCounter[{i}].Value must be an integer")
        items.append((key, value))
    mode = _str(body, "Mode")
    counters = state.update_group_counters(group_id, items, mode)
    return _group_ok(GroupCounter=[{"Key": k, "Value": v} for k, v in counters])


def delete_group_counter(state: TimState, body: Body, now: float) -> Body:
    _premium_counter(state)
    group_id = _str(body, "GroupId")
    state.delete_group_counters(group_id, _str_list(body, "GroupCounterKeys"))
    return _group_ok()


#: "service/command" -> handler
COMMANDS: Final[dict[str, Command]] = {
    f"{EXT_SVC}/get_key_values": get_key_values,
    f"{EXT_SVC}/group_get_key_values": group_get_key_values,
    f"{EXT_SVC}/set_key_values": set_key_values,
    f"{EXT_SVC}/group_set_key_values": group_set_key_values,
    f"{GROUP_ATTR_SVC}/get_group_attr": get_group_attr,
    f"{GROUP_SVC}/modify_group_attr": modify_group_attr,
    f"{GROUP_SVC}/set_group_attr": set_group_attr,
    f"{GROUP_SVC}/delete_group_attr": delete_group_attr,
    f"{GROUP_SVC}/clear_group_attr": clear_group_attr,
    f"{GROUP_SVC}/get_group_counter": get_group_counter,
    f"{GROUP_SVC}/update_group_counter": update_group_counter,
    f"{GROUP_SVC}/delete_group_counter": delete_group_counter,
}
