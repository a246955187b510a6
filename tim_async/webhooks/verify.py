"""Verification of a webhook request's query: the app, and (with a token) ``Sign`` and age.

Tencent's backend adds ``?SdkAppid=...&CallbackCommand=...&contenttype=json&ClientIP=...&
OptPlatform=...`` to every webhook and, when authentication is on in the console,
``&Sign=...&RequestTime=...`` with ``Sign = sha256(token + RequestTime)`` in lower-case hex.
Free of any web framework: a function over the query mapping.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from tim_async.errors import TimTypeError, TimValidationError, TimWebhookError

__all__ = ["WebhookVerificationError", "sign", "verify_webhook"]

_SIGN_HEX_LEN = 64
_HEX = frozenset("0123456789abcdefABCDEF")


class WebhookVerificationError(TimWebhookError):
    """The request is not from this app's backend, or not authenticated: ``field`` names the
    query parameter that failed (``SdkAppid``, ``Sign`` or ``RequestTime``). Never holds the
    token."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")

    @property
    def wrong_app(self) -> bool:
        """True when the request names no app or another app (HTTP 403), False when its
        authentication failed (HTTP 401)."""
        return self.field == "SdkAppid"


def sign(token: str, request_time: str | int) -> str:
    """``Sign`` of a webhook: lower-case hex SHA-256 of the UTF-8 of ``token`` immediately
    followed by ``request_time`` (Unix seconds)."""
    return hashlib.sha256(f"{token}{request_time}".encode()).hexdigest()


def _check_token(token: str | None) -> None:
    if token is None:
        return
    if not isinstance(token, str):
        raise TimTypeError("token", f"must be a str or None, got {type(token).__name__}")
    if not token:
        raise TimValidationError("token", "must not be empty (None: authentication off)")


def _check_max_age(max_age: float) -> float:
    if isinstance(max_age, bool) or not isinstance(max_age, int | float):
        raise TimTypeError("max_age", f"must be a number of seconds, got {type(max_age).__name__}")
    if not max_age > 0:
        raise TimValidationError("max_age", f"must be > 0 seconds, got {max_age!r}")
    return float(max_age)


def verify_webhook(
    query: Mapping[str, str],
    *,
    sdkappid: int,
    token: str | None,
    now: float | None = None,
    max_age: float = 60.0,
) -> None:
    """Check that a webhook request comes from this app's backend; raise
    :class:`~tim_async.errors.TimWebhookError` (a :class:`WebhookVerificationError`) naming
    what failed.

    ``query`` is the request's query mapping (``request.query`` in aiohttp). Always checked:
    ``SdkAppid`` is present and is ``sdkappid``. With a ``token`` (authentication on in the
    console): ``Sign`` and ``RequestTime`` are present and well formed, ``Sign`` equals
    ``sha256(token + RequestTime)`` (compared in constant time), and ``RequestTime`` is at most
    ``max_age`` seconds away from ``now`` (default: the current time) in either direction, so a
    captured request cannot be replayed later. ``token=None`` (authentication off) checks only
    the app. Messages never contain the token.
    """
    _check_token(token)
    max_age = _check_max_age(max_age)
    app = query.get("SdkAppid")
    if app is None or app == "":
        raise WebhookVerificationError("SdkAppid", "missing from the query")
    if app != str(sdkappid):
        shown = app if len(app) <= 20 else app[:20] + "..."
        raise WebhookVerificationError("SdkAppid", f"{shown!r} is not this app ({sdkappid})")
    if token is None:
        return
    request_time = query.get("RequestTime")
    given = query.get("Sign")
    if not given:
        raise WebhookVerificationError("Sign", "missing from the query (authentication is on)")
    if not request_time:
        raise WebhookVerificationError(
            "RequestTime", "missing from the query (authentication is on)"
        )
    if not (request_time.isascii() and request_time.isdigit() and len(request_time) <= 12):
        raise WebhookVerificationError("RequestTime", "not a Unix time in whole seconds")
    if len(given) != _SIGN_HEX_LEN or not _HEX.issuperset(given):
        raise WebhookVerificationError("Sign", "not 64 hexadecimal digits")
    expected = sign(token, request_time)
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii")):
        raise WebhookVerificationError("Sign", "does not match sha256(token + RequestTime)")
    current = time.time() if now is None else float(now)
    age = current - int(request_time)
    if age > max_age:
        raise WebhookVerificationError(
            "RequestTime", f"{age:.0f} s old, more than max_age {max_age:g} s (replay?)"
        )
    if -age > max_age:
        raise WebhookVerificationError(
            "RequestTime", f"{-age:.0f} s in the future, more than max_age {max_age:g} s"
        )
