"""The emulator's data: groups, messages, message extensions, group attributes and counters.

Pure Python, no I/O: every operation either applies completely or raises :class:`EmulatorError`
with the REST error code and an informative ``ErrorInfo``, leaving the state untouched. The HTTP
handlers (:mod:`tim_async.testing.commands`) and the direct seeding helpers of
:class:`~tim_async.testing.FakeTimServer` go through the same methods, so seeded data obeys the
same limits as data written over HTTP.
"""

from __future__ import annotations

import bisect
import collections
import random
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "ATTR_KEY_MAX_BYTES",
    "ATTR_MAX_KEYS",
    "ATTR_TOTAL_MAX_BYTES",
    "ATTR_VALUE_MAX_BYTES",
    "COUNTER_KEY_MAX_BYTES",
    "COUNTER_MAX_KEYS",
    "EXT_KEY_MAX_BYTES",
    "EXT_MAX_PAIRS",
    "EXT_MAX_PER_CALL",
    "EXT_VALUE_MAX_BYTES",
    "GROUP_ID_MAX_BYTES",
    "GROUP_TYPES",
    "INT64_MAX",
    "INT64_MIN",
    "NO_EXTENSION_CODE",
    "C2CMessage",
    "EmulatorError",
    "ExtensionMeta",
    "Extensions",
    "Group",
    "GroupMessage",
    "Message",
    "TimState",
]

# Limits from the spec (sections 3, 4 and 5).
EXT_MAX_PAIRS: Final = 300
EXT_MAX_PER_CALL: Final = 20
EXT_KEY_MAX_BYTES: Final = 100
EXT_VALUE_MAX_BYTES: Final = 1000
ATTR_MAX_KEYS: Final = 16
ATTR_KEY_MAX_BYTES: Final = 32
ATTR_VALUE_MAX_BYTES: Final = 4000
ATTR_TOTAL_MAX_BYTES: Final = 16000
COUNTER_MAX_KEYS: Final = 20
COUNTER_KEY_MAX_BYTES: Final = 128
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: Tencent group IDs are at most 48 bytes.
GROUP_ID_MAX_BYTES: Final = 48
U32_MAX: Final = 2**32 - 1

#: Group types the emulator knows (the new names Work/Meeting are aliases of Private/ChatRoom).
GROUP_TYPES: Final = frozenset(
    {"Private", "Work", "Public", "ChatRoom", "Meeting", "AVChatRoom", "Community"}
)
#: ErrorCode of an extension command on a message that cannot carry extensions (sent without
#: ``SupportMessageExtension: 1``, or in an AVChatRoom). Tencent does not document the code
#: (spec section 10, unconfirmed): 10004 "invalid parameter" says the request named a message
#: the command cannot work on, without claiming the message is missing (23004) or that the
#: app lacks the paid feature (10008).
NO_EXTENSION_CODE: Final = 10004
#: Group types whose messages have no extensions (AVChatRoom keeps no message history).
_NO_EXTENSION_TYPES: Final = frozenset({"AVChatRoom"})
_ID_ALPHABET: Final = string.ascii_uppercase + string.digits


class EmulatorError(Exception):
    """A REST error: the handler answers ``{"ActionStatus": "FAIL", "ErrorCode": code, ...}``."""

    def __init__(self, code: int, info: str) -> None:
        self.code = code
        self.info = info
        super().__init__(f"ErrorCode {code}: {info}")


def _nbytes(text: str) -> int:
    # ASCII fast path: len() is the byte count.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


# --------------------------------------------------------------------------- message extensions


@attrs.frozen
class ExtensionMeta:
    """Bookkeeping of one message's extensions (for assertions in tests)."""

    latest_seq: int
    clear_seq: int
    #: pairs kept in storage, including pairs hidden by the last clear
    stored: int
    #: pairs with ``seq > clear_seq`` (what a client should end up with)
    visible: int


class Extensions:
    """The key-value pairs of one message.

    ``pairs`` maps key -> (value, seq). Every write takes a new message-wide seq (latest + 1) and
    re-inserts its keys at the end of the dict, so iteration order is always sorted by seq, and by
    request order within one seq. A clear only moves ``clear_seq``: the older pairs stay in storage
    (and are served by pulls unless ``serve_cleared`` is off) until a later write replaces or
    deletes them.
    """

    __slots__ = ("_snapshots", "clear_seq", "latest_seq", "pairs")

    def __init__(self) -> None:
        self.pairs: dict[str, tuple[str, int]] = {}
        self.latest_seq = 0
        self.clear_seq = 0
        # serve_cleared -> (seqs, wire items); rebuilt after each write
        self._snapshots: dict[bool, tuple[list[int], list[dict[str, Any]]]] = {}

    def visible(self) -> dict[str, tuple[str, int]]:
        clear = self.clear_seq
        return {k: v for k, v in self.pairs.items() if v[1] > clear}

    def visible_count(self) -> int:
        clear = self.clear_seq
        return sum(1 for _, seq in self.pairs.values() if seq > clear)

    def meta(self) -> ExtensionMeta:
        return ExtensionMeta(
            latest_seq=self.latest_seq,
            clear_seq=self.clear_seq,
            stored=len(self.pairs),
            visible=self.visible_count(),
        )

    # writes --------------------------------------------------------------------------------

    def set(self, items: Sequence[tuple[str, str]]) -> int:
        """Set (upsert) ``items`` under one new seq; return that seq."""
        if not items:
            raise EmulatorError(10004, "ExtensionList must hold at least one pair")
        if len(items) > EXT_MAX_PER_CALL:
            raise EmulatorError(
                10004,
                f"ExtensionList holds {len(items)} pairs; at most {EXT_MAX_PER_CALL} per call",
            )
        clear = self.clear_seq
        new_keys: set[str] = set()
        for i, (key, value) in enumerate(items):
            _check_ext_key(key, i)
            vlen = _nbytes(value)
            if vlen > EXT_VALUE_MAX_BYTES:
                raise EmulatorError(
                    10004,
                    f"ExtensionList[{i}].Value is {vlen} bytes; at most {EXT_VALUE_MAX_BYTES}",
                )
            old = self.pairs.get(key)
            if old is None or old[1] <= clear:
                new_keys.add(key)
        if new_keys:
            total = self.visible_count() + len(new_keys)
            if total > EXT_MAX_PAIRS:
                raise EmulatorError(
                    10004,
                    f"the message would hold {total} extension pairs; "
                    f"at most {EXT_MAX_PAIRS} per message",
                )
        seq = self.latest_seq + 1
        pairs = self.pairs
        for key, value in items:
            pairs.pop(key, None)
            pairs[key] = (value, seq)
        self.latest_seq = seq
        self._snapshots.clear()
        return seq

    def delete(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` (missing keys are ignored) under one new seq; return that seq."""
        if not keys:
            raise EmulatorError(10004, "ExtensionList must hold at least one key to delete")
        if len(keys) > EXT_MAX_PER_CALL:
            raise EmulatorError(
                10004,
                f"ExtensionList holds {len(keys)} keys; at most {EXT_MAX_PER_CALL} per call",
            )
        for i, key in enumerate(keys):
            _check_ext_key(key, i)
        for key in keys:
            self.pairs.pop(key, None)
        self.latest_seq += 1
        self._snapshots.clear()
        return self.latest_seq

    def clear(self) -> int:
        """Clear all pairs: take a new seq ``s`` and set ``clear_seq = s``; return ``s``."""
        self.latest_seq += 1
        self.clear_seq = self.latest_seq
        self._snapshots.clear()
        return self.latest_seq

    # reads ---------------------------------------------------------------------------------

    def page(
        self, start_seq: int, page_size: int, *, serve_cleared: bool = True
    ) -> tuple[list[dict[str, Any]], bool]:
        """Items with ``Seq >= start_seq`` sorted by seq, at most ``page_size`` of them, and
        whether the page holds the last such item. The cut may fall inside a same-seq run."""
        snap = self._snapshots.get(serve_cleared)
        if snap is None:
            clear = self.clear_seq
            seqs: list[int] = []
            items: list[dict[str, Any]] = []
            for key, (value, seq) in self.pairs.items():
                if serve_cleared or seq > clear:
                    seqs.append(seq)
                    items.append({"Key": key, "Value": value, "Seq": seq})
            snap = (seqs, items)
            self._snapshots[serve_cleared] = snap
        seqs, items = snap
        start = bisect.bisect_left(seqs, start_seq)
        end = start + page_size
        return items[start:end], end >= len(items)


def _check_ext_key(key: str, index: int) -> None:
    if not key:
        raise EmulatorError(10004, f"ExtensionList[{index}].Key must not be empty")
    klen = _nbytes(key)
    if klen > EXT_KEY_MAX_BYTES:
        raise EmulatorError(
            10004, f"ExtensionList[{index}].Key is {klen} bytes; at most {EXT_KEY_MAX_BYTES}"
        )


# --------------------------------------------------------------------------- groups and messages


class GroupMessage:
    """A group message: ``msg_seq``, whether it carries extensions, and what was sent."""

    __slots__ = ("ext", "from_account", "group_id", "msg_body", "msg_seq", "support_extension")

    def __init__(
        self,
        msg_seq: int,
        support_extension: bool,
        *,
        group_id: str = "",
        from_account: str | None = None,
        msg_body: list[dict[str, Any]] | None = None,
    ) -> None:
        self.msg_seq = msg_seq
        self.support_extension = support_extension
        self.group_id = group_id
        self.from_account = from_account
        #: the ``MsgBody`` sent over HTTP (None for a seeded message)
        self.msg_body = msg_body
        self.ext = Extensions()


class C2CMessage:
    """A one-to-one message: its parties, ``msg_key``, whether it carries extensions."""

    __slots__ = ("ext", "from_account", "msg_body", "msg_key", "support_extension", "to_account")

    def __init__(
        self,
        from_account: str,
        to_account: str,
        msg_key: str,
        support_extension: bool,
        *,
        msg_body: list[dict[str, Any]] | None = None,
    ) -> None:
        self.from_account = from_account
        self.to_account = to_account
        self.msg_key = msg_key
        self.support_extension = support_extension
        self.msg_body = msg_body
        self.ext = Extensions()


#: a message whose extensions a command reads or writes
Message = GroupMessage | C2CMessage


class Group:
    __slots__ = (
        "attr_writes",
        "attrs",
        "counters",
        "create_time",
        "group_id",
        "group_type",
        "last_msg_seq",
        "messages",
        "name",
    )

    def __init__(
        self, group_id: str, group_type: str, name: str = "", create_time: int = 0
    ) -> None:
        self.group_id = group_id
        self.group_type = group_type
        self.name = name or group_id
        self.create_time = create_time
        self.last_msg_seq = 0
        self.messages: dict[int, GroupMessage] = {}
        self.attrs: dict[str, str] = {}
        self.counters: dict[str, int] = {}
        # arrival times (monotonic) of attribute writes, for the 5/s per group limit
        self.attr_writes: collections.deque[float] = collections.deque()


class TimState:
    """Everything the emulator stores, plus the switches that change command behaviour."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        page_size: int = 200,
        premium: bool = True,
        serve_cleared: bool = True,
        set_response_shape: str = "nested",
        attr_write_limit: int | None = 5,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.groups: dict[str, Group] = {}
        self.c2c: dict[str, C2CMessage] = {}
        self._c2c_seq = 0
        self.page_size = page_size
        #: paid-edition switch: off -> extensions answer 10008, counters 10059
        self.premium = premium
        #: serve pairs hidden by the last clear in pulls (clients must drop Seq <= ClearSeq)
        self.serve_cleared = serve_cleared
        self.set_response_shape = set_response_shape
        #: group attribute writes per second per group (None: unlimited)
        self.attr_write_limit = attr_write_limit
        #: sender of an ``openim/sendmsg`` without From_Account (FakeTimServer: its first admin)
        self.admin = "administrator"

    # settings with validation ----------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self._page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"page_size must be a positive int, got {value!r}")
        self._page_size = value

    @property
    def set_response_shape(self) -> str:
        return self._set_response_shape

    @set_response_shape.setter
    def set_response_shape(self, value: str) -> None:
        if value not in ("nested", "flat"):
            raise ValueError(f"set_response_shape must be 'nested' or 'flat', got {value!r}")
        self._set_response_shape = value

    # groups ----------------------------------------------------------------------------------

    def create_group(
        self, group_id: str | None = None, group_type: str = "Public", *, name: str = ""
    ) -> str:
        """Create a group of ``group_type`` (one of :data:`GROUP_TYPES`); ``name`` defaults to
        the id. Raises ValueError for an unknown type, a bad id or an id in use."""
        if group_type not in GROUP_TYPES:
            raise ValueError(
                f"unknown group type {group_type!r}; expected one of {sorted(GROUP_TYPES)}"
            )
        if group_id is None:
            while True:
                group_id = "@TGS#" + "".join(self.rng.choices(_ID_ALPHABET, k=10))
                if group_id not in self.groups:
                    break
        elif not group_id or _nbytes(group_id) > GROUP_ID_MAX_BYTES:
            raise ValueError(f"group_id must be 1 to {GROUP_ID_MAX_BYTES} bytes")
        elif group_id in self.groups:
            raise ValueError(f"group {group_id!r} exists already")
        self.groups[group_id] = Group(group_id, group_type, name, int(self.clock()))
        return group_id

    def delete_group(self, group_id: str) -> None:
        del self.groups[group_id]

    def group(self, group_id: str) -> Group:
        """The group for a REST command: 10015 for an invalid id, 10010 for a missing group."""
        if not group_id or _nbytes(group_id) > GROUP_ID_MAX_BYTES:
            raise EmulatorError(10015, f"invalid GroupId {group_id!r}")
        group = self.groups.get(group_id)
        if group is None:
            raise EmulatorError(10010, f"group {group_id!r} does not exist or was deleted")
        return group

    # messages --------------------------------------------------------------------------------

    def send_group_msg(
        self,
        group_id: str,
        *,
        support_extension: bool = True,
        msg_seq: int | None = None,
        from_account: str | None = None,
        msg_body: list[dict[str, Any]] | None = None,
    ) -> int:
        """Record a message in ``group_id``; return its MsgSeq (last + 1 unless given)."""
        group = self.groups[group_id]
        if msg_seq is None:
            msg_seq = group.last_msg_seq + 1
        elif msg_seq <= group.last_msg_seq:
            raise ValueError(
                f"msg_seq must increase: {msg_seq} <= last MsgSeq {group.last_msg_seq}"
            )
        if msg_seq > U32_MAX:
            raise ValueError("MsgSeq is an unsigned 32-bit number")
        group.last_msg_seq = msg_seq
        group.messages[msg_seq] = GroupMessage(
            msg_seq,
            support_extension,
            group_id=group_id,
            from_account=from_account,
            msg_body=msg_body,
        )
        return msg_seq

    def send_c2c_msg(
        self,
        from_account: str,
        to_account: str,
        *,
        support_extension: bool = True,
        msg_key: str | None = None,
        msg_random: int | None = None,
        msg_body: list[dict[str, Any]] | None = None,
    ) -> str:
        """Record a one-to-one message; return its MsgKey, ``{random}_{seq}_{unix time}`` like
        Tencent's (e.g. ``128493_903762_1572870301``) unless given."""
        if not from_account or not to_account:
            raise ValueError("from_account and to_account must be non-empty")
        if msg_key is None:
            while True:
                self._c2c_seq += 1
                rand = self.rng.randint(0, U32_MAX) if msg_random is None else msg_random
                msg_key = f"{rand}_{self._c2c_seq}_{int(self.clock())}"
                if msg_key not in self.c2c:
                    break
        elif msg_key in self.c2c:
            raise ValueError(f"MsgKey {msg_key!r} exists already")
        self.c2c[msg_key] = C2CMessage(
            from_account, to_account, msg_key, support_extension, msg_body=msg_body
        )
        return msg_key

    def group_message(self, group_id: str, msg_seq: int) -> GroupMessage:
        """A group message for an extension command (codes 23004, 10004, see below)."""
        group = self.groups.get(group_id)
        message = group.messages.get(msg_seq) if group is not None else None
        if group is None or message is None:
            raise EmulatorError(
                23004, f"group message {msg_seq} in group {group_id!r} does not exist"
            )
        if group.group_type in _NO_EXTENSION_TYPES:
            raise EmulatorError(
                NO_EXTENSION_CODE,
                f"group type {group.group_type} does not support message extensions",
            )
        if not message.support_extension:
            raise EmulatorError(
                NO_EXTENSION_CODE,
                f"group message {msg_seq} in group {group_id!r} was not sent with "
                "SupportMessageExtension=1: it cannot carry extensions",
            )
        return message

    def group_message_ext(self, group_id: str, msg_seq: int) -> Extensions:
        """The extensions of a group message (see :meth:`group_message`)."""
        return self.group_message(group_id, msg_seq).ext

    def c2c_message(self, from_account: str | None, to_account: str, msg_key: str) -> C2CMessage:
        """A one-to-one message for an extension command. ``to_account`` must be one of the
        two parties; ``from_account``, when given, the other one."""
        message = self.c2c.get(msg_key)
        found = False
        if message is not None:
            parties = (message.from_account, message.to_account)
            if from_account is None:
                found = to_account in parties
            else:
                found = {from_account, to_account} == set(parties)
        if message is None or not found:
            raise EmulatorError(
                23004,
                f"one-to-one message {msg_key!r} between {from_account!r} and {to_account!r} "
                "does not exist",
            )
        if not message.support_extension:
            raise EmulatorError(
                NO_EXTENSION_CODE,
                f"one-to-one message {msg_key!r} was not sent with SupportMessageExtension=1: "
                "it cannot carry extensions",
            )
        return message

    def c2c_message_ext(
        self, from_account: str | None, to_account: str, msg_key: str
    ) -> Extensions:
        """The extensions of a one-to-one message (see :meth:`c2c_message`)."""
        return self.c2c_message(from_account, to_account, msg_key).ext

    def write_extensions(
        self, message: Message, operate_type: int, items: Sequence[tuple[str, str]]
    ) -> tuple[int, list[dict[str, Any]]]:
        """Apply one extension write from a REST command to ``message``: ``operate_type`` 1 sets
        ``items`` (key, value), 2 deletes their keys, 3 clears. Return the new message-wide seq
        and the written pairs as ``{"Key", "Value", "Seq"}`` (deleted keys with Value "",
        [] for a clear). Every extension write made over HTTP goes through here."""
        ext = message.ext
        if operate_type == 1:
            seq = ext.set(items)
            return seq, [{"Key": k, "Value": v, "Seq": seq} for k, v in items]
        if operate_type == 2:
            keys = [k for k, _ in items]
            seq = ext.delete(keys)
            return seq, [{"Key": k, "Value": "", "Seq": seq} for k in keys]
        if operate_type == 3:
            return ext.clear(), []
        raise EmulatorError(10004, f"OperateType must be 1, 2 or 3, got {operate_type!r}")

    # group attributes ------------------------------------------------------------------------

    def _attr_group(self, group_id: str, now: float | None, *, clear: bool = False) -> Group:
        group = self.group(group_id)
        if clear and group.group_type == "Community":
            raise EmulatorError(10007, "clear_group_attr is not supported for Community groups")
        limit = self.attr_write_limit
        if now is not None and limit is not None:
            writes = group.attr_writes
            cutoff = now - 1.0
            while writes and writes[0] <= cutoff:
                writes.popleft()
            if len(writes) >= limit:
                raise EmulatorError(
                    10049,
                    f"more than {limit} attribute writes per second on group {group_id!r}",
                )
            writes.append(now)
        return group

    def _commit_attrs(
        self, group: Group, attrs: dict[str, str], option: str, changed: list[tuple[str, str]]
    ) -> None:
        """Store a group's new attributes. Every attribute write (``option`` "modify", "set",
        "delete" or "clear"; ``changed`` the pairs the request named) ends here, once all
        checks passed."""
        group.attrs = attrs

    def get_group_attrs(self, group_id: str) -> dict[str, str]:
        return dict(self.group(group_id).attrs)

    def modify_group_attrs(
        self, group_id: str, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> None:
        """Upsert ``items``. ``now`` (monotonic) enforces the write rate; None skips it."""
        group = self._attr_group(group_id, now)
        result = dict(group.attrs)
        result.update(items)
        _check_attrs(items, result)
        self._commit_attrs(group, result, "modify", list(items))

    def set_group_attrs(
        self, group_id: str, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> None:
        """Replace all attributes with ``items``."""
        group = self._attr_group(group_id, now)
        result = dict(items)
        _check_attrs(items, result)
        self._commit_attrs(group, result, "set", list(items))

    def delete_group_attrs(
        self, group_id: str, keys: Sequence[str], *, now: float | None = None
    ) -> None:
        group = self._attr_group(group_id, now)
        for i, key in enumerate(keys):
            _check_attr_key(key, i)
            if key not in group.attrs:
                raise EmulatorError(
                    10050, f"GroupAttr[{i}].key {key!r} does not exist in group {group_id!r}"
                )
        gone = set(keys)
        result = {k: v for k, v in group.attrs.items() if k not in gone}
        self._commit_attrs(group, result, "delete", [(k, group.attrs[k]) for k in keys])

    def clear_group_attrs(self, group_id: str, *, now: float | None = None) -> None:
        group = self._attr_group(group_id, now, clear=True)
        self._commit_attrs(group, {}, "clear", list(group.attrs.items()))

    # group counters --------------------------------------------------------------------------

    def _counter_group(self, group_id: str) -> Group:
        group = self.group(group_id)
        if group.group_type == "Community":
            raise EmulatorError(10007, "group counters are not supported for Community groups")
        return group

    def get_group_counters(
        self, group_id: str, keys: Sequence[str] | None = None
    ) -> list[tuple[str, int]]:
        """Counters in creation order; with ``keys``, those of them that exist, in that order."""
        group = self._counter_group(group_id)
        if keys is None:
            return list(group.counters.items())
        _check_counter_keys(keys, "GroupCounterKeys")
        counters = group.counters
        seen: set[str] = set()
        out: list[tuple[str, int]] = []
        for key in keys:
            if key in counters and key not in seen:
                seen.add(key)
                out.append((key, counters[key]))
        return out

    def update_group_counters(
        self, group_id: str, items: Sequence[tuple[str, int]], mode: str
    ) -> list[tuple[str, int]]:
        """Apply ``mode`` ("Set", "Increase", "Decrease") to each item, all or nothing; return
        the updated counters' latest values (each key once, in first-appearance order)."""
        if mode not in ("Set", "Increase", "Decrease"):
            raise EmulatorError(
                10004, f"Mode must be 'Set', 'Increase' or 'Decrease', got {mode!r}"
            )
        group = self._counter_group(group_id)
        if not items:
            raise EmulatorError(10004, "GroupCounter must hold at least one counter")
        _check_counter_keys([k for k, _ in items], "GroupCounter", key_field="Key")
        result = dict(group.counters)
        for i, (key, value) in enumerate(items):
            if not INT64_MIN <= value <= INT64_MAX:
                raise EmulatorError(
                    10004, f"GroupCounter[{i}].Value {value} is not a signed 64-bit integer"
                )
            if mode == "Set":
                new = value
            elif mode == "Increase":
                new = result.get(key, 0) + value
            else:
                new = result.get(key, 0) - value
            if not INT64_MIN <= new <= INT64_MAX:
                raise EmulatorError(
                    10004,
                    f"GroupCounter[{i}]: {mode} {value} on {key!r} overflows a signed "
                    "64-bit integer",
                )
            result[key] = new
        if len(result) > COUNTER_MAX_KEYS:
            raise EmulatorError(
                10063,
                f"group {group_id!r} would hold {len(result)} counters; "
                f"at most {COUNTER_MAX_KEYS} per group",
            )
        group.counters = result
        out: dict[str, int] = {}
        for key, _ in items:
            out[key] = result[key]
        return list(out.items())

    def delete_group_counters(self, group_id: str, keys: Sequence[str] | None = None) -> None:
        group = self._counter_group(group_id)
        if keys is None:
            group.counters = {}
            return
        _check_counter_keys(keys, "GroupCounterKeys")
        for key in keys:
            group.counters.pop(key, None)


def _check_attr_key(key: str, index: int) -> None:
    if not key:
        raise EmulatorError(10004, f"GroupAttr[{index}].key must not be empty")
    klen = _nbytes(key)
    if klen > ATTR_KEY_MAX_BYTES:
        raise EmulatorError(
            10045, f"GroupAttr[{index}].key is {klen} bytes; at most {ATTR_KEY_MAX_BYTES}"
        )


def _check_attrs(items: Sequence[tuple[str, str]], result: Mapping[str, str]) -> None:
    if not items:
        raise EmulatorError(10004, "GroupAttr must hold at least one attribute")
    for i, (key, value) in enumerate(items):
        _check_attr_key(key, i)
        vlen = _nbytes(value)
        if vlen > ATTR_VALUE_MAX_BYTES:
            raise EmulatorError(
                10046, f"GroupAttr[{i}].value is {vlen} bytes; at most {ATTR_VALUE_MAX_BYTES}"
            )
    if len(result) > ATTR_MAX_KEYS:
        raise EmulatorError(
            10047, f"the group would hold {len(result)} attributes; at most {ATTR_MAX_KEYS}"
        )
    total = sum(_nbytes(v) for v in result.values())
    if total > ATTR_TOTAL_MAX_BYTES:
        raise EmulatorError(
            10048,
            f"the group's attribute values would total {total} bytes; "
            f"at most {ATTR_TOTAL_MAX_BYTES}",
        )


def _check_counter_keys(keys: Iterable[str], field: str, key_field: str = "") -> None:
    keys = list(keys)
    if len(keys) > COUNTER_MAX_KEYS:
        raise EmulatorError(
            10063, f"{field} holds {len(keys)} keys; at most {COUNTER_MAX_KEYS} per call"
        )
    suffix = f".{key_field}" if key_field else ""
    for i, key in enumerate(keys):
        if not key:
            raise EmulatorError(10004, f"{field}[{i}]{suffix} must not be empty")
        klen = _nbytes(key)
        if klen > COUNTER_KEY_MAX_BYTES:
            raise EmulatorError(
                10004, f"{field}[{i}]{suffix} is {klen} bytes; at most {COUNTER_KEY_MAX_BYTES}"
            )
