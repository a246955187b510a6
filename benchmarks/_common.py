"""Helpers shared by the benchmarks: the standalone emulator process, sliding-window statistics,
machine facts and table printing.

Each benchmark imports this module as ``_common`` (``benchmarks/`` is the script's directory, so
``python benchmarks/bench_x.py`` finds it; the smoke tests put ``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, Any

from tim_async.limiter import SlidingWindowLimiter, Slot

REPO = Path(__file__).resolve().parent.parent

#: what ``python -m tim_async.testing --seed-groups N`` creates (its ``--group-id`` default)
SEED_GROUP_ID = "@TGS#SEEDGROUP"

__all__ = [
    "REPO",
    "SEED_GROUP_ID",
    "EmulatorProcess",
    "TimedLimiter",
    "emulator_process",
    "load_line",
    "machine_info",
    "max_in_window",
    "over_limit",
    "print_machine",
    "print_table",
    "proc_cpu_seconds",
    "stop_process",
    "sustained_rate",
    "yes_no",
]


# --------------------------------------------------------------------------- emulator process


class EmulatorProcess:
    """A running ``python -m tim_async.testing`` (see :func:`emulator_process`)."""

    def __init__(self, proc: subprocess.Popen[str], base_url: str) -> None:
        self.proc = proc
        self.base_url = base_url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the emulator process has used so far (Linux /proc)."""
        return proc_cpu_seconds(self.proc.pid)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from ``/proc/PID/stat`` (0.0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: the emulator gets SIGTERM if the benchmark dies without cleaning up (SIGKILL).
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(stream: IO[str], limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        stream.seek(0)
        return stream.read()[-limit:]
    return ""


@contextlib.contextmanager
def emulator_process(
    *,
    rate_limit: int | None,
    seed_groups: int = 0,
    keys_per_msg_max: int = 300,
    seed: int = 1,
    page_size: int = 200,
    startup_timeout: float = 600.0,
) -> Iterator[EmulatorProcess]:
    """Start the emulator in another process on 127.0.0.1 (a free port) and stop it on exit,
    also on Ctrl-C or an exception; yields once it printed its base URL (after seeding).

    The emulator's stderr goes to a temporary file, shown when it fails to start."""
    cmd = [
        sys.executable,
        "-m",
        "tim_async.testing",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--rate-limit",
        "none" if rate_limit is None else str(rate_limit),
        "--page-size",
        str(page_size),
        "--seed",
        str(seed),
    ]
    if seed_groups:
        cmd += ["--seed-groups", str(seed_groups), "--keys-per-msg-max", str(keys_per_msg_max)]
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=REPO,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + startup_timeout
            line = ""
            while not line:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"the emulator did not start within {startup_timeout}s")
                ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
                if ready:
                    line = proc.stdout.readline()
                    if not line:  # EOF: it exited
                        break
                elif proc.poll() is not None:
                    break
            base_url = line.strip()
            if not base_url.startswith("http://127.0.0.1:"):
                raise RuntimeError(
                    f"the emulator failed to start (exit code {proc.poll()}): {_tail(errors)}"
                )
            yield EmulatorProcess(proc, base_url)
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL if needed (never leaves the process running)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# --------------------------------------------------------------------------- instrumentation


class TimedLimiter:
    """The SDK's limiter (``SlidingWindowLimiter(rate)``, or the one given), recording how long
    each admitted call held its slot before it finished (send to answer read, i.e. the round
    trip the window pays for on top of 1 s) and how many the session marked unanswered."""

    def __init__(self, limiter: int | SlidingWindowLimiter) -> None:
        self.inner = SlidingWindowLimiter(limiter) if isinstance(limiter, int) else limiter
        self.held: list[float] = []
        self.unanswered = 0  # calls whose slot the session marked unanswered

    def mean_ms(self) -> float:
        return 1e3 * sum(self.held) / len(self.held) if self.held else float("nan")

    def acquire(self, command: str) -> AbstractAsyncContextManager[Slot]:
        return self._slot(command)

    @asynccontextmanager
    async def _slot(self, command: str) -> AsyncIterator[Slot]:
        async with self.inner.acquire(command) as slot:
            start = time.monotonic()
            try:
                yield slot  # the session marks unanswered calls on the real slot
            finally:
                self.held.append(time.monotonic() - start)
                self.unanswered += not getattr(slot, "answered", True)

    async def aclose(self) -> None:
        await self.inner.aclose()


# --------------------------------------------------------------------------- statistics


def max_in_window(times: Sequence[float], width: float = 1.0) -> int:
    """The most arrivals in any sliding window of ``width`` seconds: for each arrival ``t``,
    the arrivals in ``(t - width, t]`` (how the emulator counts its window)."""
    ts = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(ts):
        cutoff = t - width
        while ts[lo] <= cutoff:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def over_limit(times: Sequence[float], limit: int, width: float = 1.0) -> int:
    """How many arrivals a server enforcing ``limit`` per sliding ``width`` would refuse
    (60007), counting like the emulator: a refused arrival does not count against the window."""
    accepted: list[float] = []
    refused = 0
    for t in sorted(times):
        # accepted arrivals in (t - width, t]
        inside = len(accepted) - bisect.bisect_right(accepted, t - width)
        if inside >= limit:
            refused += 1
        else:
            accepted.append(t)
    return refused


def sustained_rate(times: Sequence[float], warmup: float = 1.0) -> float:
    """Arrivals per second after the first ``warmup`` second, so an opening burst does not
    inflate it::

        sustained = #{arrivals t >= t_first + warmup} / (t_last - (t_first + warmup))

    (nan when the run is too short to have any time after the warm-up)."""
    ts = sorted(times)
    if not ts:
        return float("nan")
    start = ts[0] + warmup
    span = ts[-1] - start
    if span <= 0:
        return float("nan")
    count = len(ts) - bisect.bisect_left(ts, start)
    return count / span


# --------------------------------------------------------------------------- reporting


def machine_info() -> dict[str, str]:
    """nproc, CPU model, Python version, load average and date (for the results tables)."""
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "load": load,
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def print_machine(file: IO[str] | None = None) -> None:
    info = machine_info()
    print(
        f"machine: {info['nproc']} CPU ({info['cpu']}), Python {info['python']}, "
        f"load average {info['load']}, {info['date']}",
        file=file or sys.stdout,
        flush=True,
    )


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], file: IO[str] | None = None
) -> None:
    """Print a Markdown table (paste it into the README as is)."""
    out = file or sys.stdout
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]), file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for row in cells[1:]:
        print(line(row), file=out)
    out.flush()


def yes_no(ok: bool) -> str:
    return "yes" if ok else "NO"


def load_line() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
