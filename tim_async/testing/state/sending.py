"""Sending messages, and finding the message an extension command names (spec section 10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from .core import U32_MAX, EmulatorError
from .extensions import Extensions
from .groups import GroupRegistry
from .messages import C2CMessage, GroupMessage, Message

__all__ = ["NO_EXTENSION_CODE", "MessageStore"]

#: ErrorCode of an extension command on a message that cannot carry extensions (sent without
#: ``SupportMessageExtension: 1``, or in an AVChatRoom). Tencent does not document the code
#: (spec section 10, unconfirmed): 10004 "invalid parameter" says the request named a message
#: the command cannot work on, without claiming the message is missing (23004) or that the
#: app lacks the paid feature (10008).
NO_EXTENSION_CODE: Final = 10004
#: Group types whose messages have no extensions (AVChatRoom keeps no message history).
_NO_EXTENSION_TYPES: Final = frozenset({"AVChatRoom"})


class MessageStore(GroupRegistry):
    """The messages of a :class:`~tim_async.testing.state.TimState` and their extension writes
    (a part of it, not used alone: ``TimState.__init__`` sets the attributes declared here)."""

    c2c: dict[str, C2CMessage]
    _c2c_seq: int

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
