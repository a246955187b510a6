"""What an endpoint module needs from the layer below: the :class:`Caller` protocol.

It sits below both the endpoint modules and the paging walk, and describes the client's
:class:`~tim_async.session.Session` without importing it (so no endpoint module imports aiohttp).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, overload

__all__ = ["Caller"]

_T = TypeVar("_T")


class Caller(Protocol):
    """What an endpoint namespace needs from the layer below (the client's ``Session``)."""

    @overload
    async def call(
        self, api: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]: ...

    @overload
    async def call(
        self,
        api: str,
        body: dict[str, Any],
        *,
        idempotent: bool = True,
        decode: Callable[[bytes], _T | None],
    ) -> dict[str, Any] | _T: ...

    async def call(
        self,
        api: str,
        body: dict[str, Any],
        *,
        idempotent: bool = True,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        """Send ``body`` to ``api`` ("service/command") and return the decoded JSON answer.

        The envelope is already checked: ``ErrorCode != 0`` arrives as a
        :class:`~tim_async.errors.TimAPIError`, transport failures as
        :class:`~tim_async.errors.TimTransportError`; rate limits and retries are handled
        below. ``idempotent=False`` forbids resending once the request may have reached the
        server. The returned dict is fully read (no connection is held).

        ``decode`` is an offer, not a demand: a caller that sees the answer's bytes may return
        what ``decode(raw)`` gives instead of the dict (when it is not None; ``decode`` returns
        None for anything but a successful answer it fully checked). A caller may ignore it and
        always return the dict, so the endpoint handles both."""
        ...

    def operation(self) -> AbstractContextManager[None]:
        """A block whose calls share one ``timeout`` (a multi-request operation such as a paged
        pull), counted from entering it."""
        ...
