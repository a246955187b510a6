"""Exceptions raised by tim_async.

Every exception the SDK raises on purpose is a :class:`TimError`:

* :class:`TimAPIError` and its subclasses: the server answered with ``ErrorCode != 0``.
  :func:`error_for_code` picks the subclass from one table.
* :class:`TimTransportError`: no usable answer (connection failure, timeout, HTTP status other
  than 200, a body that is not the JSON envelope). :class:`TimOutcomeUnknownError` when a
  non-idempotent call may or may not have been applied.
* :class:`TimValidationError` / :class:`TimTypeError`: bad input refused before anything was sent;
  also a ``ValueError`` / ``TypeError``.

Messages never contain the secret key or a UserSig.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AUTH_RETRY_CODES",
    "BUSY_CODES",
    "RATE_LIMIT_CODES",
    "RETRYABLE_CODES",
    "USERSIG_EXPIRED",
    "TimAPIError",
    "TimAppConfigAuthError",
    "TimAppConfigError",
    "TimAppConfigPermissionError",
    "TimAppConfigPremiumError",
    "TimAuthError",
    "TimClosedError",
    "TimConfigError",
    "TimConflictError",
    "TimError",
    "TimEventLoopError",
    "TimInvalidParameterError",
    "TimLimitExceededError",
    "TimLimiterError",
    "TimMissingExtraError",
    "TimNotFoundError",
    "TimOutcomeUnknownError",
    "TimPagingError",
    "TimPermissionError",
    "TimPremiumRequiredError",
    "TimRateLimitedError",
    "TimServerBusyError",
    "TimTimeoutError",
    "TimTransportError",
    "TimTypeError",
    "TimValidationError",
    "TimWebhookError",
    "error_for_code",
]


class TimError(Exception):
    """Base class of every error tim_async raises."""


# --------------------------------------------------------------------------- bad input / config


class TimValidationError(TimError, ValueError):
    """Input refused before sending: names the field and the documented limit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class TimTypeError(TimError, TypeError):
    """Input of the wrong type, refused before sending."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class TimConfigError(TimError, ValueError):
    """The client was configured wrongly (raised at construction)."""


class TimClosedError(TimError, RuntimeError):
    """The client was used after ``close()``."""


class TimEventLoopError(TimError, RuntimeError):
    """A client (or its rate limiter) was used from another event loop than the one that
    first used it. Use one client per event loop: create it inside the loop that uses it."""


class TimWebhookError(TimError, ValueError):
    """A webhook request failed verification or its body could not be parsed; the message
    names what failed (never the token)."""


# --------------------------------------------------------------------------- server answers


class TimAPIError(TimError):
    """The server answered with ``ErrorCode != 0``."""

    def __init__(
        self,
        code: int,
        info: str,
        api: str,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.info = info
        self.api = api
        self.body: Mapping[str, Any] = body if body is not None else {}
        super().__init__(f"{api}: ErrorCode {code}: {info}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.info, self.api, self.body))


class TimInvalidParameterError(TimAPIError):
    """The server rejected a parameter (10004, 60002, 60003, 60009, 60015, ...)."""


class TimNotFoundError(TimAPIError):
    """The message or group does not exist (23004, 10010, 10015, ...)."""


class TimPermissionError(TimAPIError):
    """The operation is not allowed for this account, group type or app (10007, 60010, ...)."""


class TimPremiumRequiredError(TimAPIError):
    """The feature needs a paid edition or is switched off (10008, 10059, 60020)."""


class TimLimitExceededError(TimAPIError):
    """A documented size or count limit was exceeded (10045-10048, 10063, ...)."""


class TimRateLimitedError(TimAPIError):
    """A frequency limit was hit (60007, 60011, 60018, 60019, 10006, 10049); retried first."""


class TimAuthError(TimAPIError):
    """Authentication or account configuration failed (60004-60006, 70xxx, ...). 60004 and
    60005 ("account check failed, retry later") are retried with backoff first."""


class TimServerBusyError(TimAPIError):
    """The server asked to try again later (10002, 60008, 60013, 60014, 70169, 70500);
    retried first."""


class TimConflictError(TimAPIError):
    """Two writes of group attributes raced (10056) and this one lost; it was not applied
    and is not retried blindly. Read the latest attributes, then write again."""


class TimAppConfigError(TimAPIError):
    """The app or the client is set up wrongly: wrong URL parameters (60025), a domain that
    does not match the app's data centre (60026), trial edition limits (60027, 60028), an
    invalid or disabled SDKAppID (60006, 60016, 60017), a paid plan expired (60020), an IP
    not on the allow list (60021), the wrong data centre (70016, 70020). Retrying cannot help.

    For the codes that had another class before (60006, 60016, 60017, 60020, 60021, 70016,
    70020) the exception is also an instance of that class: see the subclasses below."""


class TimAppConfigAuthError(TimAppConfigError, TimAuthError):
    """A configuration error that is also a :class:`TimAuthError`: 60006 (SDKAppID invalid),
    70016 and 70020 (key or SDKAppID not found: the wrong data centre)."""


class TimAppConfigPermissionError(TimAppConfigError, TimPermissionError):
    """A configuration error that is also a :class:`TimPermissionError`: 60016, 60017 (the
    SDKAppID or the request is disabled), 60021 (an IP not on the allow list)."""


class TimAppConfigPremiumError(TimAppConfigError, TimPremiumRequiredError):
    """A configuration error that is also a :class:`TimPremiumRequiredError`: 60020 (the paid
    plan expired or is suspended)."""


class TimMissingExtraError(TimError, ModuleNotFoundError):
    """An optional dependency of tim_async is not installed (e.g. redis-py for
    :mod:`tim_async.limiter_redis`); the message names the extra and the command that installs
    it, from PyPI and from a checkout."""


class TimLimiterError(TimError):
    """A shared rate limiter (e.g. :class:`~tim_async.limiter_redis.RedisLimiter`) could not
    admit a call because its backend is unreachable or failing. The call was not sent;
    ``__cause__`` holds the backend's exception."""


class TimPagingError(TimError):
    """Paging could not make progress (a page brought nothing new while CompleteFlag = 0)."""


# --------------------------------------------------------------------------- transport


class TimTransportError(TimError):
    """No usable answer: connection failure, timeout, bad HTTP status or a body that is not
    the JSON envelope. ``attempts`` is how many attempts the call made, retries included (an
    attempt that never got a connection counts too, unlike ``CallStats.attempts``)."""

    def __init__(
        self,
        message: str,
        *,
        api: str = "",
        status: int | None = None,
        body_excerpt: str = "",
        attempts: int | None = None,
    ) -> None:
        self.message = message
        self.api = api
        self.status = status
        self.body_excerpt = body_excerpt
        self.attempts = attempts
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [f"{self.api}: {self.message}" if self.api else self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.body_excerpt:
            parts.append(f"body: {self.body_excerpt!r}")
        if self.attempts is not None:
            parts.append(f"after {self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        return "; ".join(parts)

    def _amend(self, *, attempts: int, note: str = "") -> None:
        """Internal: the session adds what the whole call tells (attempt count, DNS trouble)."""
        self.attempts = attempts
        if note:
            self.message = f"{note}: {self.message}"
        self.args = (self._text(),)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_transport,
            (type(self), self.args[0], self.api, self.status, self.attempts, self.message),
        )


def _rebuild_transport(
    cls: type[TimTransportError],
    text: str,
    api: str,
    status: int | None,
    attempts: int | None = None,
    message: str | None = None,
) -> TimTransportError:
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    err.message = text if message is None else message
    err.api, err.status, err.body_excerpt = api, status, ""
    err.attempts = attempts
    return err


class TimTimeoutError(TimTransportError):
    """The call's total ``timeout`` ran out before a usable answer."""


class TimOutcomeUnknownError(TimTransportError):
    """A non-idempotent call may or may not have been applied: it was not resent.

    Raised when the request may have reached the server (timeout after sending, connection lost
    while waiting for the answer, a gateway error or an unreadable answer)."""


# --------------------------------------------------------------------------- code table

USERSIG_EXPIRED = 70001
BUSY_CODES = frozenset({10002, 60008, 60013, 60014, 70169, 70500})
RATE_LIMIT_CODES = frozenset({60007, 60011, 60018, 60019, 10006, 10049})
#: "Account check failed, please retry later": retried with backoff, then a TimAuthError.
AUTH_RETRY_CODES = frozenset({60004, 60005})
#: Codes after which the request was certainly not applied and may be sent again.
RETRYABLE_CODES = BUSY_CODES | RATE_LIMIT_CODES | AUTH_RETRY_CODES

_CODE_TABLE: dict[int, type[TimAPIError]] = {}


def _register(cls: type[TimAPIError], *codes: int) -> None:
    for code in codes:
        _CODE_TABLE[code] = cls


_register(TimInvalidParameterError, 10004, 60002, 60003, 60009, 60012, 60015)
_register(TimNotFoundError, 23004, 10010, 10015, 10050)
_register(TimPermissionError, 10007, 60010)
_register(TimPremiumRequiredError, 10008, 10059)
_register(TimLimitExceededError, 10045, 10046, 10047, 10048, 10063)
_register(TimRateLimitedError, *RATE_LIMIT_CODES)
_register(TimServerBusyError, *BUSY_CODES)
_register(TimAuthError, 60004, 60005, 70001, 70002, 70003, 70009, 70013, 70014, 70050, 70051)
_register(TimConflictError, 10056)
_register(TimAppConfigError, 60025, 60026, 60027, 60028)
_register(TimAppConfigAuthError, 60006, 70016, 70020)
_register(TimAppConfigPermissionError, 60016, 60017, 60021)
_register(TimAppConfigPremiumError, 60020)


def error_for_code(
    code: int, info: str, api: str, body: Mapping[str, Any] | None = None
) -> TimAPIError:
    """Build the exception for a server error code (plain :class:`TimAPIError` if unknown).

    Any other 70xxx code is an authentication error."""
    cls = _CODE_TABLE.get(code)
    if cls is None:
        cls = TimAuthError if 70000 <= code < 71000 else TimAPIError
    return cls(code, info, api, body)
