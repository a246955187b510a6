"""What an endpoint module needs from the layer below: the :class:`Caller` protocol.

It sits below both the endpoint modules and the paging walk, and describes the client's
:class:`~tim_async.session.Session` without importing it (so no endpoint module imports aiohttp).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Caller"]


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
