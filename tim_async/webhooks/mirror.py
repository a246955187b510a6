"""ExtensionMirror: an exact local copy of one message's extensions, kept from its webhooks.

Every write to a message takes the next message-wide ``Seq`` (spec 3.3), and its webhook
carries it, so a mirror that holds the state at ``seq`` can apply the event of ``seq + 1``
exactly, knows an event at or below ``seq`` is a duplicate or a late one (ignored), and knows an
event above ``seq + 1`` means it missed a write (a dropped or a still delayed delivery): it
re-pulls the message then. It never holds a state the message did not have.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any

from tim_async.errors import TimTypeError
from tim_async.models import ExtensionItem, ExtensionList

from .events import (
    C2CMsgExtensionEvent,
    ExtensionOperation,
    GroupMsgExtensionEvent,
    WebhookEvent,
)

if TYPE_CHECKING:
    from tim_async.client import TimClient

__all__ = ["ExtensionMirror", "MirrorOutcome"]


class MirrorOutcome(enum.StrEnum):
    """What :meth:`ExtensionMirror.apply` did with an event."""

    APPLIED = "applied"
    """The event was the next write: applied."""
    STALE = "stale"
    """A duplicate or a late event (``seq`` at or below the mirror's): ignored."""
    REPULLED = "repulled"
    """The event showed a gap (or the mirror was empty): the message was pulled again."""
    OTHER = "other"
    """The event is not about this message."""


class ExtensionMirror:
    """The extensions of one message, kept up to date from its webhook events.

    ``target`` names the message: an object with ``group_id`` and ``msg_seq`` (a group
    message, e.g. ``GroupMessage``) or with ``to_account``, ``msg_key`` and optionally
    ``from_account`` (a one-to-one message, e.g. ``C2CMessage``). Use :meth:`apply` as (or
    inside) a webhook handler; it is safe to call from concurrent handler tasks. The first
    event, or :meth:`refresh`, pulls the message.
    """

    def __init__(self, tim: TimClient, target: Any) -> None:
        self._tim = tim
        self._group = hasattr(target, "group_id") and hasattr(target, "msg_seq")
        if not self._group and not (hasattr(target, "to_account") and hasattr(target, "msg_key")):
            raise TimTypeError(
                "target",
                "expected a group message (group_id, msg_seq) or a one-to-one message "
                "(to_account, msg_key, from_account)",
            )
        self.target = target
        self._items: dict[str, ExtensionItem] = {}
        #: the message-wide Seq the mirror is at (None: not pulled yet)
        self.seq: int | None = None
        #: ClearSeq as far as the mirror knows
        self.clear_seq = 0
        #: how many times the message was pulled
        self.pulls = 0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ExtensionMirror(target={self.target!r}, seq={self.seq}, keys={len(self._items)})"

    # ---------------------------------------------------------------------------- reading

    @property
    def items(self) -> tuple[ExtensionItem, ...]:
        """The pairs, sorted by ``seq`` (as a pull returns them)."""
        return tuple(sorted(self._items.values(), key=lambda item: item.seq))

    def as_dict(self) -> dict[str, str]:
        """``{key: value}`` in ``seq`` order."""
        return {item.key: item.value for item in self.items}

    def matches(self, event: WebhookEvent) -> bool:
        """Whether ``event`` is about this mirror's message."""
        target = self.target
        if self._group:
            return (
                isinstance(event, GroupMsgExtensionEvent)
                and event.group_id == target.group_id
                and event.msg_seq == target.msg_seq
            )
        return isinstance(event, C2CMsgExtensionEvent) and event.msg_key == target.msg_key

    # ---------------------------------------------------------------------------- updating

    async def refresh(self) -> None:
        """Pull the message again and hold exactly what the server holds."""
        async with self._lock:
            await self._pull()

    async def _pull(self) -> None:
        target = self.target
        extensions: ExtensionList
        if self._group:
            extensions = await self._tim.msg_ext.group_get_key_values(
                target.group_id, target.msg_seq
            )
        else:
            extensions = await self._tim.msg_ext.get_key_values(
                target.to_account,
                target.msg_key,
                from_account=getattr(target, "from_account", None),
            )
        self._items = {item.key: item for item in extensions.items}
        self.seq = extensions.latest_seq
        self.clear_seq = extensions.clear_seq
        self.pulls += 1

    async def apply(self, event: WebhookEvent) -> MirrorOutcome:
        """Apply one webhook event: the next write is applied, an old one ignored, a gap
        re-pulls (see the module docstring)."""
        if not self.matches(event):
            return MirrorOutcome.OTHER
        assert isinstance(event, GroupMsgExtensionEvent | C2CMsgExtensionEvent)
        async with self._lock:
            if self.seq is not None and event.seq <= self.seq:
                return MirrorOutcome.STALE
            if self.seq is None or event.seq != self.seq + 1:
                await self._pull()
                return MirrorOutcome.REPULLED
            if event.operation is ExtensionOperation.SET:
                for item in event.items:
                    self._items[item.key] = item
            elif event.operation is ExtensionOperation.DELETE:
                for item in event.items:
                    self._items.pop(item.key, None)
            else:
                self._items.clear()
                self.clear_seq = event.seq
            self.seq = event.seq
            return MirrorOutcome.APPLIED
