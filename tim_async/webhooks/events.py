"""Typed webhook events and :func:`parse_webhook` (spec section 9).

Three webhooks belong to the features tim_async covers (all "after" webhooks):
``Group.CallbackAfterGroupMsgExtension``, ``C2C.CallbackAfterC2CMsgExtension`` and
``Group.CallbackAfterGroupAttrChanged``. Every other command parses to
:class:`UnknownWebhookEvent` with its body kept whole.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, TypeAlias

import attrs
import orjson

from tim_async._validate import INT64_MAX, UINT32_MAX
from tim_async.errors import TimWebhookError
from tim_async.models import ExtensionItem

__all__ = [
    "ATTR_CHANGED",
    "C2C_MSG_EXTENSION",
    "GROUP_MSG_EXTENSION",
    "C2CMsgExtensionEvent",
    "ExtensionOperation",
    "GroupAttrChangedEvent",
    "GroupAttrOperation",
    "GroupMsgExtensionEvent",
    "UnknownWebhookEvent",
    "WebhookBodyError",
    "WebhookEvent",
    "dedupe_key",
    "parse_webhook",
]

GROUP_MSG_EXTENSION: Final = "Group.CallbackAfterGroupMsgExtension"
C2C_MSG_EXTENSION: Final = "C2C.CallbackAfterC2CMsgExtension"
ATTR_CHANGED: Final = "Group.CallbackAfterGroupAttrChanged"


class WebhookBodyError(TimWebhookError):
    """A webhook body could not be parsed: ``field`` names the field (``ExtensionList[2].Seq``,
    ``body`` for the whole body)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ExtensionOperation(enum.StrEnum):
    """``OperateType`` of a message extension webhook (wire: 1, 2, 3)."""

    SET = "set"
    DELETE = "delete"
    CLEAR = "clear"

    @property
    def wire(self) -> int:
        """The wire's ``OperateType`` number."""
        return _EXT_OP_WIRE[self]


_EXT_OP_WIRE: Final = {
    ExtensionOperation.SET: 1,
    ExtensionOperation.DELETE: 2,
    ExtensionOperation.CLEAR: 3,
}
_EXT_OP_BY_WIRE: Final = {v: k for k, v in _EXT_OP_WIRE.items()}


class GroupAttrOperation(enum.StrEnum):
    """``OptionType`` of a group attribute webhook (the wire's own strings)."""

    SET = "set"
    MODIFY = "modify"
    DELETE = "delete"
    CLEAR = "clear"


def _sha(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@attrs.frozen
class GroupMsgExtensionEvent:
    """``Group.CallbackAfterGroupMsgExtension``: a group message's extensions were written.

    ``seq`` is the message-wide version after this write; ``items`` the pairs written (a delete
    sends them with ``value ""``, a clear sends none); ``event_time`` in milliseconds."""

    COMMAND: ClassVar[str] = GROUP_MSG_EXTENSION

    group_id: str
    msg_seq: int
    operation: ExtensionOperation
    items: tuple[ExtensionItem, ...]
    seq: int
    event_time: int

    @property
    def command(self) -> str:
        return self.COMMAND

    @property
    def dedupe_key(self) -> str:
        """``command|group_id|msg_seq|seq``: the same for every delivery of one write (every
        write takes a new ``seq``)."""
        return f"{self.COMMAND}|{self.group_id}|{self.msg_seq}|{self.seq}"


@attrs.frozen
class C2CMsgExtensionEvent:
    """``C2C.CallbackAfterC2CMsgExtension``: a one-to-one message's extensions were written."""

    COMMAND: ClassVar[str] = C2C_MSG_EXTENSION

    from_account: str
    to_account: str
    msg_key: str
    operation: ExtensionOperation
    items: tuple[ExtensionItem, ...]
    seq: int
    event_time: int

    @property
    def command(self) -> str:
        return self.COMMAND

    @property
    def dedupe_key(self) -> str:
        """``command|msg_key|seq``."""
        return f"{self.COMMAND}|{self.msg_key}|{self.seq}"


@attrs.frozen
class GroupAttrChangedEvent:
    """``Group.CallbackAfterGroupAttrChanged``: a group's custom attributes were written.

    ``attrs`` holds the ``GroupAttr`` pairs as sent (which pairs Tencent sends for ``delete`` and
    ``clear`` is not documented); ``operator`` is ``Operator_Account``."""

    COMMAND: ClassVar[str] = ATTR_CHANGED

    group_id: str
    group_type: str
    operator: str
    operation: GroupAttrOperation
    attrs: dict[str, str]
    event_time: int

    @property
    def command(self) -> str:
        return self.COMMAND

    @property
    def dedupe_key(self) -> str:
        """``command|group_id|event_time|operation|hash of attrs`` (attribute writes carry no
        version number, so the write's time and content identify it)."""
        return (
            f"{self.COMMAND}|{self.group_id}|{self.event_time}|{self.operation.value}|"
            f"{_sha(self.attrs)}"
        )


@attrs.frozen
class UnknownWebhookEvent:
    """Any other ``CallbackCommand``: the decoded body, kept whole."""

    command: str
    body: Any

    @property
    def dedupe_key(self) -> str:
        """``command|hash of the body``."""
        return f"{self.command}|{_sha(self.body)}"


WebhookEvent: TypeAlias = (
    GroupMsgExtensionEvent | C2CMsgExtensionEvent | GroupAttrChangedEvent | UnknownWebhookEvent
)


def dedupe_key(event: WebhookEvent) -> str:
    """A stable key of the write behind ``event``: equal for every delivery of one write
    (deliveries can repeat when retry on timeout is on). Same as ``event.dedupe_key``."""
    return event.dedupe_key


# --------------------------------------------------------------------------- parsing


def _decode(body: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> Any:
    if isinstance(body, Mapping):
        return body
    if isinstance(body, bytes | bytearray | memoryview | str):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise WebhookBodyError("body", f"not JSON ({exc.msg})") from None
    raise WebhookBodyError("body", f"expected bytes, str or a mapping, got {type(body).__name__}")


def _field(body: Mapping[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise WebhookBodyError(name, "missing")
    return value


def _str(body: Mapping[str, Any], name: str, *, empty: bool = False) -> str:
    value = _field(body, name)
    if not isinstance(value, str):
        raise WebhookBodyError(name, f"expected a string, got {type(value).__name__}")
    if not value and not empty:
        raise WebhookBodyError(name, "must not be empty")
    return value


def _int_value(value: Any, name: str, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookBodyError(name, f"expected an integer, got {type(value).__name__}")
    if not 0 <= value <= hi:
        raise WebhookBodyError(name, f"{value} is out of range 0..{hi}")
    return value


def _int(body: Mapping[str, Any], name: str, hi: int = INT64_MAX) -> int:
    return _int_value(_field(body, name), name, hi)


def _event_time(body: Mapping[str, Any]) -> int:
    value = _field(body, "EventTime")
    if isinstance(value, str):
        # Documented as an Integer, sent as a string in the attribute sample: accept both.
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise WebhookBodyError("EventTime", "expected milliseconds as an integer")
        return int(value)
    return _int_value(value, "EventTime", INT64_MAX)


def _list(body: Mapping[str, Any], name: str, *, default_empty: bool) -> list[Any]:
    value = body.get(name)
    if value is None:
        if default_empty:
            return []
        raise WebhookBodyError(name, "missing")
    if not isinstance(value, list):
        raise WebhookBodyError(name, f"expected an array, got {type(value).__name__}")
    return value


def _item_str(item: Mapping[str, Any], path: str, name: str, required: bool) -> str:
    value = item.get(name)
    if value is None:
        if required:
            raise WebhookBodyError(f"{path}.{name}", "missing")
        return ""
    if not isinstance(value, str):
        raise WebhookBodyError(f"{path}.{name}", f"expected a string, got {type(value).__name__}")
    return value


def _ext_operation(body: Mapping[str, Any]) -> ExtensionOperation:
    raw = _field(body, "OperateType")
    if isinstance(raw, bool) or raw not in _EXT_OP_BY_WIRE:
        raise WebhookBodyError("OperateType", f"expected 1, 2 or 3, got {raw!r}")
    return _EXT_OP_BY_WIRE[raw]


def _ext_items(body: Mapping[str, Any], operation: ExtensionOperation) -> tuple[ExtensionItem, ...]:
    raw = _list(body, "ExtensionList", default_empty=operation is ExtensionOperation.CLEAR)
    items: list[ExtensionItem] = []
    for i, item in enumerate(raw):
        path = f"ExtensionList[{i}]"
        if not isinstance(item, Mapping):
            raise WebhookBodyError(path, f"expected an object, got {type(item).__name__}")
        key = _item_str(item, path, "Key", True)
        if not key:
            raise WebhookBodyError(f"{path}.Key", "must not be empty")
        value = _item_str(item, path, "Value", operation is ExtensionOperation.SET)
        seq_value = item.get("Seq")
        if seq_value is None:
            raise WebhookBodyError(f"{path}.Seq", "missing")
        seq = _int_value(seq_value, f"{path}.Seq", INT64_MAX)
        items.append(ExtensionItem(key=key, value=value, seq=seq))
    return tuple(items)


def _group_ext(body: Mapping[str, Any]) -> GroupMsgExtensionEvent:
    operation = _ext_operation(body)
    return GroupMsgExtensionEvent(
        group_id=_str(body, "GroupId"),
        msg_seq=_int(body, "MsgSeq", UINT32_MAX),
        operation=operation,
        items=_ext_items(body, operation),
        seq=_int(body, "Seq"),
        event_time=_event_time(body),
    )


def _c2c_ext(body: Mapping[str, Any]) -> C2CMsgExtensionEvent:
    operation = _ext_operation(body)
    return C2CMsgExtensionEvent(
        from_account=_str(body, "From_Account"),
        to_account=_str(body, "To_Account"),
        msg_key=_str(body, "MsgKey"),
        operation=operation,
        items=_ext_items(body, operation),
        seq=_int(body, "Seq"),
        event_time=_event_time(body),
    )


def _attr_changed(body: Mapping[str, Any]) -> GroupAttrChangedEvent:
    raw_op = _str(body, "OptionType")
    try:
        operation = GroupAttrOperation(raw_op.lower())
    except ValueError:
        raise WebhookBodyError(
            "OptionType", f"expected set, modify, delete or clear, got {raw_op[:40]!r}"
        ) from None
    with_values = operation in (GroupAttrOperation.SET, GroupAttrOperation.MODIFY)
    raw = _list(body, "GroupAttr", default_empty=not with_values)
    attrs_: dict[str, str] = {}
    for i, item in enumerate(raw):
        path = f"GroupAttr[{i}]"
        if not isinstance(item, Mapping):
            raise WebhookBodyError(path, f"expected an object, got {type(item).__name__}")
        key = _item_str(item, path, "key", True)
        if not key:
            raise WebhookBodyError(f"{path}.key", "must not be empty")
        attrs_[key] = _item_str(item, path, "value", with_values)
    return GroupAttrChangedEvent(
        group_id=_str(body, "GroupId"),
        group_type=_str(body, "Type"),
        operator=_str(body, "Operator_Account", empty=True),
        operation=operation,
        attrs=attrs_,
        event_time=_event_time(body),
    )


_PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], WebhookEvent]]] = {
    GROUP_MSG_EXTENSION: _group_ext,
    C2C_MSG_EXTENSION: _c2c_ext,
    ATTR_CHANGED: _attr_changed,
}


def parse_webhook(
    command: str, body: bytes | bytearray | memoryview | str | Mapping[str, Any]
) -> WebhookEvent:
    """Parse one webhook body into its typed event.

    ``command`` is the query's ``CallbackCommand``; ``body`` the raw body (bytes or str) or an
    already decoded mapping. The three webhooks of extensions and group attributes become
    :class:`GroupMsgExtensionEvent`, :class:`C2CMsgExtensionEvent` and
    :class:`GroupAttrChangedEvent`; any other command an :class:`UnknownWebhookEvent` holding the
    decoded body. A malformed body raises :class:`~tim_async.errors.TimWebhookError` (a
    :class:`WebhookBodyError`) naming the field; unknown extra fields are ignored. A body whose
    own ``CallbackCommand`` differs from ``command`` is refused.
    """
    if not isinstance(command, str) or not command:
        raise WebhookBodyError("CallbackCommand", "missing")
    decoded = _decode(body)
    if not isinstance(decoded, Mapping):
        raise WebhookBodyError("body", f"expected a JSON object, got {type(decoded).__name__}")
    own = decoded.get("CallbackCommand")
    if own is not None and own != command:
        shown = own[:60] if isinstance(own, str) else type(own).__name__
        raise WebhookBodyError(
            "CallbackCommand", f"the body says {shown!r}, the query says {command[:60]!r}"
        )
    parser = _PARSERS.get(command)
    if parser is None:
        return UnknownWebhookEvent(command=command, body=decoded)
    return parser(decoded)
