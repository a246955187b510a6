"""The aiohttp side of the emulator: URL checks, UserSig verification, per-command rate
enforcement, the request log and fault delivery.

Pipeline of one request (``POST /v4/{service}/{command}?...``):

1. log it (arrival time, command, query, decoded body);
2. ask the fault injector; ``Fault.http``/``code``/``NON_JSON``/``DROP_BEFORE_APPLY`` answer now,
   with the state untouched and nothing counted against the rate window;
3. URL checks: sdkappid (60012 missing or not an integer, 70020 another app), random (60002),
   contenttype (60002), identifier (60004 missing), UserSig (70002 empty, 70003 undecodable,
   70014 other SDKAppID, 70013 other identifier, 70009 wrong key, 70001 expired), admin (60010);
4. rate: more than ``rate_limit`` accepted requests of this command in the last sliding second
   -> 60007 (a rejected request does not count);
5. body: a JSON object, else 60003;
6. the command itself (:mod:`.commands`);
7. deliver: normally, or per ``DROP_AFTER_APPLY`` / ``slow`` / ``TRUNCATED_JSON``.

HTTP status is 200 for every API result. Served: the 12 commands of :mod:`.commands` and the
bot commands of :mod:`.bot_commands` (:data:`SERVED_COMMANDS`). Any other ``/v4/service/command``
goes through the same pipeline (faults, URL checks, rate) and answers 60009 with an ErrorInfo
naming the command as not emulated; any other path answers 60009 at once. Methods other than POST
answer 60002.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from http import HTTPStatus
from typing import Any, Final

import attrs
import orjson
from aiohttp import web

from tim_async.usersig import InvalidUserSig, verify_usersig

from . import faults as _faults
from .bot_commands import BOT_COMMANDS
from .commands import COMMANDS, Command, error_body
from .faults import Fault, FaultInjector
from .state import EmulatorError, TimState

__all__ = ["EMULATOR_KEY", "SERVED_COMMANDS", "Emulator", "LoggedRequest", "create_app"]

log = logging.getLogger("tim_async.testing")

#: every "service/command" the emulator serves
SERVED_COMMANDS: Final[dict[str, Command]] = {**COMMANDS, **BOT_COMMANDS}

_U32_MAX: Final = 2**32 - 1
_SIG_CACHE_MAX: Final = 4096
_JSON: Final = "application/json"
_NON_JSON_BODY: Final = (
    "<html><head><title>Service Unavailable</title></head><body>"
    "<h1>The server is temporarily busy</h1><p>Please try again later.</p></body></html>"
)


@attrs.define(repr=False, eq=False)
class LoggedRequest:
    """One request as the emulator saw it. Its repr hides the UserSig."""

    #: monotonic clock (``time.monotonic()`` by default) at arrival
    time: float
    #: "service/command"
    command: str
    #: URL query (``usersig`` included; hidden from repr)
    query: dict[str, str]
    #: decoded JSON body, or None when the body is not JSON
    body: Any
    #: ErrorCode answered or applied (None when no envelope was produced: HTTP fault, dropped
    #: before apply, NON_JSON)
    error_code: int | None = None
    #: HTTP status sent (None when the connection was dropped)
    http_status: int | None = None
    #: the injected fault, if any
    fault: Fault | None = None

    @property
    def ok(self) -> bool:
        """Answered ErrorCode 0 with HTTP 200 and no fault."""
        return self.error_code == 0 and self.http_status == 200 and self.fault is None

    def __repr__(self) -> str:
        query = {k: ("<redacted>" if k == "usersig" else v) for k, v in self.query.items()}
        return (
            f"LoggedRequest(time={self.time:.6f}, command={self.command!r}, query={query!r}, "
            f"body={self.body!r}, error_code={self.error_code!r}, "
            f"http_status={self.http_status!r}, fault={self.fault!r})"
        )


# identifier, sdkappid, signature valid, expiry (TLS.time + TLS.expire); None = undecodable
_SigInfo = tuple[str, int, bool, int] | None


class Emulator:
    """Request handling state shared by the routes (see module docstring)."""

    def __init__(
        self,
        state: TimState,
        *,
        sdkappid: int,
        secret_key: str,
        admins: Collection[str] = ("administrator",),
        rate_limit: int | None = 200,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        log_requests: bool = True,
    ) -> None:
        self.state = state
        self.sdkappid = int(sdkappid)
        self._sdkappid_str = str(self.sdkappid)
        self._secret_key = secret_key
        self.admins = frozenset(admins)
        self.rate_limit = rate_limit
        self.clock = clock
        self.monotonic = monotonic
        self.log_requests = log_requests
        self.requests: list[LoggedRequest] = []
        self.faults = FaultInjector()
        self._windows: dict[str, collections.deque[float]] = {}
        self._sig_cache: dict[str, _SigInfo] = {}
        self._closing: asyncio.Event | None = None
        #: called as ``on_write(command, request, body)`` after each applied request (webhooks)
        self.on_write: Callable[[str, web.Request, Any], None] | None = None

    @property
    def rate_limit(self) -> int | None:
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"rate_limit must be a positive int or None, got {value!r}")
        self._rate_limit = value

    def __repr__(self) -> str:
        return f"Emulator(sdkappid={self.sdkappid}, secret_key=<redacted>)"

    # ---------------------------------------------------------------------------- checks

    def _sig_info(self, usersig: str) -> _SigInfo:
        try:
            return self._sig_cache[usersig]
        except KeyError:
            pass
        info: _SigInfo
        try:
            fields, valid = verify_usersig(usersig, self._secret_key)
            info = (
                str(fields["TLS.identifier"]),
                int(fields["TLS.sdkappid"]),
                valid,
                int(fields["TLS.time"]) + int(fields["TLS.expire"]),
            )
        except (InvalidUserSig, KeyError, TypeError, ValueError):
            info = None
        if len(self._sig_cache) >= _SIG_CACHE_MAX:
            self._sig_cache.clear()
        self._sig_cache[usersig] = info
        return info

    def check_url(self, query: Mapping[str, str]) -> tuple[int, str] | None:
        """The URL error for ``query`` as (code, info), or None when the URL is acceptable."""
        sdkappid = query.get("sdkappid")
        if not sdkappid:
            return 60012, "sdkappid is missing from the URL"
        if sdkappid != self._sdkappid_str:
            if not (sdkappid.isascii() and sdkappid.isdigit()):
                return 60012, f"sdkappid {sdkappid!r} is not an integer"
            if len(sdkappid) > 20 or int(sdkappid) != self.sdkappid:
                return 70020, f"SDKAppID {sdkappid} not found"
        random_ = query.get("random")
        if (
            random_ is None
            or not (random_.isascii() and random_.isdigit())
            or len(random_) > 10
            or int(random_) > _U32_MAX
        ):
            return 60002, "random must be an integer in [0, 4294967295]"
        if query.get("contenttype") != "json":
            return 60002, "contenttype must be json"
        identifier = query.get("identifier")
        if not identifier:
            return 60004, "identifier is missing from the URL"
        usersig = query.get("usersig")
        if not usersig:
            return 70002, "usersig is empty"
        info = self._sig_info(usersig)
        if info is None:
            return 70003, "usersig could not be decoded"
        sig_identifier, sig_sdkappid, valid, expires_at = info
        if sig_sdkappid != self.sdkappid:
            return 70014, "SDKAppID in the URL differs from the UserSig's"
        if sig_identifier != identifier:
            return 70013, "identifier in the URL differs from the UserSig's"
        if not valid:
            return 70009, "usersig was not signed with this app's secret key"
        if expires_at < self.clock():
            return 70001, "usersig expired"
        if identifier not in self.admins:
            return 60010, f"{identifier!r} is not an App admin"
        return None

    def admit(self, command: str, now: float) -> bool:
        """Count a request of ``command`` arriving at ``now`` against the sliding second;
        False (and not counted) when that would exceed ``rate_limit``."""
        window = self._windows.get(command)
        if window is None:
            window = self._windows[command] = collections.deque()
        cutoff = now - 1.0
        while window and window[0] <= cutoff:
            window.popleft()
        limit = self._rate_limit
        if limit is not None and len(window) >= limit:
            return False
        window.append(now)
        return True

    def process(
        self,
        method: str,
        command: str,
        func: Command,
        query: Mapping[str, str],
        body: Any,
        now: float,
    ) -> dict[str, Any]:
        """Run one request through the checks and the command; return the response body."""
        if method != "POST":
            return error_body(60002, f"HTTP method must be POST, got {method}")
        url_error = self.check_url(query)
        if url_error is not None:
            return error_body(*url_error)
        if not self.admit(command, now):
            return error_body(60007, f"more than {self._rate_limit} calls per second to {command}")
        if not isinstance(body, dict):
            return error_body(60003, "request body must be a JSON object")
        try:
            return func(self.state, body, now)
        except EmulatorError as exc:
            return error_body(exc.code, exc.info)

    # ---------------------------------------------------------------------------- handlers

    def handler(
        self, command: str, func: Command
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, command, func)

        return handle

    async def handle(self, request: web.Request, command: str, func: Command) -> web.StreamResponse:
        now = self.monotonic()
        raw = await request.read()
        body: Any
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        query = request.query
        entry: LoggedRequest | None = None
        if self.log_requests:
            entry = LoggedRequest(now, command, dict(query), body)
            self.requests.append(entry)
        fault = self.faults.next(command) if self.faults.active else None
        if fault is not None:
            log.debug("injecting %r into a request of %s", fault, command)
            if entry is not None:
                entry.fault = fault
            if not fault.applies:
                return await self._answer_fault(request, fault, entry)
        result = self.process(request.method, command, func, query, body, now)
        if self.on_write is not None and result["ErrorCode"] == 0:
            self.on_write(command, request, body)
        payload = orjson.dumps(result)
        if entry is not None:
            entry.error_code = result["ErrorCode"]
            entry.http_status = 200
        if fault is None:
            return web.Response(body=payload, content_type=_JSON)
        return await self._deliver_faulty(request, fault, payload, entry)

    async def _answer_fault(
        self, request: web.Request, fault: Fault, entry: LoggedRequest | None
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind == _faults.DROP_BEFORE_APPLY:
            if entry is not None:
                entry.http_status = None
            return self._drop(request)
        if kind == _faults.CODE:
            code = int(fault.arg or 0)
            if entry is not None:
                entry.error_code, entry.http_status = code, 200
            return web.Response(body=orjson.dumps(error_body(code, fault.info)), content_type=_JSON)
        if kind == _faults.HTTP:
            status = int(fault.arg or 502)
            if entry is not None:
                entry.http_status = status
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            html = (
                f"<html><head><title>{status} {reason}</title></head><body>"
                f"<center><h1>{status} {reason}</h1></center><hr><center>nginx</center>"
                "</body></html>"
            )
            return web.Response(status=status, text=html, content_type="text/html")
        # NON_JSON
        if entry is not None:
            entry.http_status = 200
        return web.Response(text=_NON_JSON_BODY, content_type="text/html")

    async def _deliver_faulty(
        self, request: web.Request, fault: Fault, payload: bytes, entry: LoggedRequest | None
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind == _faults.DROP_AFTER_APPLY:
            if entry is not None:
                entry.http_status = None
            return self._drop(request)
        if kind == _faults.TRUNCATED_JSON:
            return web.Response(body=payload[: len(payload) // 2], content_type=_JSON)
        # SLOW: applied already; answer after the delay (or at once when the server closes).
        if self._closing is None:
            self._closing = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), float(fault.arg or 0.0))
        return web.Response(body=payload, content_type=_JSON)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the TCP connection without answering.

        ``transport.abort()`` closes the socket at once. The response returned here is never
        sent: aiohttp's attempt to write it fails with a ConnectionError, which it treats as a
        client that went away (no error logged). The client sees the connection closed with no
        answer (``aiohttp.ServerDisconnectedError``)."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=204)

    async def not_emulated(self, request: web.Request) -> web.StreamResponse:
        """``/v4/{service}/{command}`` of a command the emulator does not serve: the usual
        pipeline (log, faults, URL checks, rate), then 60009 naming the command."""
        command = f"{request.match_info['service']}/{request.match_info['command']}"
        return await self.handle(request, command, _not_emulated(command))

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        """Any other path: 60009 (wrong resource) at once."""
        path = request.path
        command = path[4:] if path.startswith("/v4/") else path
        now = self.monotonic()
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        result = error_body(60009, f"unknown resource {path!r}")
        if self.log_requests:
            self.requests.append(LoggedRequest(now, command, dict(request.query), body, 60009, 200))
        return web.Response(body=orjson.dumps(result), content_type=_JSON)

    def wake_sleepers(self) -> None:
        """End every ``Fault.slow`` delay now (the server is closing)."""
        if self._closing is not None:
            self._closing.set()


def _not_emulated(command: str) -> Command:
    def answer(state: TimState, body: dict[str, Any], now: float) -> dict[str, Any]:
        raise EmulatorError(
            60009,
            f"{command} is not emulated by tim_async.testing "
            "(tim_async.testing.SERVED_COMMANDS lists what it serves)",
        )

    return answer


#: where :func:`create_app` stores the :class:`Emulator` in the application
EMULATOR_KEY: Final = web.AppKey("tim_async_emulator", Emulator)


def create_app(emulator: Emulator) -> web.Application:
    """An aiohttp application serving ``emulator`` (e.g. for pytest-aiohttp's
    ``aiohttp_client``); :class:`~tim_async.testing.FakeTimServer` runs one on loopback."""
    app = web.Application()
    app[EMULATOR_KEY] = emulator
    for command, func in SERVED_COMMANDS.items():
        app.router.add_route("*", f"/v4/{command}", emulator.handler(command, func))
    app.router.add_route("*", "/v4/{service}/{command}", emulator.not_emulated)
    app.router.add_route("*", "/{tail:.*}", emulator.unknown)
    return app
