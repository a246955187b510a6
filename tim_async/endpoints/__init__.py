"""Typed endpoint namespaces: validate input, build the request body, decode the answer.

Each namespace class takes one *caller* (the client's session) and never touches aiohttp: all
I/O policy (URL, UserSig, rate limits, retries, the error envelope) lives behind
:class:`Caller`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from tim_async.endpoints.group_attr import GroupAttr
from tim_async.endpoints.group_counter import GroupCounter
from tim_async.endpoints.msg_ext import MsgExt

__all__ = ["Caller", "GroupAttr", "GroupCounter", "MsgExt"]


class Caller(Protocol):
    """What an endpoint namespace needs from the layer below (the client's ``Session``)."""

    async def call(
        self, api: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """Send ``body`` to ``api`` ("service/command") and return the decoded JSON answer.

        The envelope is already checked: ``ErrorCode != 0`` arrives as a
        :class:`~tim_async.errors.TimAPIError`, transport failures as
        :class:`~tim_async.errors.TimTransportError`; rate limits and retries are handled
        below. ``idempotent=False`` forbids resending once the request may have reached the
        server. The returned dict is fully read (no connection is held)."""
        ...

    def operation(self) -> AbstractContextManager[None]:
        """A block whose calls share one ``timeout`` (a multi-request operation such as a paged
        pull), counted from entering it."""
        ...
