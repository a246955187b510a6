"""Several processes, one budget: RedisLimiter's precision and sustained rate.

Starts its own redis-server on a free loopback port and, when the emulator is available
(``python -m tim_async.testing``), one emulator process enforcing 200 calls/s per command. Then
``--processes`` worker processes (default 4) each run ``--tasks`` concurrent tasks that hammer one
REST command for ``--seconds`` through a ``TimClient`` whose limiter is a ``RedisLimiter`` with a
shared budget of ``--rate`` calls/s (``max_retries=0``, so a 60007 is seen, not retried).
With ``--fake-rtt`` (or without the emulator) no HTTP call is made: each admitted call sleeps
for a fake 5 ms round trip instead.

Every admission is recorded as ``(enter, exit)`` in ``time.monotonic()`` (system-wide, so the
processes' records compare): just after the limiter admitted the call and just before it
records the finish. Printed:

* max admissions in any sliding second (must be <= rate);
* max arrivals possible in any sliding second: each call placed anywhere in its
  ``[enter, exit]``, the worst case the server could see (must be <= rate);
* the sustained combined rate after the first second, and its ratio to the rate;
* 60007 answers from the emulator (must be 0).

Usage: ``python benchmarks/bench_redis_limiter.py [--seconds 10] [--processes 4] [--fake-rtt]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import _common

from tim_async.testing.redis_server import redis_server

REPO = Path(__file__).resolve().parent.parent
COMMAND = "openim_msg_ext_http_svc/group_get_key_values"
GROUP_ID = "@TGS#SEEDGROUP"  # what `python -m tim_async.testing --seed-groups 1` creates


# --------------------------------------------------------------------------- worker process


class RecordingLimiter:
    """Wraps the SDK's limiter and records ``(enter, exit)`` of every admitted call."""

    def __init__(self, inner: Any, log: list[tuple[float, float]]) -> None:
        self.inner = inner
        self.log = log

    def bind(self, sdkappid: int) -> RecordingLimiter:
        return RecordingLimiter(self.inner.bind(sdkappid), self.log)

    def acquire(self, command: str) -> AbstractAsyncContextManager[None]:
        return self._slot(command)

    @asynccontextmanager
    async def _slot(self, command: str) -> AsyncIterator[None]:
        async with self.inner.acquire(command):
            enter = time.monotonic()
            try:
                yield
            finally:
                self.log.append((enter, time.monotonic()))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    from tim_async import errors
    from tim_async.client import TimClient
    from tim_async.limiter_redis import RedisLimiter

    log: list[tuple[float, float]] = []
    outcomes: dict[str, int] = {}
    async with RedisLimiter.from_url(args.redis_url, rate=args.rate, namespace="bench") as shared:
        limiter = RecordingLimiter(shared, log)
        if args.emulator_url:
            from tim_async.testing import TEST_SDKAPPID, TEST_SECRET_KEY

            tim = TimClient(
                TEST_SDKAPPID,
                secret_key=TEST_SECRET_KEY,
                base_url=args.emulator_url,
                limiter=limiter,
                max_retries=0,
            )

            async def one_call() -> None:
                try:
                    await tim.call(COMMAND, {"GroupId": GROUP_ID, "MsgSeq": 1})
                    outcome = "ok"
                except errors.TimAPIError as exc:
                    outcome = str(exc.code)
                except errors.TimError as exc:
                    outcome = type(exc).__name__
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

        else:
            tim = None
            bound = limiter.bind(1400000000)

            async def one_call() -> None:
                async with bound.acquire(COMMAND):
                    await asyncio.sleep(0.005)  # a fake round trip
                outcomes["ok"] = outcomes.get("ok", 0) + 1

        print("ready", flush=True)
        start = float(sys.stdin.readline())
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        end = start + args.seconds

        async def hammer() -> None:
            while time.monotonic() < end:
                await one_call()

        await asyncio.gather(*(hammer() for _ in range(args.tasks)))
        if tim is not None:
            await tim.close()
    return {"log": log, "outcomes": outcomes}


# --------------------------------------------------------------------------- helpers


def max_arrivals(intervals: list[tuple[float, float]], width: float) -> int:
    """Most calls that can arrive in one window ``[w, w + width)``, each anywhere in its
    ``[enter, exit]``: the number of intervals meeting the window, maximal at some ``w = exit``.
    Counted with a sweep: +1 at ``enter - width`` (exclusive), -1 after ``exit``."""
    events: list[tuple[float, int]] = []
    for enter, exit_ in intervals:
        events.append((enter - width, 1))  # counts for w > enter - width ...
        events.append((exit_, -1))  # ... and w <= exit
    # At equal times the start (w > t, strict) must come after the end (w <= t, inclusive).
    events.sort(key=lambda e: (e[0], e[1] == 1))
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks per process")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--fake-rtt", action="store_true", help="no emulator: sleep 5 ms")
    parser.add_argument("--save", metavar="PATH", help="write the raw records as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--emulator-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = asyncio.run(worker(args))
        print(json.dumps(result))
        return

    use_emulator = not args.fake_rtt and importlib.util.find_spec("tim_async.testing.__main__")
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server()).url
        emulator_url = ""
        if use_emulator:
            emulator = stack.enter_context(
                _common.emulator_process(rate_limit=args.rate, seed_groups=1, keys_per_msg_max=5)
            )
            emulator_url = emulator.base_url
        command = [sys.executable, __file__, "--worker", "--redis-url", redis_url]
        command += ["--emulator-url", emulator_url, "--seconds", str(args.seconds)]
        command += ["--rate", str(args.rate), "--tasks", str(args.tasks)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        workers: list[subprocess.Popen[str]] = []
        for _ in range(args.processes):
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            )
            stack.callback(_common.stop_process, proc)
            workers.append(proc)
        for proc in workers:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                sys.exit("a worker failed to start")
        start = time.monotonic() + 0.2
        for proc in workers:  # every worker gets the start time before any is waited for
            assert proc.stdin is not None
            proc.stdin.write(f"{start!r}\n")
            proc.stdin.flush()
        results = [json.loads(proc.communicate()[0]) for proc in workers]

    if args.save:
        Path(args.save).write_text(json.dumps(results))
    report(args, results, bool(use_emulator))


def report(args: argparse.Namespace, results: list[dict[str, Any]], emulator: bool) -> None:
    rate = args.rate
    intervals = sorted(tuple(i) for r in results for i in r["log"])
    enters = [enter for enter, _ in intervals]
    outcomes: dict[str, int] = {}
    for r in results:
        for key, n in r["outcomes"].items():
            outcomes[key] = outcomes.get(key, 0) + n
    t0 = enters[0]
    run_end = t0 + args.seconds  # the calls still waiting then were admitted later
    in_run = [t for t in enters if t < run_end]
    # Saturated, the (k + rate)-th admission takes the slot the k-th one frees: the gap between
    # them is a slot's cycle (admission, call, one period, the next admission).
    cycles = [b - a for a, b in zip(in_run, in_run[rate:], strict=False)]
    cycle = statistics.fmean(cycles)
    sustained = rate / cycle
    holds = [exit_ - enter for enter, exit_ in intervals]
    per_second = [
        sum(1 for t in enters if t0 + k <= t < t0 + k + 1) for k in range(int(args.seconds))
    ]
    what = "emulator round trips" if emulator else "fake 5 ms round trips"
    print(
        f"RedisLimiter, {args.processes} processes x {args.tasks} tasks, one command, "
        f"shared budget {rate}/s, {args.seconds:g} s, {what}"
    )
    rows = [
        ("admissions", f"{len(intervals)}"),
        ("per process", " / ".join(str(len(r["log"])) for r in results)),
        (
            "max admissions in any sliding second",
            f"{_common.max_in_window(enters, 1.0)} (<= {rate})",
        ),
        ("max arrivals possible in any sliding second", f"{max_arrivals(intervals, 1.0)}"),
        (
            "sustained combined rate (rate / slot cycle)",
            f"{sustained:.1f}/s = {sustained / rate:.1%} of {rate}",
        ),
        (
            "slot cycle = 1 s + call + wait to readmit (ms)",
            f"{cycle * 1000:.1f} = 1000 + {statistics.fmean(holds) * 1000:.1f} + "
            f"{(cycle - 1.0 - statistics.fmean(holds)) * 1000:.1f}",
        ),
        ("admissions per whole second of the run", " ".join(map(str, per_second))),
        (
            "held per call: median / p99 (ms)",
            f"{statistics.median(holds) * 1000:.2f} / "
            f"{sorted(holds)[int(len(holds) * 0.99)] * 1000:.2f}",
        ),
    ]
    if emulator:
        rows.append(("60007 answers from the emulator", str(outcomes.get("60007", 0))))
        others = {k: n for k, n in outcomes.items() if k not in ("ok", "60007")}
        rows.append(("other failures", str(others or 0)))
    load = os.getloadavg()[0]
    rows.append(("machine load (1 min average) / CPUs", f"{load:.1f} / {os.cpu_count()}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
