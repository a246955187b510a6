"""Commands a bot needs around the 12 extension, attribute and counter commands: sending the
messages that carry extensions, and reading group info (spec section 10).

``group_open_http_svc/send_group_msg`` and ``openim/sendmsg`` serve text elements only
(``TIMTextElem``); ``group_open_http_svc/get_group_info`` answers ``GroupId``, ``Type``, ``Name``,
``CreateTime`` and ``NextMsgSeq`` of the groups the emulator knows. Same contract as
:mod:`.commands`: ``(state, body, now) -> response``, :class:`EmulatorError` for an API error.
"""

from __future__ import annotations

from typing import Any, Final

from .commands import GROUP_SVC, Body, Command, _account, _group_ok, _int, _list, _str
from .state import EmulatorError, TimState

__all__ = ["BOT_COMMANDS", "GROUP_INFO_FIELDS", "GROUP_INFO_MAX_IDS"]

#: most group ids in one get_group_info request (Tencent: 50)
GROUP_INFO_MAX_IDS: Final = 50
#: the base-info fields the emulator answers (GroupBaseInfoFilter picks among them)
GROUP_INFO_FIELDS: Final = ("Type", "Name", "CreateTime", "NextMsgSeq")
_TEXT: Final = "TIMTextElem"


def _msg_body(body: Body) -> list[dict[str, Any]]:
    raw = _list(body, "MsgBody", True)
    assert raw is not None
    if not raw:
        raise EmulatorError(10004, "MsgBody must hold at least one element")
    elements: list[dict[str, Any]] = []
    for i, element in enumerate(raw):
        if not isinstance(element, dict):
            raise EmulatorError(10004, f"MsgBody[{i}] must be an object")
        msg_type = element.get("MsgType")
        if msg_type != _TEXT:
            raise EmulatorError(
                10004,
                f"MsgBody[{i}].MsgType {msg_type!r}: only {_TEXT} is emulated by tim_async.testing",
            )
        content = element.get("MsgContent")
        if not isinstance(content, dict) or not isinstance(content.get("Text"), str):
            raise EmulatorError(10004, f"MsgBody[{i}].MsgContent.Text must be a string")
        elements.append({"MsgType": _TEXT, "MsgContent": {"Text": content["Text"]}})
    return elements


def _flag(body: Body, name: str, allowed: tuple[int, ...]) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or value not in allowed:
        raise EmulatorError(10004, f"{name} must be one of {list(allowed)}, got {value!r}")
    return int(value)


def send_group_msg(state: TimState, body: Body, now: float) -> Body:
    group = state.group(_str(body, "GroupId"))
    _int(body, "Random", True)
    from_account = _account(body, "From_Account", False)
    msg_body = _msg_body(body)
    support = _flag(body, "SupportMessageExtension", (0, 1)) == 1
    msg_seq = state.send_group_msg(
        group.group_id,
        support_extension=support,
        from_account=from_account,
        msg_body=msg_body,
    )
    return _group_ok(MsgTime=int(state.clock()), MsgSeq=msg_seq)


def sendmsg(state: TimState, body: Body, now: float) -> Body:
    _flag(body, "SyncOtherMachine", (1, 2))
    from_account = _account(body, "From_Account", False) or state.admin
    to_account = _account(body, "To_Account", True)
    assert to_account is not None
    msg_random = _int(body, "MsgRandom", True)
    msg_body = _msg_body(body)
    support = _flag(body, "SupportMessageExtension", (0, 1)) == 1
    msg_key = state.send_c2c_msg(
        from_account,
        to_account,
        support_extension=support,
        msg_random=msg_random,
        msg_body=msg_body,
    )
    return _group_ok(MsgTime=int(state.clock()), MsgKey=msg_key)


def get_group_info(state: TimState, body: Body, now: float) -> Body:
    ids = _list(body, "GroupIdList", True)
    assert ids is not None
    if not 1 <= len(ids) <= GROUP_INFO_MAX_IDS:
        raise EmulatorError(
            10004, f"GroupIdList holds {len(ids)} ids; 1 to {GROUP_INFO_MAX_IDS} per call"
        )
    fields: tuple[str, ...] = GROUP_INFO_FIELDS
    response_filter = body.get("ResponseFilter")
    if isinstance(response_filter, dict) and response_filter.get("GroupBaseInfoFilter"):
        wanted = response_filter["GroupBaseInfoFilter"]
        if not isinstance(wanted, list):
            raise EmulatorError(10004, "ResponseFilter.GroupBaseInfoFilter must be an array")
        fields = tuple(f for f in GROUP_INFO_FIELDS if f in wanted)
    infos: list[Body] = []
    for i, group_id in enumerate(ids):
        if not isinstance(group_id, str):
            raise EmulatorError(10004, f"GroupIdList[{i}] must be a string")
        try:
            group = state.group(group_id)
        except EmulatorError as exc:
            infos.append({"GroupId": group_id, "ErrorCode": exc.code, "ErrorInfo": exc.info})
            continue
        values = {
            "Type": group.group_type,
            "Name": group.name,
            "CreateTime": group.create_time,
            "NextMsgSeq": group.last_msg_seq + 1,
        }
        infos.append({"GroupId": group_id, "ErrorCode": 0, **{f: values[f] for f in fields}})
    return _group_ok(GroupInfo=infos)


#: "service/command" -> handler
BOT_COMMANDS: Final[dict[str, Command]] = {
    f"{GROUP_SVC}/send_group_msg": send_group_msg,
    "openim/sendmsg": sendmsg,
    f"{GROUP_SVC}/get_group_info": get_group_info,
}
