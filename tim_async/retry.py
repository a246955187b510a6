"""Which failures are retried, and how long to wait before the next attempt."""

from __future__ import annotations

import enum
import random

import attrs

from .errors import TimConfigError

__all__ = ["Failure", "RetryPolicy"]


class Failure(enum.Enum):
    """What a failed attempt tells about the server's state."""

    #: The request never left the client (connection refused, DNS failure): safe to resend.
    NOT_SENT = "not sent"
    #: The server said it did not apply the call (503, busy and rate-limit codes): safe to resend.
    REJECTED = "rejected"
    #: The request may have been applied (timeout or connection lost after sending, 502/504, an
    #: unreadable answer): resend only idempotent calls.
    MAYBE_APPLIED = "maybe applied"
    #: Resending cannot help (any other error code, HTTP 4xx, ...).
    FINAL = "final"


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with full jitter, capped.

    Attempt ``n`` (0-based) that failed waits ``uniform(0, min(cap, base * 2**n))`` seconds
    before the next one. At most ``max_retries`` retries follow the first attempt; every retry
    also stays inside the call's total timeout and re-acquires the rate limiter.
    """

    max_retries: int = 3
    backoff_base: float = 0.25
    backoff_cap: float = 8.0

    def __attrs_post_init__(self) -> None:
        if self.max_retries < 0:
            raise TimConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_base < 0 or self.backoff_cap < 0:
            raise TimConfigError("backoff_base and backoff_cap must be >= 0")

    def should_retry(self, failure: Failure, *, idempotent: bool, retries_done: int) -> bool:
        if retries_done >= self.max_retries:
            return False
        if failure is Failure.NOT_SENT or failure is Failure.REJECTED:
            return True
        if failure is Failure.MAYBE_APPLIED:
            return idempotent
        return False

    def backoff(self, retries_done: int, rng: random.Random | None = None) -> float:
        # 2.0 ** n overflows a float past n ~ 1024 (max_retries is unbounded); past 2 ** 64 the
        # cap has long been reached.
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(retries_done, 64))
        return (rng or random).uniform(0.0, ceiling)
