"""Groups: the :class:`Group` record and the registry that creates, finds and deletes groups."""

from __future__ import annotations

import collections
import random
import string
from collections.abc import Callable
from typing import Final

from .core import EmulatorError, nbytes
from .messages import GroupMessage

__all__ = ["GROUP_ID_MAX_BYTES", "GROUP_TYPES", "Group", "GroupRegistry"]

#: Tencent group IDs are at most 48 bytes.
GROUP_ID_MAX_BYTES: Final = 48
#: Group types the emulator knows (the new names Work/Meeting are aliases of Private/ChatRoom).
GROUP_TYPES: Final = frozenset(
    {"Private", "Work", "Public", "ChatRoom", "Meeting", "AVChatRoom", "Community"}
)
_ID_ALPHABET: Final = string.ascii_uppercase + string.digits


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


class GroupRegistry:
    """The groups of a :class:`~tim_async.testing.state.TimState` (a part of it, not used alone:
    ``TimState.__init__`` sets the attributes declared here)."""

    rng: random.Random
    clock: Callable[[], float]
    groups: dict[str, Group]

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
        elif not group_id or nbytes(group_id) > GROUP_ID_MAX_BYTES:
            raise ValueError(f"group_id must be 1 to {GROUP_ID_MAX_BYTES} bytes")
        elif group_id in self.groups:
            raise ValueError(f"group {group_id!r} exists already")
        self.groups[group_id] = Group(group_id, group_type, name, int(self.clock()))
        return group_id

    def delete_group(self, group_id: str) -> None:
        del self.groups[group_id]

    def group(self, group_id: str) -> Group:
        """The group for a REST command: 10015 for an invalid id, 10010 for a missing group."""
        if not group_id or nbytes(group_id) > GROUP_ID_MAX_BYTES:
            raise EmulatorError(10015, f"invalid GroupId {group_id!r}")
        group = self.groups.get(group_id)
        if group is None:
            raise EmulatorError(10010, f"group {group_id!r} does not exist or was deleted")
        return group
