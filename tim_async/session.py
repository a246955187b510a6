"""The session: one aiohttp session per client; URL, UserSig, limiter, retries and the envelope.

The session knows nothing about endpoint fields: it sends a JSON body to ``service/command`` and
returns the decoded answer, or raises a typed :mod:`tim_async.errors` exception.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, overload
from urllib.parse import quote

import aiohttp
import attrs
import orjson
from yarl import URL

from ._connect import Connector, is_traced, unwatch, watch
from ._deadline import Deadline
from ._redact import Redactor
from .errors import (
    RETRYABLE_CODES,
    USERSIG_EXPIRED,
    TimAPIError,
    TimClosedError,
    TimConfigError,
    TimEventLoopError,
    TimOutcomeUnknownError,
    TimTimeoutError,
    TimTransportError,
    TimTypeError,
    TimValidationError,
    error_for_code,
)
from .limiter import RateLimiter, Slot
from .retry import Failure, RetryPolicy
from .usersig import UserSigProvider

__all__ = ["MAX_ANSWER_BYTES", "MIN_SEND_TIME", "CallStats", "Session"]

logger = logging.getLogger("tim_async")

#: The deadline (loop time) of the operation the current task is inside, if any.
_OPERATION_DEADLINE: ContextVar[float | None] = ContextVar("tim_async_deadline", default=None)

_API_RE = re.compile(r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+$")
_JSON_HEADERS = {"Content-Type": "application/json"}
_RETRY_STATUSES = {502: Failure.MAYBE_APPLIED, 503: Failure.REJECTED, 504: Failure.MAYBE_APPLIED}
#: Statuses that come from a gateway in front of the server, which may still get the request.
_GATEWAY_STATUSES = frozenset({502, 504})
_EXCERPT = 200
#: Largest answer read, in bytes (after decompression). A real answer is far smaller (a pull page
#: of 200 pairs is at most ~1.3 MB even with every byte JSON-escaped); a longer body (a broken
#: proxy, an endless stream) is cut off instead of filling memory until the timeout.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: An attempt admitted with less than this left of its call's timeout is not sent (it could not
#: be answered in time, and would hold its slot for the limiter's unanswered_hold): the call
#: fails as a timeout, unsent, and the slot is given back.
MIN_SEND_TIME = 0.005

_T = TypeVar("_T")


@attrs.define
class CallStats:
    """Counters kept by a session (read them for progress reports and summaries)."""

    calls: int = 0  #: calls started (``Session.call`` invocations)
    #: HTTP requests sent (they got a connection: a connection refused or a DNS failure is no
    #: request sent), retries included
    attempts: int = 0
    retries: int = 0  #: attempts after the first, UserSig renewals included
    failures: int = 0  #: calls that ended in an exception
    retried_by_reason: dict[str, int] = attrs.field(factory=dict)


class _AttemptError(Exception):
    """Internal: one attempt failed; carries the public exception and what it tells."""

    def __init__(self, error: Exception, failure: Failure, *, dns_index: int | None = None) -> None:
        self.error = error
        self.failure = failure
        #: the index of the base URL whose host name did not resolve, if that was the failure
        self.dns_index = dns_index


class Session:
    """Sends REST calls. One per :class:`~tim_async.TimClient`; safe to share across tasks."""

    def __init__(
        self,
        *,
        base_urls: Iterable[str],
        sdkappid: int,
        identifier: str,
        usersig: UserSigProvider,
        limiter: RateLimiter,
        retry: RetryPolicy,
        timeout: float,
        http: aiohttp.ClientSession | None = None,
        connections: int = 100,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        owns_limiter: bool = True,
    ) -> None:
        urls = [u.rstrip("/") for u in base_urls]
        if not urls:
            raise TimConfigError("at least one base URL is needed")
        self._base_urls = urls
        self._hosts = [URL(u).host or u for u in urls]
        self._base_index = 0
        self._static_query = f"sdkappid={sdkappid}&identifier={quote(identifier, safe='')}"
        self._usersig = usersig
        self._limiter = limiter
        self._owns_limiter = owns_limiter
        self._retry = retry
        self._timeout = timeout
        self._http = http
        self._owns_http = http is None
        # Whether a request's connection is seen (own sessions; a caller's with our trace).
        self._traced = http is None or is_traced(http)
        self._connections = connections
        self._max_answer_bytes = max_answer_bytes
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Tasks waiting for the limiter or sleeping in a backoff: close() wakes them at once.
        self._waiting: set[asyncio.Task[Any]] = set()
        self._woken: set[asyncio.Task[Any]] = set()
        # Backoff jitter, and each request's ``random`` (the spec asks only for a fresh u32 per
        # request, no secret: a Mersenne Twister is enough, 20x cheaper than ``secrets``).
        self._rng = random.Random()
        self._checked_apis: set[str] = set()  # api names that passed _API_RE
        #: (base URL index, api) -> (scheme, authority, path) of the request URL, for URL.build
        self._url_parts: dict[tuple[int, str], tuple[str, str, str] | None] = {}
        # The UserSigs this session has put in URLs lately, to redact them from any text (each
        # call also redacts the ones its own attempts used, however many renewals happened).
        self._redactor = Redactor()
        self._last_sig = ""
        self._usersig_quoted = ""  # quote() of self._last_sig, made once per UserSig
        self.stats = CallStats()

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def base_url(self) -> str:
        return self._base_urls[self._base_index]

    def _ensure_http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise TimClosedError("the client is closed")
        http = self._http
        if http is None:
            # Created lazily, inside the running loop.
            http = self._http = aiohttp.ClientSession(
                connector=Connector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        elif http.closed:
            raise TimClosedError("the aiohttp session given to the client was closed")
        return http

    async def close(self) -> None:
        """Close the session (idempotent). Calls waiting for the limiter or sleeping before a
        retry fail at once with :class:`TimClosedError`. The limiter is closed only if the
        client made it; a caller-supplied aiohttp session stays open."""
        if self._closed:
            return
        self._closed = True
        waiting, self._waiting = self._waiting, set()
        for task in waiting:
            self._woken.add(task)
            task.cancel()
        if self._owns_limiter:
            await self._limiter.aclose()
        if self._owns_http and self._http is not None:
            await self._http.close()
        self._http = None

    def _closed_error(self) -> TimClosedError:
        return TimClosedError("the client was closed during the call")

    def _woken_by_close(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task``'s cancellation came from :meth:`close` alone (then undone)."""
        if task is None or task not in self._woken:
            return False
        self._woken.discard(task)
        return task.uncancel() == 0

    # ------------------------------------------------------------------ calls

    def operation(self) -> AbstractContextManager[None]:
        """Bound every call made inside the block (one logical operation made of several
        requests, such as a paged pull) by one ``timeout``, counted from entering the block.
        Nested blocks keep the outer deadline."""
        return _Operation(self._timeout)

    @overload
    async def call(
        self, api: str, body: Mapping[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]: ...

    @overload
    async def call(
        self,
        api: str,
        body: Mapping[str, Any],
        *,
        idempotent: bool = True,
        decode: Callable[[bytes], _T | None],
    ) -> dict[str, Any] | _T: ...

    async def call(
        self,
        api: str,
        body: Mapping[str, Any],
        *,
        idempotent: bool = True,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        """POST ``body`` to ``/v4/{api}`` and return the decoded answer (ErrorCode 0).

        Retries what :class:`RetryPolicy` allows, renews the UserSig once on 70001, keeps the
        whole call inside ``timeout`` and every attempt inside the limiter.

        ``decode``, if given, sees the bytes of every HTTP 200 answer first: what it returns,
        unless None, is the call's result. It must return None for anything but a successful
        answer it fully checked (``ActionStatus`` present, ``ErrorCode`` 0); the usual path
        (JSON, the envelope check, typed errors, retries) then takes the answer."""
        if type(api) is not str or api not in self._checked_apis:
            if not isinstance(api, str) or not _API_RE.match(api):
                raise TimValidationError("api", f"must look like 'service/command', got {api!r}")
            if type(api) is str and len(self._checked_apis) < 1024:
                self._checked_apis.add(api)
        if type(body) is not dict and not isinstance(body, Mapping):
            raise TimTypeError("body", f"must be a mapping, got {type(body).__name__}")
        try:
            data = orjson.dumps(body)
        except TypeError as exc:
            raise TimTypeError("body", f"is not JSON-serialisable: {exc}") from None
        http = self._ensure_http()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                raise TimEventLoopError(
                    "this client was first used in another event loop: use one client per "
                    "event loop, and create it inside the loop that uses it (for example "
                    "inside the coroutine given to asyncio.run())"
                )
            self._loop = loop
        deadline = loop.time() + self._timeout
        outer = _OPERATION_DEADLINE.get()
        if outer is not None and outer < deadline:
            deadline = outer
        task = asyncio.current_task()
        stats = self.stats
        stats.calls += 1
        retries = 0
        tries = 0
        renewed = False
        sigs: list[str] = []  # every UserSig this call sent, redacted from its errors
        dns_first: int | None = None  # the base URL whose host name failed first
        while True:
            if self._closed:
                stats.failures += 1
                raise self._closed_error()
            tries += 1
            try:
                return await self._attempt(http, api, data, deadline, sigs, task, decode)
            except _AttemptError as failed:
                error, failure = failed.error, failed.failure
                if dns_first is None:
                    dns_first = failed.dns_index
                last_dns = failed.dns_index
            except BaseException as exc:
                stats.failures += 1
                woken = self._woken_by_close(task)  # always: undoes close()'s cancellation
                if self._closed and (isinstance(exc, Exception) or woken):
                    # aiohttp's "Session is closed", the limiter's waiters being failed, a
                    # wait that close() interrupted, ...
                    raise self._closed_error() from None
                raise
            if (
                isinstance(error, TimAPIError)
                and error.code == USERSIG_EXPIRED
                and not renewed
                and self._usersig.renew()
            ):
                renewed = True
                reason = "usersig renewed"
            elif self._retry.should_retry(failure, idempotent=idempotent, retries_done=retries):
                delay = self._retry.backoff(retries, self._rng)
                if loop.time() + delay >= deadline:
                    stats.failures += 1
                    raise self._final(error, tries, dns_first, last_dns)
                logger.debug("%s: retry %d in %.3fs after %s", api, retries + 1, delay, error)
                await self._sleep(delay, task)
                retries += 1
                reason = _reason(error)
            else:
                stats.failures += 1
                error = self._final(error, tries, dns_first, last_dns)
                if failure is Failure.MAYBE_APPLIED and not idempotent:
                    assert isinstance(error, TimTransportError)
                    raise TimOutcomeUnknownError(
                        "the call may or may not have been applied and was not resent "
                        f"({error.message})",
                        api=api,
                        status=error.status,
                        body_excerpt=error.body_excerpt,
                        attempts=error.attempts,
                    ) from error
                raise error
            stats.retries += 1
            stats.retried_by_reason[reason] = stats.retried_by_reason.get(reason, 0) + 1

    async def _sleep(self, delay: float, task: asyncio.Task[Any] | None) -> None:
        """The backoff before a retry; :meth:`close` ends it at once."""
        if self._closed:  # closed while the attempt was in flight
            self.stats.failures += 1
            raise self._closed_error()
        if task is not None:
            self._waiting.add(task)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if self._woken_by_close(task):
                self.stats.failures += 1
                raise self._closed_error() from None
            raise
        finally:
            self._waiting.discard(task)

    def _final(
        self, error: Exception, tries: int, dns_first: int | None, last_dns: int | None
    ) -> Exception:
        """``error`` as the call raises it: a transport error tells how many attempts were
        made and, after a DNS failure, which domain failed first and which backup was tried."""
        if not isinstance(error, TimTransportError):
            return error
        note = ""
        if dns_first is not None:
            hosts = self._hosts
            note = f"DNS lookup failed for {hosts[dns_first]}"
            if len(hosts) > 1:
                backup = hosts[(dns_first + 1) % len(hosts)]
                if last_dns is not None and last_dns != dns_first:
                    note += f", and for the backup domain {backup} too"
                elif self._base_index != dns_first and tries > 1:
                    note += f"; the backup domain {backup} was tried too"
                else:
                    note += f"; the next call tries the backup domain {backup}"
        error._amend(attempts=tries, note=note)
        return error

    async def _attempt(
        self,
        http: aiohttp.ClientSession,
        api: str,
        data: bytes,
        deadline: float,
        sigs: list[str],
        task: asyncio.Task[Any] | None,
        decode: Callable[[bytes], Any] | None,
    ) -> Any:
        sent = False  # the request may have reached the server
        connected = [False]  # set once the request has a connection (_connect.Connector, the trace)
        index = self._base_index
        waiting = self._waiting
        try:
            async with (
                asyncio.timeout_at(deadline)
                if task is None
                else Deadline(task, asyncio.get_running_loop(), deadline)
            ):
                if task is not None:
                    waiting.add(task)
                async with self._limiter.acquire(api) as slot:
                    waiting.discard(task)
                    if self._closed:
                        raise self._closed_error()
                    if deadline - asyncio.get_running_loop().time() < MIN_SEND_TIME:
                        # Too little of the timeout is left for an answer: sending now would
                        # only make an unanswered call, which holds its slot for the
                        # limiter's unanswered_hold. Nothing was sent: give the slot back.
                        unsent = getattr(slot, "unsent", None)  # optional in the protocol
                        if unsent is not None:
                            unsent()
                        raise TimeoutError
                    index = self._base_index
                    usersig = self._usersig.current()
                    if usersig is not self._last_sig:
                        self._last_sig = usersig
                        self._usersig_quoted = quote(usersig, safe="")
                        self._redactor.remember(usersig)
                    if not sigs or sigs[-1] is not usersig:
                        sigs.append(usersig)
                    url = self._url(index, api, self._rng.getrandbits(32))
                    status = 0
                    token = watch(connected) if self._traced else None
                    try:
                        async with http.post(url, data=data, headers=_JSON_HEADERS) as resp:
                            sent = True
                            self.stats.attempts += 1
                            status = resp.status
                            if status in _GATEWAY_STATUSES:
                                # A gateway's answer, not the server's: the request may
                                # still reach the server.
                                _unanswered(slot)
                            raw = await self._read(api, resp, sigs)
                    except aiohttp.ClientConnectorError:
                        raise  # no connection: nothing was sent
                    except BaseException:
                        # Sent once it had a connection (when that cannot be seen: once it
                        # started). Not answered (timeout, cancellation, the connection
                        # lost): it may still arrive later.
                        if not sent and (connected[0] or token is None):
                            sent = True
                            self.stats.attempts += 1
                            _unanswered(slot)
                        raise
                    finally:
                        if token is not None:
                            unwatch(token)
        except TimeoutError:
            # Before sending (waiting in the limiter or for a connection) nothing was applied
            # and no time is left; after sending the request may have been applied.
            raise _AttemptError(
                TimTimeoutError(
                    f"no answer within the call's timeout of {self._timeout}s", api=api
                ),
                Failure.MAYBE_APPLIED if sent else Failure.FINAL,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            dns = isinstance(exc, aiohttp.ClientConnectorDNSError)
            if dns and self._base_index == index:
                # Compare and set: move away from the URL this attempt used only, so that
                # overlapping failures never switch back to the domain that failed.
                self._base_index = (index + 1) % len(self._base_urls)
            raise _AttemptError(
                self._transport_error(api, exc, sigs),
                Failure.NOT_SENT,
                dns_index=index if dns else None,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _AttemptError(
                self._transport_error(api, exc, sigs),
                Failure.MAYBE_APPLIED if sent else Failure.NOT_SENT,
            ) from None
        finally:
            waiting.discard(task)
        if decode is not None and status == 200:
            result = decode(raw)
            if result is not None:
                return result
        return self._decode(api, status, raw, sigs, index)

    def _url(self, index: int, api: str, random_u32: int) -> URL:
        """The request URL for ``api`` at base URL ``index`` with this UserSig and random."""
        query = (
            f"{self._static_query}&usersig={self._usersig_quoted}"
            f"&random={random_u32}&contenttype=json"
        )
        key = (index, api)
        try:
            parts = self._url_parts[key]
        except KeyError:
            parts = self._url_parts[key] = _url_parts(self._base_urls[index], api, query)
        if parts is None:  # a base URL that URL.build cannot rebuild exactly
            return URL(f"{self._base_urls[index]}/v4/{api}?{query}", encoded=True)
        scheme, authority, path = parts
        return URL.build(
            scheme=scheme, authority=authority, path=path, query_string=query, encoded=True
        )

    async def _read(self, api: str, resp: aiohttp.ClientResponse, sigs: list[str]) -> bytes:
        """The answer's body, at most ``max_answer_bytes`` of it (else an unreadable answer)."""
        limit = self._max_answer_bytes
        length = resp.content_length
        if length is not None and length <= limit and not resp.headers.get("Content-Encoding"):
            return await resp.read()
        size = 0
        chunks: list[bytes] = []
        head = b""  # the start of the answer, for the excerpt: never join 32 MiB to show 200
        head_size = self._excerpt_window()
        if length is None or length <= limit:
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if len(head) < head_size:
                    head += chunk[: head_size - len(head)]
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        raise self._unusable(
            api,
            f"the answer is larger than {limit} bytes",
            resp.status,
            head,
            Failure.MAYBE_APPLIED,
            sigs,
        )

    def _decode(
        self, api: str, status: int, raw: bytes, sigs: list[str], index: int
    ) -> dict[str, Any]:
        if status != 200:
            if status == 404:
                message = (
                    f"the URL path /v4/{api} was not found at {self._base_urls[index]}: "
                    "check base_url (and the command name)"
                )
            else:
                message = "unexpected HTTP status"
            raise self._unusable(
                api, message, status, raw, _RETRY_STATUSES.get(status, Failure.FINAL), sigs
            )
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if (
            not isinstance(answer, dict)
            or "ActionStatus" not in answer
            or type(code := answer.get("ErrorCode")) is not int
        ):
            raise self._unusable(
                api,
                "the answer is not the JSON envelope",
                status,
                raw,
                Failure.MAYBE_APPLIED,
                sigs,
            )
        if code == 0:
            return answer
        # The server (or a proxy) may echo the request URL: the error keeps no UserSig, not
        # even in ``body``.
        answer = self._redact_json(answer, sigs)
        info = answer.get("ErrorInfo")
        error = error_for_code(code, str(info) if info else "", api, answer)
        failure = Failure.REJECTED if code in RETRYABLE_CODES else Failure.FINAL
        raise _AttemptError(error, failure)

    # ------------------------------------------------------------------ secrets

    def redact(self, text: str, sigs: Iterable[str] = ()) -> str:
        """Remove the usersig query value, the UserSigs sent lately and those in ``sigs`` (any
        run of 8 or more of their characters, raw or URL-encoded) from ``text``."""
        return self._redactor.redact(text, sigs)

    def _redact_json(self, value: Any, sigs: list[str]) -> Any:
        """``value`` (decoded JSON) with :meth:`redact` applied to every string in it."""
        if isinstance(value, str):
            return self.redact(value, sigs)
        if isinstance(value, dict):
            return {
                self._redact_json(k, sigs): self._redact_json(v, sigs) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._redact_json(v, sigs) for v in value]
        return value

    def _unusable(
        self, api: str, message: str, status: int, raw: bytes, failure: Failure, sigs: list[str]
    ) -> _AttemptError:
        error = TimTransportError(
            message, api=api, status=status, body_excerpt=self._excerpt(raw, sigs)
        )
        return _AttemptError(error, failure)

    def _excerpt_window(self) -> int:
        # Enough bytes that a UserSig echoed anywhere in the first _EXCERPT characters is
        # whole in the text redacted (UTF-8: at most 4 bytes a character).
        return 4 * _EXCERPT + 3 * max(self._redactor.longest, len(self._usersig_quoted)) + 64

    def _excerpt(self, raw: bytes, sigs: list[str]) -> str:
        # Redact first, then cut: a cut echo would no longer match.
        text = raw[: self._excerpt_window()].decode("utf-8", "replace")
        return self.redact(text, sigs)[:_EXCERPT]

    def _transport_error(self, api: str, exc: BaseException, sigs: list[str]) -> TimTransportError:
        detail = self.redact(str(exc), sigs) or type(exc).__name__
        return TimTransportError(f"{type(exc).__name__}: {detail}", api=api)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Session {self.base_url} {state}>"


class _Operation:
    """:meth:`Session.operation`'s block (a class: cheaper than ``@contextmanager``)."""

    __slots__ = ("_timeout", "_token")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._token: Token[float | None] | None = None

    def __enter__(self) -> None:
        if _OPERATION_DEADLINE.get() is None:
            when = asyncio.get_running_loop().time() + self._timeout
            self._token = _OPERATION_DEADLINE.set(when)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        if token is not None:
            self._token = None
            _OPERATION_DEADLINE.reset(token)


def _url_parts(base_url: str, api: str, query: str) -> tuple[str, str, str] | None:
    """What :meth:`Session._url` builds the URL from, or None if that would not give the very
    URL that parsing ``{base_url}/v4/{api}?{query}`` gives (checked once per base URL and api)."""
    whole = URL(f"{base_url}/v4/{api}?{query}", encoded=True)
    parts = (whole.scheme, whole.raw_authority, whole.raw_path)
    built = URL.build(
        scheme=parts[0], authority=parts[1], path=parts[2], query_string=query, encoded=True
    )
    if built != whole or str(built) != str(whole):
        return None
    return parts


def _unanswered(slot: Slot | None) -> None:
    # A limiter written to the protocol before ``Slot`` existed yields None.
    if slot is not None:
        slot.unanswered()


def _reason(error: Exception) -> str:
    if isinstance(error, TimAPIError):
        return f"ErrorCode {error.code}"
    if isinstance(error, TimTransportError) and error.status is not None:
        return f"HTTP {error.status}" if error.status != 200 else "unreadable answer"
    return type(error).__name__
