"""The messages the emulator stores: group messages and one-to-one (C2C) messages."""

from __future__ import annotations

from typing import Any

from .extensions import Extensions

__all__ = ["C2CMessage", "GroupMessage", "Message"]


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
