"""The session: one aiohttp session per client; URL, UserSig, limiter, retries and the envelope.

The session knows nothing about endpoint fields: it sends a JSON body to ``service/command`` and
returns the decoded answer, or raises a typed :mod:`tim_async.errors` exception.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import aiohttp
import attrs
import orjson
from yarl import URL

from .errors import (
    RETRYABLE_CODES,
    USERSIG_EXPIRED,
    TimAPIError,
    TimClosedError,
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

__all__ = ["MAX_ANSWER_BYTES", "CallStats", "Session"]

logger = logging.getLogger("tim_async")

#: The deadline (loop time) of the operation the current task is inside, if any.
_OPERATION_DEADLINE: ContextVar[float | None] = ContextVar("tim_async_deadline", default=None)

_API_RE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+$")
_USERSIG_RE = re.compile(r"(usersig=)[^&\s'\"]+", re.IGNORECASE)
_JSON_HEADERS = {"Content-Type": "application/json"}
_RETRY_STATUSES = {502: Failure.MAYBE_APPLIED, 503: Failure.REJECTED, 504: Failure.MAYBE_APPLIED}
#: Statuses that come from a gateway in front of the server, which may still get the request.
_GATEWAY_STATUSES = frozenset({502, 504})
_EXCERPT = 200
#: Largest answer read, in bytes (after decompression). A real answer is far smaller (a pull page
#: of 200 pairs is at most ~1.3 MB even with every byte JSON-escaped); a longer body (a broken
#: proxy, an endless stream) is cut off instead of filling memory until the timeout.
MAX_ANSWER_BYTES = 32 * 1024 * 1024


@attrs.define
class CallStats:
    """Counters kept by a session (read them for progress reports and summaries)."""

    calls: int = 0  #: calls started (``Session.call`` invocations)
    attempts: int = 0  #: HTTP requests sent (admitted by the limiter), retries included
    retries: int = 0  #: attempts after the first, UserSig renewals included
    failures: int = 0  #: calls that ended in an exception
    retried_by_reason: dict[str, int] = attrs.field(factory=dict)


class _AttemptError(Exception):
    """Internal: one attempt failed; carries the public exception and what it tells."""

    def __init__(self, error: Exception, failure: Failure) -> None:
        self.error = error
        self.failure = failure


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
    ) -> None:
        urls = [u.rstrip("/") for u in base_urls]
        if not urls:
            raise ValueError("at least one base URL is needed")
        self._base_urls = urls
        self._base_index = 0
        self._static_query = f"sdkappid={sdkappid}&identifier={quote(identifier, safe='')}"
        self._usersig = usersig
        self._limiter = limiter
        self._retry = retry
        self._timeout = timeout
        self._http = http
        self._owns_http = http is None
        self._connections = connections
        self._max_answer_bytes = max_answer_bytes
        self._closed = False
        self._rng = random.Random()
        # The UserSigs this session has put in URLs lately, to redact them from any text.
        self._recent_sigs: tuple[str, str] = ("", "")
        self._usersig_quoted = ""  # quote() of self._recent_sigs[-1], made once per UserSig
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
                connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        elif http.closed:
            raise TimClosedError("the aiohttp session given to the client was closed")
        return http

    async def close(self) -> None:
        """Close the session (idempotent). A caller-supplied aiohttp session stays open."""
        if self._closed:
            return
        self._closed = True
        await self._limiter.aclose()
        if self._owns_http and self._http is not None:
            await self._http.close()
        self._http = None

    # ------------------------------------------------------------------ calls

    @contextmanager
    def operation(self) -> Iterator[None]:
        """Bound every call made inside the block (one logical operation made of several
        requests, such as a paged pull) by one ``timeout``, counted from entering the block.
        Nested blocks keep the outer deadline."""
        if _OPERATION_DEADLINE.get() is not None:
            yield
            return
        token = _OPERATION_DEADLINE.set(asyncio.get_running_loop().time() + self._timeout)
        try:
            yield
        finally:
            _OPERATION_DEADLINE.reset(token)

    async def call(
        self, api: str, body: Mapping[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """POST ``body`` to ``/v4/{api}`` and return the decoded answer (ErrorCode 0).

        Retries what :class:`RetryPolicy` allows, renews the UserSig once on 70001, keeps the
        whole call inside ``timeout`` and every attempt inside the limiter."""
        if not isinstance(api, str) or not _API_RE.match(api):
            raise TimValidationError("api", f"must look like 'service/command', got {api!r}")
        if not isinstance(body, Mapping):
            raise TimTypeError("body", f"must be a mapping, got {type(body).__name__}")
        try:
            data = orjson.dumps(body)
        except TypeError as exc:
            raise TimTypeError("body", f"is not JSON-serialisable: {exc}") from None
        http = self._ensure_http()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        outer = _OPERATION_DEADLINE.get()
        if outer is not None and outer < deadline:
            deadline = outer
        stats = self.stats
        stats.calls += 1
        retries = 0
        renewed = False
        while True:
            if self._closed:
                stats.failures += 1
                raise TimClosedError("the client was closed during the call")
            try:
                return await self._attempt(http, api, data, deadline)
            except _AttemptError as failed:
                error, failure = failed.error, failed.failure
            except BaseException as exc:
                stats.failures += 1
                if self._closed and isinstance(exc, Exception):
                    # aiohttp's "Session is closed", the limiter's waiters being failed, ...
                    raise TimClosedError("the client was closed during the call") from None
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
                    raise error
                logger.debug("%s: retry %d in %.3fs after %s", api, retries + 1, delay, error)
                await asyncio.sleep(delay)
                retries += 1
                reason = _reason(error)
            else:
                stats.failures += 1
                if failure is Failure.MAYBE_APPLIED and not idempotent:
                    raise TimOutcomeUnknownError(
                        f"the call may or may not have been applied and was not resent ({error})",
                        api=api,
                    ) from error
                raise error
            stats.retries += 1
            stats.retried_by_reason[reason] = stats.retried_by_reason.get(reason, 0) + 1

    async def _attempt(
        self, http: aiohttp.ClientSession, api: str, data: bytes, deadline: float
    ) -> dict[str, Any]:
        sent = False
        index = self._base_index
        try:
            async with asyncio.timeout_at(deadline):
                async with self._limiter.acquire(api) as slot:
                    index = self._base_index
                    usersig = self._usersig.current()
                    if usersig is not self._recent_sigs[-1]:
                        self._recent_sigs = (self._recent_sigs[-1], usersig)
                        self._usersig_quoted = quote(usersig, safe="")
                    url = URL(
                        f"{self._base_urls[index]}/v4/{api}?{self._static_query}"
                        f"&usersig={self._usersig_quoted}"
                        f"&random={secrets.randbits(32)}&contenttype=json",
                        encoded=True,
                    )
                    sent = True
                    self.stats.attempts += 1
                    status = 0
                    try:
                        async with http.post(url, data=data, headers=_JSON_HEADERS) as resp:
                            status = resp.status
                            if status in _GATEWAY_STATUSES:
                                # A gateway's answer, not the server's: the request may
                                # still reach the server.
                                _unanswered(slot)
                            raw = await self._read(api, resp)
                    except aiohttp.ClientConnectorError:
                        raise  # no connection: nothing was sent
                    except BaseException:
                        if not status:
                            # Sent, and no answer came back (timeout, cancellation, the
                            # connection lost): the request may still arrive later.
                            _unanswered(slot)
                        raise
        except TimeoutError:
            # Before sending (waiting in the limiter) nothing was applied and no time is left;
            # after sending the request may have been applied.
            raise _AttemptError(
                TimTimeoutError(
                    f"no answer within the call's timeout of {self._timeout}s", api=api
                ),
                Failure.MAYBE_APPLIED if sent else Failure.FINAL,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc, aiohttp.ClientConnectorDNSError) and self._base_index == index:
                # Compare and set: move away from the URL this attempt used only, so that
                # overlapping failures never switch back to the domain that failed.
                self._base_index = (index + 1) % len(self._base_urls)
            raise _AttemptError(self._transport_error(api, exc), Failure.NOT_SENT) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _AttemptError(self._transport_error(api, exc), Failure.MAYBE_APPLIED) from None
        return self._decode(api, status, raw)

    async def _read(self, api: str, resp: aiohttp.ClientResponse) -> bytes:
        """The answer's body, at most ``max_answer_bytes`` of it (else an unreadable answer)."""
        limit = self._max_answer_bytes
        length = resp.content_length
        if length is not None and length <= limit and not resp.headers.get("Content-Encoding"):
            return await resp.read()
        size = 0
        chunks: list[bytes] = []
        if length is None or length <= limit:
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        raise self._unusable(
            api,
            f"the answer is larger than {limit} bytes",
            resp.status,
            chunks[0] if chunks else b"",  # an excerpt: never join 32 MiB to show 200 bytes
            Failure.MAYBE_APPLIED,
        )

    def _decode(self, api: str, status: int, raw: bytes) -> dict[str, Any]:
        if status != 200:
            raise self._unusable(
                api,
                "unexpected HTTP status",
                status,
                raw,
                _RETRY_STATUSES.get(status, Failure.FINAL),
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
                api, "the answer is not the JSON envelope", status, raw, Failure.MAYBE_APPLIED
            )
        if code == 0:
            return answer
        # The server (or a proxy) may echo the request URL: the error keeps no UserSig, not
        # even in ``body``.
        answer = self._redact_json(answer)
        info = answer.get("ErrorInfo")
        error = error_for_code(code, self.redact(str(info)) if info else "", api, answer)
        failure = Failure.REJECTED if code in RETRYABLE_CODES else Failure.FINAL
        raise _AttemptError(error, failure)

    # ------------------------------------------------------------------ secrets

    def redact(self, text: str) -> str:
        """Remove the usersig query value and the UserSigs sent lately from ``text``."""
        text = _USERSIG_RE.sub(r"\1<redacted>", text)
        for sig in self._recent_sigs:
            if sig:
                text = text.replace(sig, "<redacted>").replace(quote(sig, safe=""), "<redacted>")
        return text

    def _redact_json(self, value: Any) -> Any:
        """``value`` (decoded JSON) with :meth:`redact` applied to every string in it."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self._redact_json(k): self._redact_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact_json(v) for v in value]
        return value

    def _unusable(
        self, api: str, message: str, status: int, raw: bytes, failure: Failure
    ) -> _AttemptError:
        error = TimTransportError(message, api=api, status=status, body_excerpt=self._excerpt(raw))
        return _AttemptError(error, failure)

    def _excerpt(self, raw: bytes) -> str:
        return self.redact(raw[:_EXCERPT].decode("utf-8", "replace"))

    def _transport_error(self, api: str, exc: BaseException) -> TimTransportError:
        detail = self.redact(str(exc)) or type(exc).__name__
        return TimTransportError(f"{type(exc).__name__}: {detail}", api=api)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Session {self.base_url} {state}>"


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
