"""Rate precision: what the server sees when the SDK's limiter (or aiolimiter) paces calls.

Two figures, measured on the emulator's request log (``LoggedRequest.time``, the arrival time at
the server; the emulator only records, ``rate_limit=None``; it runs in a child process so that
serving does not slow the client's event loop, or in this process with ``--in-process``):

* ``--mode limiters``: ``--calls`` (2,000) calls of ``msg_ext.group_get_key_values`` on a small
  message, all started at once (``asyncio.gather``), through

  - the SDK's own limiter (``TimClient(rate_limit=200)``),
  - ``aiolimiter.AsyncLimiter(200, 1)`` used naively (``TimClient(rate_limit=None)``, each call
    wrapped in ``async with limiter:``),
  - ``aiolimiter.AsyncLimiter(1, 1 / 200)`` used the same way;

* ``--mode commands``: three commands at once through one SDK client (``group_get_key_values``,
  ``get_key_values``, ``get_group_attr``), ``--calls`` each: the limiter keeps one budget per
  command, so each must run at its own full rate.

For each run: the most arrivals in any sliding second (goal <= rate), the sustained rate
(goal >= 99 % of rate), defined so that an opening burst does not inflate it::

    sustained = #{arrivals t >= t_first + 1 s} / (t_last - (t_first + 1 s))

how many arrivals a server enforcing the limit would have refused (60007; counted like the
emulator: a refused call does not count against the window), and for the SDK's limiter the
mean time a call held its slot before finishing (send to answer read). The limiter keeps each
slot until 1 s + 1 ms after its call finished, so it cannot sustain more than
``rate / (1.001 s + mean round trip)``: the bound shown next to it.

Usage: ``python benchmarks/bench_rate.py [--mode all|limiters|commands] [--calls 2000]
[--rate 200] [--in-process]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import multiprocessing
import multiprocessing.process
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from aiolimiter import AsyncLimiter

from tim_async.client import TimClient
from tim_async.errors import TimError, TimTimeoutError
from tim_async.limiter import (
    DEFAULT_UNANSWERED_HOLD,
    SlidingWindow,
    SlidingWindowLimiter,
    _CommandLimiter,
)
from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY, FakeTimServer, Fault

API_GROUP_GET = "openim_msg_ext_http_svc/group_get_key_values"
API_GET = "openim_msg_ext_http_svc/get_key_values"
API_ATTR = "group_open_attr_http_svc/get_group_attr"
APIS = (API_GROUP_GET, API_GET, API_ATTR)

HEADERS = [
    "limiter",
    "command",
    "calls",
    "max in any 1 s",
    "sustained /s",
    "% of limit",
    "would get 60007",
    "mean round trip ms (bound)",
    "wall s",
    "goal met",
]


# --------------------------------------------------------------------------- limiter variants


class GcraBucket:
    """The limiter's pacing before issue 12 (GCRA: calls ``period / rate`` apart, bursts of
    ``burst``), with aiolimiter's interface so that it drops into the same limiter: kept here,
    benchmark-only, to compare the two pacings side by side."""

    def __init__(self, rate: int, period: float, burst: int) -> None:
        self.interval = period / rate
        self.tolerance = (burst - 1) * self.interval
        self.tat = float("-inf")  # theoretical arrival time

    def has_capacity(self, amount: float = 1) -> bool:
        return asyncio.get_running_loop().time() >= self.tat - self.tolerance

    async def acquire(self, amount: float = 1) -> None:
        loop = asyncio.get_running_loop()
        while (now := loop.time()) < (at := self.tat - self.tolerance):  # noqa: ASYNC110
            await asyncio.sleep(at - now)
        self.tat = max(self.tat, now) + self.interval


class GcraLimiter(SlidingWindowLimiter):
    """The same window and admitter, paced by :class:`GcraBucket` (the previous pacing)."""

    def _new_bucket(self) -> GcraBucket:  # type: ignore[override]
        return GcraBucket(self.rate, self.period, self.burst)


class _BucketFirstCommand(_CommandLimiter):
    window_first = False


class BucketFirstLimiter(SlidingWindowLimiter):
    """The other order: the token first, then the window slot (a token may wait for the
    window)."""

    def _new_command(self, window: SlidingWindow, bucket: object) -> _CommandLimiter:  # type: ignore[override]
        return _BucketFirstCommand(window, bucket)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Target:
    """The seeded emulator state the calls read."""

    group_id: str
    msg_seq: int
    sender: str
    receiver: str
    msg_key: str

    @classmethod
    def seed(cls, server: FakeTimServer) -> Target:
        group_id = server.create_group()
        msg_seq = server.send_group_msg(group_id)
        server.put_group_extensions(group_id, msg_seq, {f"k{i}": "v" for i in range(5)})
        sender, receiver = "alice", "bob"
        msg_key = server.send_c2c_msg(sender, receiver)
        server.put_c2c_extensions(sender, receiver, msg_key, {f"k{i}": "v" for i in range(5)})
        server.set_group_attrs(group_id, {"topic": "bench"})
        return cls(group_id, msg_seq, sender, receiver, msg_key)


class Recorder:
    """An emulator that only records (``rate_limit=None``, request log on), seeded with one
    :class:`Target`: in this process, or (default) in a child process so that serving does not
    slow the client's event loop; ``arrivals()`` returns and clears the logged arrival times."""

    def __init__(self, separate: bool) -> None:
        self.separate = separate
        self.base_url = ""
        self.target: Target | None = None
        self._server: FakeTimServer | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    async def __aenter__(self) -> Recorder:
        if not self.separate:
            self._server = FakeTimServer(rate_limit=None)
            await self._server.start()
            self.base_url, self.target = self._server.base_url, Target.seed(self._server)
            return self
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        ready = await asyncio.to_thread(self._conn.poll, 60.0)
        if not ready:
            raise RuntimeError("the emulator process did not start")
        self.base_url, self.target = self._conn.recv()
        return self

    async def arrivals(self) -> dict[str, list[float]]:
        if self._server is not None:
            log = self._server.requests
            times = {api: [r.time for r in log if r.command == api] for api in APIS}
            self._server.clear_log()
            return times
        assert self._conn is not None
        self._conn.send("arrivals")
        result: dict[str, list[float]] = await asyncio.to_thread(self._conn.recv)
        return result

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.close()
        if self._proc is not None:
            assert self._conn is not None
            with contextlib.suppress(OSError):
                self._conn.send("stop")
            await asyncio.to_thread(self._proc.join, 10.0)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join()
            self._conn.close()


def _serve(conn: Connection) -> None:
    """The child process of :class:`Recorder`: serve until told to stop."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_async(conn))


async def _serve_async(conn: Connection) -> None:
    async with FakeTimServer(rate_limit=None) as server:
        conn.send((server.base_url, Target.seed(server)))
        while True:
            message = await asyncio.to_thread(conn.recv)
            if message != "arrivals":
                return
            log = server.requests
            conn.send({api: [r.time for r in log if r.command == api] for api in APIS})
            server.clear_log()


def _client(base_url: str, limiter: _common.TimedLimiter | None) -> TimClient:
    """A client with the SDK's limiter (timed) when ``limiter`` is given, else no limit."""
    return TimClient(
        TEST_SDKAPPID,
        TEST_ADMIN,
        secret_key=TEST_SECRET_KEY,
        base_url=base_url,
        rate_limit=None if limiter is None else limiter.inner.rate,  # type: ignore[arg-type]
        limiter=limiter,
        max_retries=0,
        timeout=600.0,  # a call may wait its turn in the limiter for the whole run
    )


def _row(
    name: str,
    command: str,
    times: Sequence[float],
    rate: int,
    wall: float,
    errors: int,
    round_trip_ms: float | None = None,
    goal: float = 0.99,
) -> tuple[list[object], bool]:
    peak = _common.max_in_window(times)
    sustained = _common.sustained_rate(times)
    share = sustained / rate
    refused = _common.over_limit(times, rate)
    ok = peak <= rate and share >= goal and errors == 0
    calls = f"{len(times)}" + (f" ({errors} failed)" if errors else "")
    return [
        name,
        command.rsplit("/", 1)[1],
        calls,
        peak,
        "n/a (< 1 s)" if math.isnan(sustained) else f"{sustained:.1f}",
        "n/a" if math.isnan(share) else f"{100 * share:.2f} %",
        refused,
        "-"
        if round_trip_ms is None
        else f"{round_trip_ms:.1f} (-> {rate / (1.001 + round_trip_ms / 1e3):.1f}/s)",
        f"{wall:.2f}",
        _common.yes_no(ok),
    ], ok


async def _run_calls(
    calls: Sequence[Callable[[], Awaitable[object]]],
) -> tuple[float, int]:
    async def one(call: Callable[[], Awaitable[object]]) -> None:
        await call()

    start = time.perf_counter()
    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    wall = time.perf_counter() - start
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors[:3]:
        print(f"  call failed: {error!r}", file=sys.stderr)
    return wall, len(errors)


async def _one_command(
    base_url: str,
    target: Target,
    outer: AbstractAsyncContextManager[object] | None,
    calls: int,
    limiter: _common.TimedLimiter | None,
) -> tuple[float, int]:
    """``calls`` pulls of one small message, through the SDK's limiter (``limiter``) or with
    the SDK's limit off and each call inside ``async with outer``."""
    async with _client(base_url, limiter) as tim:
        ext = tim.msg_ext

        async def call() -> object:
            if outer is None:
                return await ext.group_get_key_values(target.group_id, target.msg_seq)
            async with outer:
                return await ext.group_get_key_values(target.group_id, target.msg_seq)

        return await _run_calls([call] * calls)


async def _sdk_run(
    recorder: Recorder, calls: int, rate: int, inner: SlidingWindowLimiter
) -> tuple[list[float], float, int, float]:
    """``calls`` pulls through the SDK with ``inner`` as its limiter: (arrivals, wall, errors,
    mean round trip ms)."""
    assert recorder.target is not None
    limiter = _common.TimedLimiter(inner)
    wall, errors = await _one_command(recorder.base_url, recorder.target, None, calls, limiter)
    times = (await recorder.arrivals())[API_GROUP_GET]
    return times, wall, errors, limiter.mean_ms()


def _median_row(rows: list[list[object]]) -> list[object]:
    """The row of the median sustained rate among rounds of one variant."""

    def key(row: list[object]) -> float:
        with contextlib.suppress(ValueError):
            return float(str(row[4]))
        return float("nan")

    return sorted(rows, key=key)[len(rows) // 2]


async def limiters(
    recorder: Recorder, calls: int, rate: int, rounds: int, plot: dict[str, list[float]]
) -> tuple[list[list[object]], bool]:
    """Figure 1: one command; the SDK's limiter (aiolimiter pacing), the same with the previous
    GCRA pacing, and aiolimiter used naively; ``rounds`` alternating rounds, median shown."""
    variants: list[tuple[str, Callable[[], SlidingWindowLimiter | AsyncLimiter]]] = [
        (
            f"SDK SlidingWindowLimiter({rate}) + AsyncLimiter pacing",
            lambda: SlidingWindowLimiter(rate),
        ),
        (f"previous: window + GCRA pacing ({rate})", lambda: GcraLimiter(rate)),
        (f"AsyncLimiter({rate}, 1)", lambda: AsyncLimiter(rate, 1)),
        (f"AsyncLimiter(1, 1/{rate})", lambda: AsyncLimiter(1, 1 / rate)),
    ]
    assert recorder.target is not None
    await recorder.arrivals()  # start from an empty log
    per_variant: dict[str, list[list[object]]] = {name: [] for name, _ in variants}
    sdk_ok = True
    for round_no in range(rounds):
        for index, (name, make) in enumerate(variants):
            made = make()
            if isinstance(made, SlidingWindowLimiter):
                times, wall, errors, rtt = await _sdk_run(recorder, calls, rate, made)
                round_trip: float | None = rtt
            else:
                wall, errors = await _one_command(
                    recorder.base_url, recorder.target, made, calls, None
                )
                times = (await recorder.arrivals())[API_GROUP_GET]
                round_trip = None
            row, ok = _row(name, API_GROUP_GET, times, rate, wall, errors, round_trip, 0.995)
            per_variant[name].append(row)
            if index == 0:
                sdk_ok = sdk_ok and ok
            if round_no == 0 and index != 1:
                plot[name] = times
            print(
                f"  round {round_no + 1}: {name}: {row[4]}/s, max {row[3]}",
                file=sys.stderr,
                flush=True,
            )
    rows = [_median_row(rs) for rs in per_variant.values()]
    # The goal is the SDK's; the other rows show why it is built the way it is.
    for row in rows[1:]:
        row[-1] = "(reference)"
    return rows, sdk_ok


async def configs(recorder: Recorder, calls: int, rate: int, rounds: int) -> list[list[object]]:
    """The bucket's capacity (2, 4, rate // 50, 8) and the order of the two stages."""
    capacities = sorted({2, 4, max(2, rate // 50), 8})
    variants: list[tuple[str, Callable[[], SlidingWindowLimiter]]] = []
    for burst in capacities:
        variants.append(
            (
                f"window, then AsyncLimiter({burst})",
                lambda b=burst: SlidingWindowLimiter(rate, burst=b),
            )
        )
        variants.append(
            (
                f"AsyncLimiter({burst}), then window",
                lambda b=burst: BucketFirstLimiter(rate, burst=b),
            )
        )
    await recorder.arrivals()
    per_variant: dict[str, list[list[object]]] = {name: [] for name, _ in variants}
    for round_no in range(rounds):
        for name, make in variants:
            times, wall, errors, rtt = await _sdk_run(recorder, calls, rate, make())
            row, _ = _row(name, API_GROUP_GET, times, rate, wall, errors, rtt, 0.995)
            per_variant[name].append(row)
            print(
                f"  round {round_no + 1}: {name}: {row[4]}/s, max {row[3]}",
                file=sys.stderr,
                flush=True,
            )
    return [_median_row(rs) for rs in per_variant.values()]


async def commands(recorder: Recorder, calls: int, rate: int) -> tuple[list[list[object]], bool]:
    """Figure 2: three commands at once through one client, ``calls`` each."""
    target = recorder.target
    assert target is not None
    await recorder.arrivals()  # start from an empty log
    limiter = _common.TimedLimiter(rate)
    async with _client(recorder.base_url, limiter) as tim:
        ext, attr = tim.msg_ext, tim.group_attr
        per_command: list[Callable[[], Awaitable[object]]] = [
            lambda: ext.group_get_key_values(target.group_id, target.msg_seq),
            lambda: ext.get_key_values(target.receiver, target.msg_key, from_account=target.sender),
            lambda: attr.get_group_attr(target.group_id),
        ]
        interleaved = [f for _ in range(calls) for f in per_command]
        wall, errors = await _run_calls(interleaved)
    rows: list[list[object]] = []
    all_ok = errors == 0
    arrivals = await recorder.arrivals()
    for api in APIS:
        times = arrivals[api]
        name = f"SDK SlidingWindowLimiter({rate})"
        row, ok = _row(name, api, times, rate, wall, 0, limiter.mean_ms())
        all_ok = all_ok and ok and len(times) == calls
        rows.append(row)
    if errors:
        print(f"  {errors} calls failed", file=sys.stderr)
    return rows, all_ok


TIMEOUT_HEADERS = [
    "slow answers",
    "unanswered_hold s",
    "calls",
    "timed out",
    "of which sent (unanswered)",
    "arrivals /s",
    "% of limit",
    "max in any 1 s",
]


async def timeouts(
    rate: int, seconds: float, shares: Sequence[float], workers: int, call_timeout: float
) -> list[list[object]]:
    """The throughput cost of holding unanswered slots: ``shares`` of the calls get a slow
    answer 2 s past the calls' timeout; ``workers`` call for ``seconds``; arrivals per second at
    the server with the hold at 0 (the rule off) and at the default. With more workers than
    ``rate * timeout`` calls queue in the limiter until their deadline is nearly gone, are sent
    with no time left and end unanswered too (``--workers 64 --call-timeout 0.25``)."""
    rows: list[list[object]] = []
    for share in shares:
        for hold in [DEFAULT_UNANSWERED_HOLD] if share == 0 else [0.0, DEFAULT_UNANSWERED_HOLD]:
            times, counts = await _timeout_run(rate, seconds, share, hold, workers, call_timeout)
            per_s = _common.sustained_rate(times)
            rows.append(
                [
                    f"{100 * share:.0f} %",
                    f"{hold:g}",
                    counts["calls"],
                    counts["timed out"],
                    counts["unanswered"],
                    f"{per_s:.1f}",
                    f"{100 * per_s / rate:.1f} %",
                    _common.max_in_window(times),
                ]
            )
            _progress(f"slow {share:.0%}, hold {hold:g}: {per_s:.1f}/s")
    return rows


async def _timeout_run(
    rate: int, seconds: float, share: float, hold: float, workers: int, call_timeout: float
) -> tuple[list[float], dict[str, int]]:
    async with FakeTimServer(rate_limit=None) as server:
        target = Target.seed(server)
        if share:
            server.faults.random({Fault.slow(call_timeout + 2.0): share}, seed=1)
        counts = {"calls": 0, "timed out": 0}
        limiter = _common.TimedLimiter(SlidingWindowLimiter(rate, unanswered_hold=hold))
        async with TimClient(
            TEST_SDKAPPID,
            TEST_ADMIN,
            secret_key=TEST_SECRET_KEY,
            base_url=server.base_url,
            limiter=limiter,
            timeout=call_timeout,
            max_retries=0,
        ) as tim:
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def worker() -> None:
                while loop.time() - start < seconds:
                    counts["calls"] += 1
                    try:
                        await tim.msg_ext.group_get_key_values(target.group_id, target.msg_seq)
                    except TimTimeoutError:
                        counts["timed out"] += 1
                    except TimError:
                        pass

            await asyncio.gather(*(worker() for _ in range(workers)))
        counts["unanswered"] = limiter.unanswered
        return [r.time for r in server.requests_for(API_GROUP_GET)], counts


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def draw(plot: dict[str, list[float]], rate: int, path: str) -> None:
    """For each series, the arrivals in the sliding second ending at each arrival, over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        raise SystemExit(2) from None
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    styles = {0: ("tab:blue", 2.0, 3), 1: ("tab:red", 1.2, 2), 2: ("tab:green", 1.2, 2)}
    for index, (name, times) in enumerate(plot.items()):
        ts = sorted(times)
        if not ts:
            continue
        counts, lo = [], 0
        for hi, t in enumerate(ts):
            while ts[lo] <= t - 1.0:
                lo += 1
            counts.append(hi - lo + 1)
        label = "tim_async (window + AsyncLimiter pacing)" if name.startswith("SDK") else name
        color, width, zorder = styles.get(index, ("gray", 1.0, 2))
        ax.plot(
            [t - ts[0] for t in ts],
            counts,
            label=label,
            color=color,
            linewidth=width,
            zorder=zorder,  # tim_async on top
        )
    ax.axhline(rate, color="black", linestyle="--", linewidth=1, label=f"server limit ({rate}/s)")
    ax.set_xlabel("seconds since the first arrival")
    ax.set_ylabel("arrivals in the last second")
    ax.set_title(f"{len(next(iter(plot.values())))} calls seen at the server, limit {rate}/s")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"chart written to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=("all", "limiters", "commands", "configs", "timeouts"),
        default="all",
        help="all = limiters + commands; configs: bucket capacity and stage order; "
        "timeouts: the throughput cost of holding unanswered slots",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (median shown)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of a timeouts run")
    parser.add_argument("--workers", type=int, default=32, help="workers of a timeouts run")
    parser.add_argument(
        "--call-timeout", type=float, default=1.0, help="the calls' timeout in a timeouts run"
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="draw the limiters' arrivals per sliding second to PNG (needs the bench extra)",
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per command per run")
    parser.add_argument("--rate", type=int, default=200, help="calls/s per command")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the recording emulator in this process (default: a child process)",
    )
    return parser


async def amain(args: argparse.Namespace) -> int:
    _common.print_machine()
    where = "in this process" if args.in_process else "in a child process"
    print(f"recording emulator (rate_limit=None) {where}")
    async with Recorder(separate=not args.in_process) as recorder:
        return await _measure(args, recorder)


async def _measure(args: argparse.Namespace, recorder: Recorder) -> int:
    ok = True
    plot: dict[str, list[float]] = {}
    if args.mode in ("all", "limiters") or args.plot:
        print(
            f"\nRate precision: {args.calls} x group_get_key_values at {args.rate}/s, "
            f"arrival times at the server, median of {args.rounds} alternating round(s)",
            flush=True,
        )
        rows, good = await limiters(recorder, args.calls, args.rate, args.rounds, plot)
        _common.print_table(HEADERS, rows)
        ok = ok and good
        if args.plot:
            draw(plot, args.rate, args.plot)
    if args.mode == "configs":
        print(
            f"\nPacing configurations: {args.calls} calls at {args.rate}/s, "
            f"median of {args.rounds} alternating round(s)",
            flush=True,
        )
        _common.print_table(HEADERS, await configs(recorder, args.calls, args.rate, args.rounds))
    if args.mode == "timeouts":
        print(
            f"\nCalls that time out: {args.workers} workers for {args.seconds:g} s at "
            f"{args.rate}/s, timeout {args.call_timeout:g} s, a share of the answers "
            f"{args.call_timeout + 2:g} s slow (emulator in this process)",
            flush=True,
        )
        rows = await timeouts(
            args.rate, args.seconds, (0.0, 0.01, 0.05), args.workers, args.call_timeout
        )
        _common.print_table(TIMEOUT_HEADERS, rows)
    if args.mode in ("all", "commands"):
        print(
            f"\nPer-command budgets: 3 commands at once through one client, {args.calls} each",
            flush=True,
        )
        rows, good = await commands(recorder, args.calls, args.rate)
        _common.print_table(HEADERS, rows)
        ok = ok and good
    print(
        f"\ngoals (max <= {args.rate}; sustained >= 99.5 % for one command, >= 99 % each for "
        f"three): {'met' if ok else 'NOT met'}"
    )
    print(f"load average after the run: {_common.load_line()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.calls < 1 or args.rate < 1:
        print("--calls and --rate must be >= 1", file=sys.stderr)
        return 2
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
