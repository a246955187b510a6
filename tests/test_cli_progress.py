"""The rate the CLI shows (progress line and summary): calls admitted per command in a
sliding second, which the limiter bounds, so never above the limit (a fake clock)."""

from __future__ import annotations

import io
import re

from tim_async import PullStats
from tim_async.cli.meter import MeteredLimiter
from tim_async.cli.progress import Progress
from tim_async.limiter import UnlimitedLimiter


async def test_progress_shows_the_busiest_sliding_second_never_above_the_limit() -> None:
    now = [0.0]
    meter = MeteredLimiter(UnlimitedLimiter(), clock=lambda: now[0])
    stats = PullStats(started=0.0)
    progress = Progress(
        io.StringIO(), stats, total=300, calls=meter.current, limit=100, enabled=True
    )
    shown: list[int] = []

    async def admit(command: str) -> None:
        async with meter.acquire(command):
            pass

    # what a 100/s limiter allows: a burst of 100 at the start, then one call every 10.1 ms,
    # of each of two commands (each has its own budget)
    for _ in range(100):
        await admit("a")
        await admit("b")
    for step in range(1, 201):
        now[0] = 1.0 + step * 0.0101
        await admit("a")
        await admit("b")
        if step % 7 == 0:
            line = progress.render(120)
            shown.append(int(re.search(r"(\d+)/100 calls/s", line).group(1)))  # type: ignore[union-attr]
    assert max(shown) <= 100 and shown[-1] >= 95  # one command's calls in the last second
    assert meter.calls == 600 and meter.busiest == 100
    # a short run: 3 calls in 5 ms show as 3 (an average would say 600 calls/s)
    tiny = MeteredLimiter(UnlimitedLimiter(), clock=lambda: now[0])
    for _ in range(3):
        async with tiny.acquire("a"):
            now[0] += 0.0025
    assert tiny.current() == 3 and tiny.busiest == 3
