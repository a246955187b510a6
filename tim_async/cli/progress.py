"""The progress line of a bulk pull (reads the run's :class:`~tim_async.PullStats`)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from typing import TextIO

from tim_async.cli.output import isatty
from tim_async.endpoints.bulk import PullStats


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A one-line progress display (done/total, bar, calls/s, ETA) redrawn a few times a second
    on a terminal. Disabled (nothing is written) when ``stream`` is not a terminal.

    ``calls`` returns the calls admitted in the last sliding second (see
    :mod:`tim_async.cli.meter`): the rate shown never exceeds what the server counts."""

    def __init__(
        self,
        stream: TextIO,
        counters: PullStats,
        *,
        total: int | None,
        calls: Callable[[], int],
        label: str = "pulled",
        limit: int | None = None,
        enabled: bool | None = None,
        interval: float = 0.2,
    ) -> None:
        self._stream = stream
        self._counters = counters
        self.total = total
        self._calls = calls
        self._label = label
        self._limit = limit
        self._interval = interval
        self.enabled = isatty(stream) if enabled is None else enabled
        self._task: asyncio.Task[None] | None = None
        self._drawn = False

    def render(self, width: int) -> str:
        """The progress line, at most ``width - 1`` columns: ``[bar] done/total pct
        rate/limit calls/s ETA``; the bar shrinks (or goes) on a narrow terminal."""
        c = self._counters
        rate = self._calls()  # admitted in the last sliding second: what the server counts
        limit = f"/{self._limit}" if self._limit else ""
        parts: list[str] = []
        if self.total:
            fraction = min(c.done / self.total, 1.0)
            parts.append(f"{c.done:,}/{self.total:,} {fraction:4.0%}")
        else:
            parts.append(f"{self._label} {c.done:,}")
        parts.append(f"{rate}{limit} calls/s")
        if self.total and c.done:
            per_target = c.elapsed / c.done
            parts.append(f"ETA {_clock((self.total - c.done) * per_target)}")
        if c.failed:
            parts.append(f"failed {c.failed:,}")
        text = "  ".join(parts)
        room = width - 1 - len(text) - 3
        if self.total and room >= 6:
            bar_width = min(24, room)
            filled = int(min(c.done / self.total, 1.0) * bar_width)
            text = "[" + "#" * filled + "." * (bar_width - filled) + "] " + text
        return text[: max(width - 1, 10)]

    def draw(self) -> None:
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        with contextlib.suppress(OSError, ValueError):
            self._stream.write("\r\x1b[K" + self.render(width))
            self._stream.flush()
            self._drawn = True

    async def _run(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop redrawing and erase the line."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.clear()

    def clear(self) -> None:
        if self._drawn:
            with contextlib.suppress(OSError, ValueError):
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            self._drawn = False
