"""Several processes, one budget: RedisLimiter's precision, smoothness and sustained rate,
beside the in-process limiter.

Starts its own redis-server on a free loopback port and, when the emulator is available
(``python -m tim_async.testing``), one emulator process enforcing 200 calls/s per command. Then,
for each round, two runs one after the other against the same emulator:

* ``redis``: ``--processes`` worker processes (default 4) each run ``--tasks`` concurrent tasks
  that hammer one REST command for ``--seconds`` through a ``TimClient`` whose limiter is a
  ``RedisLimiter`` with a shared budget of ``--rate`` calls/s;
* ``local``: one process runs ``processes x tasks`` tasks through a ``TimClient`` with the
  in-process limiter (``SlidingWindowLimiter(rate)``), the same load in one process.

``max_retries=0``, so a 60007 is seen, not retried. With ``--fake-rtt`` (or without the emulator)
no HTTP call is made: each admitted call sleeps for a fake 5 ms round trip instead.

Every admission is recorded as ``(enter, exit)`` in ``time.monotonic()`` (system-wide, so the
processes' records compare): just after the limiter admitted the call and just before it
records the finish. Printed for each run:

* the busiest sliding second of admissions (must be <= rate), and the most arrivals the server
  could see in one if each call arrived anywhere in its ``[enter, exit]`` (must be <= rate);
* the busiest sliding 50 ms of admissions: a paced stream at 200/s has 10, plus the burst (4);
  a limiter that frees a batch of slots at once lets the batch through together;
* the sustained combined rate (rate / the mean gap between the k-th and (k + rate)-th
  admission, the time a slot takes to be reused) and its ratio to the rate;
* 60007 answers from the emulator (must be 0) and the machine's load.

Usage: ``python benchmarks/bench_redis_limiter.py [--seconds 10] [--processes 4] [--rounds 1]
[--limiters redis,local] [--fake-rtt]``
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
GROUP_ID = _common.SEED_GROUP_ID  # what the emulator's seeding creates


# --------------------------------------------------------------------------- worker process


class RecordingLimiter:
    """Wraps a limiter and records ``(enter, exit)`` of every admitted call."""

    def __init__(self, inner: Any, log: list[tuple[float, float]]) -> None:
        self.inner = inner
        self.log = log

    def acquire(self, command: str) -> AbstractAsyncContextManager[Any]:
        return self._slot(command)

    @asynccontextmanager
    async def _slot(self, command: str) -> AsyncIterator[Any]:
        async with self.inner.acquire(command) as slot:
            enter = time.monotonic()
            try:
                yield slot
            finally:
                self.log.append((enter, time.monotonic()))

    async def aclose(self) -> None:
        await self.inner.aclose()


class RecordingBindable(RecordingLimiter):
    """The same for a limiter the client binds to its SDKAppID (RedisLimiter)."""

    def bind(self, sdkappid: int) -> RecordingBindable:
        return RecordingBindable(self.inner.bind(sdkappid), self.log)


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    from tim_async import errors
    from tim_async.client import TimClient
    from tim_async.limiter import SlidingWindowLimiter

    log: list[tuple[float, float]] = []
    outcomes: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        limiter: RecordingLimiter
        if args.limiter == "redis":
            from tim_async.limiter_redis import RedisLimiter

            shared = RedisLimiter.from_url(args.redis_url, rate=args.rate, namespace="bench")
            await stack.enter_async_context(shared)
            limiter = RecordingBindable(shared, log)
        else:
            limiter = RecordingLimiter(SlidingWindowLimiter(args.rate), log)
        if args.emulator_url:
            from tim_async.testing import TEST_SDKAPPID, TEST_SECRET_KEY

            tim = TimClient(
                TEST_SDKAPPID,
                secret_key=TEST_SECRET_KEY,
                base_url=args.emulator_url,
                limiter=limiter,
                max_retries=0,
            )
            await stack.enter_async_context(tim)

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
            bound: Any = (
                limiter.bind(1400000000) if isinstance(limiter, RecordingBindable) else limiter
            )

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


def run(
    args: argparse.Namespace, limiter: str, redis_url: str, emulator_url: str
) -> list[dict[str, Any]]:
    """One run: the worker processes of one limiter, started together; their records."""
    processes, tasks = (args.processes, args.tasks)
    if limiter == "local":  # the same load in one process
        processes, tasks = 1, args.processes * args.tasks
    command = [sys.executable, __file__, "--worker", "--limiter", limiter]
    command += ["--redis-url", redis_url, "--emulator-url", emulator_url]
    command += ["--seconds", str(args.seconds), "--rate", str(args.rate), "--tasks", str(tasks)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with contextlib.ExitStack() as stack:
        workers: list[subprocess.Popen[str]] = []
        for _ in range(processes):
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
        return [json.loads(proc.communicate()[0]) for proc in workers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks per process")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    parser.add_argument("--limiters", default="redis,local", help="comma-separated, in order")
    parser.add_argument("--fake-rtt", action="store_true", help="no emulator: sleep 5 ms")
    parser.add_argument("--save", metavar="PATH", help="write the raw records as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--limiter", default="redis", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--emulator-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = asyncio.run(worker(args))
        print(json.dumps(result))
        return

    limiters = [name.strip() for name in args.limiters.split(",") if name.strip()]
    if not limiters or set(limiters) - {"redis", "local"}:
        sys.exit("--limiters takes redis and/or local")
    use_emulator = not args.fake_rtt and importlib.util.find_spec("tim_async.testing.__main__")
    what = "emulator round trips" if use_emulator else "fake 5 ms round trips"
    _common.print_machine()
    print(
        f"{args.processes} processes x {args.tasks} tasks (local: 1 process x "
        f"{args.processes * args.tasks} tasks), one command, budget {args.rate}/s, "
        f"{args.seconds:g} s per run, {what}; load before: {_common.load_line()}",
        flush=True,
    )
    saved: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server()).url if "redis" in limiters else ""
        emulator_url = ""
        if use_emulator:
            emulator = stack.enter_context(
                _common.emulator_process(rate_limit=args.rate, seed_groups=1, keys_per_msg_max=5)
            )
            emulator_url = emulator.base_url
        for round_ in range(args.rounds):
            order = limiters if round_ % 2 == 0 else limiters[::-1]
            for limiter in order:
                time.sleep(1.1)  # the emulator's window of the previous run has passed
                results = run(args, limiter, redis_url, emulator_url)
                saved.append({"limiter": limiter, "round": round_, "results": results})
                summary = summarize(args, limiter, results)
                summaries.append(summary)
                report(summary, bool(use_emulator))
    if args.save:
        Path(args.save).write_text(json.dumps(saved))
    if args.rounds > 1:
        print("\nmedians over the rounds")
        rows = []
        for limiter in limiters:
            mine = [s for s in summaries if s["limiter"] == limiter]
            rows.append(
                [
                    limiter,
                    f"{statistics.median(s['busiest_second'] for s in mine):g}",
                    f"{statistics.median(s['busiest_50ms'] for s in mine):g}",
                    f"{statistics.median(s['sustained'] for s in mine) / args.rate:.1%}",
                    sum(s["outcomes"].get("60007", 0) for s in mine),
                ]
            )
        _common.print_table(
            ["limiter", "busiest second", "busiest 50 ms", "sustained", "60007"], rows
        )


def summarize(
    args: argparse.Namespace, limiter: str, results: list[dict[str, Any]]
) -> dict[str, Any]:
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
    holds = [exit_ - enter for enter, exit_ in intervals]
    return {
        "limiter": limiter,
        "processes": len(results),
        "admissions": len(intervals),
        "per_process": [len(r["log"]) for r in results],
        "busiest_second": _common.max_in_window(enters, 1.0),
        "arrivals_possible": max_arrivals(intervals, 1.0),
        "busiest_50ms": _common.max_in_window(enters, 0.05),
        "busiest_50ms_after_1s": _common.max_in_window([t for t in enters if t >= t0 + 1.0], 0.05),
        "sustained": rate / cycle,
        "cycle": cycle,
        "hold_mean": statistics.fmean(holds),
        "hold_median": statistics.median(holds),
        "hold_p99": sorted(holds)[int(len(holds) * 0.99)],
        "per_second": [
            sum(1 for t in enters if t0 + k <= t < t0 + k + 1) for k in range(int(args.seconds))
        ],
        "outcomes": outcomes,
        "rate": rate,
        "load": os.getloadavg()[0],
    }


def report(s: dict[str, Any], emulator: bool) -> None:
    rate = s["rate"]
    name = "RedisLimiter" if s["limiter"] == "redis" else "in-process SlidingWindowLimiter"
    print(f"\n{name}, {s['processes']} process(es)")
    rows = [
        ("admissions", f"{s['admissions']}"),
        ("per process", " / ".join(map(str, s["per_process"]))),
        ("busiest sliding second (admissions)", f"{s['busiest_second']} (<= {rate})"),
        ("max arrivals possible in any sliding second", f"{s['arrivals_possible']}"),
        (
            "busiest sliding 50 ms (admissions): whole run / after 1 s",
            f"{s['busiest_50ms']} / {s['busiest_50ms_after_1s']}",
        ),
        (
            "sustained combined rate (rate / slot cycle)",
            f"{s['sustained']:.1f}/s = {s['sustained'] / rate:.1%} of {rate}",
        ),
        (
            "slot cycle = 1 s + call + wait to readmit (ms)",
            f"{s['cycle'] * 1000:.1f} = 1000 + {s['hold_mean'] * 1000:.1f} + "
            f"{(s['cycle'] - 1.0 - s['hold_mean']) * 1000:.1f}",
        ),
        ("admissions per whole second of the run", " ".join(map(str, s["per_second"]))),
        (
            "held per call: median / p99 (ms)",
            f"{s['hold_median'] * 1000:.2f} / {s['hold_p99'] * 1000:.2f}",
        ),
    ]
    if emulator:
        outcomes = s["outcomes"]
        rows.append(("60007 answers from the emulator", str(outcomes.get("60007", 0))))
        others = {k: n for k, n in outcomes.items() if k not in ("ok", "60007")}
        rows.append(("other failures", str(others or 0)))
    rows.append(("machine load (1 min average) / CPUs", f"{s['load']:.1f} / {os.cpu_count()}"))
    width = max(len(name) for name, _ in rows)
    for row_name, value in rows:
        print(f"  {row_name:<{width}}  {value}", flush=True)


if __name__ == "__main__":
    main()
