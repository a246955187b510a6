"""WebhookReceiver: the aiohttp glue over :func:`verify_webhook` and :func:`parse_webhook`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import orjson
from aiohttp import web

from tim_async.errors import TimConfigError, TimWebhookError

from .events import WebhookEvent, parse_webhook
from .verify import WebhookVerificationError, _check_max_age, _check_token, verify_webhook

__all__ = ["MAX_BODY_BYTES", "OK_BODY", "WebhookHandler", "WebhookReceiver"]

log = logging.getLogger("tim_async.webhooks")

#: bodies larger than this are answered 413 without being read further
MAX_BODY_BYTES: Final = 1 << 20
#: the answer Tencent's backend expects
OK_BODY: Final = b'{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}'

WebhookHandler = Callable[[WebhookEvent], Awaitable[object]]


def _fail(status: int, info: str) -> web.Response:
    body = orjson.dumps({"ActionStatus": "FAIL", "ErrorInfo": info, "ErrorCode": status})
    return web.Response(status=status, body=body, content_type="application/json")


class WebhookReceiver:
    """An aiohttp request handler for Tencent's webhooks::

        receiver = WebhookReceiver(1400000000, token=os.environ["TIM_WEBHOOK_TOKEN"],
                                   handler=on_event)
        app.router.add_post("/tim", receiver.handle)
        ...
        await receiver.aclose()

    Each request is verified (:func:`verify_webhook`: 403 when it names no app or another
    app, 401 when its ``Sign``/``RequestTime`` fail), its body read up to ``max_body`` bytes
    (413 above), parsed (:func:`parse_webhook`: 400 when malformed), and ``await
    handler(event)`` runs in a task of its own. The answer is HTTP 200
    ``{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`` as soon as the handler returns, or
    after ``reply_within`` seconds while it is still running (Tencent's backend waits 2 s: a slow
    handler must not become a failed delivery); it keeps running. A handler that raises is
    logged (``tim_async.webhooks`` logger, with the traceback) and, if it failed before the
    answer went out, answered 500. Refused requests never reach the handler and are logged at
    WARNING, without the token or the ``Sign``.

    Deliveries can repeat (retry on timeout can be switched on in the console): make the handler
    idempotent, e.g. by remembering ``event.dedupe_key``. :meth:`aclose` waits for running
    handlers (up to ``grace`` seconds) and cancels the rest; requests after it get 503.
    """

    def __init__(
        self,
        sdkappid: int,
        *,
        token: str | None = None,
        handler: WebhookHandler,
        max_age: float = 60.0,
        reply_within: float = 1.5,
        max_body: int = MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(sdkappid, bool) or not isinstance(sdkappid, int) or sdkappid <= 0:
            raise TimConfigError("sdkappid: must be a positive int")
        _check_token(token)
        self.max_age = _check_max_age(max_age)
        if not callable(handler):
            raise TimConfigError("handler: must be an async callable taking the event")
        if isinstance(reply_within, bool) or not 0 <= reply_within < 2:
            raise TimConfigError("reply_within: must be in [0, 2) seconds (Tencent waits 2 s)")
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
            raise TimConfigError("max_body: must be a positive number of bytes")
        self.sdkappid = sdkappid
        self._token = token
        self.handler = handler
        self.reply_within = float(reply_within)
        self.max_body = max_body
        self.clock = clock
        self._tasks: set[asyncio.Task[bool]] = set()
        self._closed = False

    def __repr__(self) -> str:
        token = "None" if self._token is None else "<redacted>"
        return (
            f"WebhookReceiver(sdkappid={self.sdkappid}, token={token}, "
            f"max_age={self.max_age:g}, running={len(self._tasks)})"
        )

    @property
    def running(self) -> int:
        """Handlers still running."""
        return len(self._tasks)

    # ------------------------------------------------------------------------------ handling

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler: ``app.router.add_post(path, receiver.handle)``."""
        if self._closed:
            return _fail(503, "receiver closed")
        query = request.query
        command = query.get("CallbackCommand", "")
        try:
            verify_webhook(
                query,
                sdkappid=self.sdkappid,
                token=self._token,
                now=self.clock(),
                max_age=self.max_age,
            )
        except WebhookVerificationError as exc:
            status = 403 if exc.wrong_app else 401
            log.warning(
                "webhook %s from %s refused with HTTP %d: %s",
                command[:80] or "(no CallbackCommand)",
                request.remote,
                status,
                exc,
            )
            return _fail(status, str(exc))
        contenttype = query.get("contenttype")
        if contenttype is not None and contenttype.lower() != "json":
            return self._bad(request, command, "contenttype: expected json")
        raw = await self._read(request)
        if raw is None:
            log.warning(
                "webhook %s from %s refused with HTTP 413: body over %d bytes",
                command[:80],
                request.remote,
                self.max_body,
            )
            return _fail(413, f"body over {self.max_body} bytes")
        try:
            event = parse_webhook(command, raw)
        except TimWebhookError as exc:
            return self._bad(request, command, str(exc))
        task = asyncio.create_task(self._run(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        done, _ = await asyncio.wait({task}, timeout=self.reply_within)
        if done and not task.cancelled() and not task.result():
            return _fail(500, "the handler failed (logged)")
        return web.Response(body=OK_BODY, content_type="application/json")

    @staticmethod
    def _bad(request: web.Request, command: str, message: str) -> web.Response:
        log.warning(
            "webhook %s from %s refused with HTTP 400: %s",
            command[:80] or "(no CallbackCommand)",
            request.remote,
            message,
        )
        return _fail(400, message)

    async def _read(self, request: web.Request) -> bytes | None:
        """The body, or None when it is larger than ``max_body``."""
        length = request.content_length
        if length is not None and length > self.max_body:
            return None
        data = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            data += chunk
            if len(data) > self.max_body:
                return None
        return bytes(data)

    async def _run(self, event: WebhookEvent) -> bool:
        try:
            await self.handler(event)
        except Exception:
            log.exception("webhook handler failed on %s", event.dedupe_key)
            return False
        return True

    # ------------------------------------------------------------------------------ lifecycle

    async def aclose(self, grace: float = 10.0) -> None:
        """Refuse new requests (503), wait up to ``grace`` seconds for the handlers still
        running, then cancel the others (logged at WARNING)."""
        self._closed = True
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            log.warning("cancelling %d webhook handler(s) still running at aclose()", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, path: str = "/"
    ) -> AsyncIterator[str]:
        """Serve this receiver alone on ``host:port`` (0: any free port) at ``path``; yields
        its URL. On exit the receiver is closed (:meth:`aclose`) and the server stopped. For
        tests and for ``tim-async webhook listen``; in an application, add :meth:`handle` to
        your own routes instead."""
        app = web.Application(client_max_size=self.max_body + 1)
        app.router.add_post(path, self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            if ":" in bound_host:
                bound_host = f"[{bound_host}]"
            yield f"http://{bound_host}:{bound_port}{path}"
        finally:
            try:
                await self.aclose()
            finally:
                await runner.cleanup()
