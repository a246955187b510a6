"""The rate the command line shows: calls *admitted* per REST command in a sliding second.

:class:`MeteredLimiter` wraps the client's limiter and records when each attempt is admitted.
The limiter admits a call at ``t`` only while fewer than ``rate`` calls were admitted after
``t - 1 s`` (each of them is in flight or finished after its admission), so the count of
admissions in any sliding second never exceeds the limit: what the progress line and the
summary show can never suggest a violation the server did not see (a count over a shorter
stretch, or calls over a short elapsed time, could). Memory: at most ``rate`` timestamps per
command.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from tim_async.limiter import RateLimiter, Slot

__all__ = ["MeteredLimiter"]


class MeteredLimiter:
    """A :class:`~tim_async.limiter.RateLimiter` that counts the calls ``inner`` admits."""

    def __init__(self, inner: RateLimiter, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self._clock = clock
        self._windows: dict[str, collections.deque[float]] = {}
        #: attempts admitted so far (retries included: the server counts each)
        self.calls = 0
        #: the most admissions of one command in any sliding second so far
        self.busiest = 0

    def acquire(self, command: str) -> AbstractAsyncContextManager[Slot]:
        return self._metered(command)

    @asynccontextmanager
    async def _metered(self, command: str) -> AsyncIterator[Slot]:
        async with self.inner.acquire(command) as slot:
            self._admitted(command)
            yield slot

    def _admitted(self, command: str) -> None:
        now = self._clock()
        window = self._windows.get(command)
        if window is None:
            window = self._windows[command] = collections.deque()
        window.append(now)
        _prune(window, now)
        self.calls += 1
        self.busiest = max(self.busiest, len(window))

    def current(self) -> int:
        """The most admissions of one command in the last second (the rate shown live)."""
        now = self._clock()
        best = 0
        for window in self._windows.values():
            _prune(window, now)
            best = max(best, len(window))
        return best

    async def aclose(self) -> None:
        await self.inner.aclose()


def _prune(window: collections.deque[float], now: float) -> None:
    horizon = now - 1.0
    while window and window[0] <= horizon:
        window.popleft()
