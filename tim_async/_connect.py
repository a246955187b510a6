"""Knowing when a request has its connection: from then on it may reach the server.

A call that runs out of time before (waiting for a free pooled connection) sent nothing, so even
a non-idempotent call ended cleanly. The client's own aiohttp session uses :class:`Connector`,
which says so at the cost of one ``await``; a caller's session can carry
:func:`connection_trace` (an aiohttp ``TraceConfig``, ~30 µs a request) for the same effect.
:func:`watch` gives the flag the current task's next request sets.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import SimpleNamespace

import aiohttp
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

__all__ = ["Connector", "connection_trace", "is_traced", "unwatch", "watch"]

#: The flag of the request the current task is sending, set once it has a connection.
_CONNECTED: ContextVar[list[bool] | None] = ContextVar("tim_async_connected", default=None)


def watch(flag: list[bool]) -> Token[list[bool] | None]:
    """Have the current task's request set ``flag[0] = True`` once it has a connection; undo
    with :func:`unwatch`."""
    return _CONNECTED.set(flag)


def unwatch(token: Token[list[bool] | None]) -> None:
    _CONNECTED.reset(token)


def _connected() -> None:
    flag = _CONNECTED.get()
    if flag is not None:
        flag[0] = True


def is_traced(http: aiohttp.ClientSession) -> bool:
    """Whether requests of ``http`` report their connection (our connector or trace)."""
    return isinstance(http.connector, Connector) or any(
        isinstance(config, _ConnectionTrace) for config in http.trace_configs
    )


class _ConnectionTrace(aiohttp.TraceConfig):
    """Tells the session when a request got its connection (see :func:`connection_trace`)."""


async def _on_connection(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: object
) -> None:
    _connected()


class Connector(aiohttp.TCPConnector):
    """The client's own connector: tells the session when a request got its connection, at the
    cost of one ``await`` (a ``TraceConfig`` costs ~30 µs a request)."""

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        _connected()
        return conn


def connection_trace() -> aiohttp.TraceConfig:
    """An aiohttp ``TraceConfig`` that tells the client when a request got its connection.

    The client's own aiohttp session knows without it. Add one to a session you give the client
    (``aiohttp.ClientSession(trace_configs=[connection_trace()])``) and a call that ran out of
    time while waiting for a pooled connection counts as never sent, as with the client's own
    session; without it, a request counts as sent once it starts (the safe side: a
    non-idempotent call may then end in :class:`~tim_async.errors.TimOutcomeUnknownError`
    although nothing left the client)."""
    config = _ConnectionTrace()
    config.on_connection_create_end.append(_on_connection)
    config.on_connection_reuseconn.append(_on_connection)
    return config
