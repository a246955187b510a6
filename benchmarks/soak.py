"""Soak test: hours-long behaviour in minutes. Not run in CI.

Runs the SDK for ``--seconds`` (default 600) at the full rate (``--rate`` calls/s per REST
command, default 200) on two commands at once — full extension pulls
(``group_get_key_values``, messages of 1 to 300 pairs, so some take two pages) and
``get_group_counter`` — against the emulator enforcing the same rate, while the emulator injects
``--fault-rate`` (default 5 %) mixed faults: HTTP 502/503, ErrorCode 10002, connections dropped
before and after applying, slow answers (some past the timeout), non-JSON and truncated answers.

The emulator runs in a separate process (this script started with ``--serve``: the standalone
``python -m tim_async.testing`` has no fault options), or in-process with ``--in-process``.
Both sides build the same data from ``--seed``, so every answer is checked against what it must
be: a wrong result (a list or a counter that differs) is counted and must stay 0; every failure
must be a typed ``TimError``.

Every ``--sample`` seconds (default 10) it samples the client's RSS, the emulator's RSS, the
client's connections (in use + idle in the pool, and open socket descriptors) and the number of
asyncio tasks, then prints a table and a verdict:

* memory flat: mean RSS of the last quarter within 10 % of the mean of the second quarter;
* no growth in connections or tasks (last-quarter mean <= second-quarter mean + 10 % + 2);
* 0 wrong results, 0 untyped errors.

Usage: ``python benchmarks/soak.py [--seconds 600] [--rate 200] [--fault-rate 0.05]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import statistics
import sys
from pathlib import Path

import attrs

from tim_async import errors
from tim_async.client import TimClient
from tim_async.models import ExtensionList
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault

GROUP = "@TGS#SOAK"
COUNTER_GROUPS = 20
TIMEOUT = 2.0
WORKERS_PER_COMMAND = 24
PROBE_EVERY = 1.0


# --------------------------------------------------------------------------- the data set


def dataset(seed: int, messages: int) -> list[dict[str, str]]:
    """The pairs of messages 1..messages (message i is index i - 1), deterministic."""
    rng = random.Random(seed)
    return [
        {f"k{i}-{rng.randrange(10**6)}": f"v{m}-{i}-é中" for i in range(rng.randint(1, 300))}
        for m in range(1, messages + 1)
    ]


def expected_pairs(values: dict[str, str]) -> dict[str, tuple[str, int]]:
    """What the emulator holds after ``put_group_extensions`` (20 keys per seq, seq 1, 2, ...)."""
    return {key: (value, i // 20 + 1) for i, (key, value) in enumerate(values.items())}


def counters(index: int) -> dict[str, int]:
    return {f"c{j}": index * 1000 + j for j in range(index % 20 + 1)}


def fault_weights(rate: float) -> dict[Fault, float]:
    kinds = [
        Fault.http(502),
        Fault.http(503),
        Fault.code(10002),
        Fault.DROP_BEFORE_APPLY,
        Fault.DROP_AFTER_APPLY,
        Fault.NON_JSON,
        Fault.TRUNCATED_JSON,
        Fault.slow(0.3),
    ]
    weights = dict.fromkeys(kinds, rate / (len(kinds) + 0.5))
    weights[Fault.slow(TIMEOUT + 1.0)] = rate / (len(kinds) + 0.5) / 2  # past the timeout
    return weights


def build_server(args: argparse.Namespace, port: int = 0) -> FakeTimServer:
    server = FakeTimServer(
        rate_limit=args.rate, port=port, seed=args.seed, log_requests=False, page_size=200
    )
    server.create_group(GROUP)
    for values in dataset(args.seed, args.messages):
        seq = server.send_group_msg(GROUP)
        server.put_group_extensions(GROUP, seq, values)
    for index in range(COUNTER_GROUPS):
        gid = server.create_group(f"@TGS#C{index}")
        server.set_group_counters(gid, counters(index))
    if args.fault_rate > 0:
        server.faults.random(fault_weights(args.fault_rate), seed=args.seed)
    return server


async def serve(args: argparse.Namespace) -> None:
    """``--serve``: run the emulator, print its URL, stop on SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with build_server(args) as server:
        print(server.base_url, flush=True)
        await stop.wait()


# --------------------------------------------------------------------------- measurements


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


@attrs.define
class Tally:
    pulls: int = 0
    pages: int = 0
    counter_gets: int = 0
    wrong: int = 0
    untyped: int = 0
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    wrong_examples: list[str] = attrs.field(factory=list)


@attrs.define
class Sample:
    t: float
    client_rss: float
    server_rss: float
    in_use: int
    idle: int
    sockets: int
    tasks: int
    pulls: int
    pages: int
    counter_gets: int
    errors: int
    wrong: int
    retries: int


def connections(tim: TimClient) -> tuple[int, int]:
    http = tim._session._http
    connector = http.connector if http is not None else None
    if connector is None:
        return 0, 0
    in_use = len(connector._acquired)
    idle = sum(len(c) for c in connector._conns.values())
    return in_use, idle


# --------------------------------------------------------------------------- the load


async def pull_worker(
    tim: TimClient, expected: list[dict[str, tuple[str, int]]], tally: Tally, stop: float
) -> None:
    rng = random.Random()
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        seq = rng.randrange(1, len(expected) + 1)
        want = expected[seq - 1]
        try:
            got: ExtensionList = await tim.msg_ext.group_get_key_values(GROUP, seq)
        except errors.TimError as exc:
            tally.errors[type(exc).__name__] += 1
            continue
        except Exception as exc:  # must not happen
            tally.untyped += 1
            tally.errors[f"UNTYPED {type(exc).__name__}"] += 1
            continue
        tally.pulls += 1
        tally.pages += 1 if len(want) <= 200 else 2
        if {i.key: (i.value, i.seq) for i in got} != want or len(got) != len(want):
            tally.wrong += 1
            if len(tally.wrong_examples) < 5:
                tally.wrong_examples.append(f"msg {seq}: {len(got)} pairs, want {len(want)}")


async def counter_worker(tim: TimClient, tally: Tally, stop: float) -> None:
    rng = random.Random()
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        index = rng.randrange(COUNTER_GROUPS)
        try:
            got = await tim.group_counter.get_group_counter(f"@TGS#C{index}")
        except errors.TimError as exc:
            tally.errors[type(exc).__name__] += 1
            continue
        except Exception as exc:  # must not happen
            tally.untyped += 1
            tally.errors[f"UNTYPED {type(exc).__name__}"] += 1
            continue
        tally.counter_gets += 1
        if got != counters(index):
            tally.wrong += 1
            if len(tally.wrong_examples) < 5:
                tally.wrong_examples.append(f"counters of group {index}: {got}")


@attrs.define
class Probe:
    """What the verdict is computed from: taken every second (the table shows every tenth)."""

    client_rss: float
    connections: int
    sockets: int
    tasks: int


async def sampler(
    tim: TimClient, tally: Tally, server_pid: int | None, every: float, stop: float
) -> tuple[list[Sample], list[Probe]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    samples: list[Sample] = []
    probes: list[Probe] = []
    next_probe = start + PROBE_EVERY
    next_sample = start + every
    end = stop - PROBE_EVERY / 2  # the workers wind down at ``stop``
    while next_probe <= end:
        await asyncio.sleep(max(0.0, next_probe - loop.time()))
        now = loop.time()
        in_use, idle = connections(tim)
        probe = Probe(rss_mb(), in_use + idle, open_sockets(), len(asyncio.all_tasks()))
        probes.append(probe)
        if now >= next_sample - PROBE_EVERY / 2 or next_probe + PROBE_EVERY > end:
            samples.append(
                Sample(
                    t=now - start,
                    client_rss=probe.client_rss,
                    server_rss=rss_mb(server_pid) if server_pid else float("nan"),
                    in_use=in_use,
                    idle=idle,
                    sockets=probe.sockets,
                    tasks=probe.tasks,
                    pulls=tally.pulls,
                    pages=tally.pages,
                    counter_gets=tally.counter_gets,
                    errors=sum(tally.errors.values()),
                    wrong=tally.wrong,
                    retries=tim.stats.retries,
                )
            )
            next_sample += every
        next_probe += PROBE_EVERY
    return samples, probes


def quarter_means(values: list[float]) -> tuple[float, float]:
    """Means of the second and of the last quarter of ``values``."""
    n = len(values)
    q = max(1, n // 4)
    second = values[q : 2 * q] or values[:1]
    last = values[n - q :]
    return statistics.fmean(second), statistics.fmean(last)


def report(
    samples: list[Sample],
    probes: list[Probe],
    tally: Tally,
    tim: TimClient,
    seconds: float,
    workers: int,
) -> bool:
    print(
        f"\n{'t(s)':>6} {'client MB':>9} {'server MB':>9} {'in use':>6} {'idle':>5} "
        f"{'sockets':>7} {'tasks':>5} {'pulls/s':>8} {'pages/s':>8} {'ctr/s':>6} "
        f"{'errors':>6} {'wrong':>5} {'retries':>7}"
    )
    previous: Sample | None = None
    for s in samples:
        dt = s.t - (previous.t if previous else 0.0)
        pulls = s.pulls - (previous.pulls if previous else 0)
        pages = s.pages - (previous.pages if previous else 0)
        gets = s.counter_gets - (previous.counter_gets if previous else 0)
        print(
            f"{s.t:6.0f} {s.client_rss:9.1f} {s.server_rss:9.1f} {s.in_use:6d} {s.idle:5d} "
            f"{s.sockets:7d} {s.tasks:5d} {pulls / dt:8.1f} {pages / dt:8.1f} {gets / dt:6.1f} "
            f"{s.errors:6d} {s.wrong:5d} {s.retries:7d}"
        )
        previous = s
    stats = tim.stats
    print(
        f"\ncalls={stats.calls} attempts={stats.attempts} retries={stats.retries} "
        f"failures={stats.failures} in {seconds:.0f}s "
        f"({stats.attempts / seconds:.1f} requests/s over both commands)"
    )
    print(f"retried by reason: {dict(sorted(stats.retried_by_reason.items()))}")
    print(f"errors by class: {dict(sorted(tally.errors.items()))}")
    if tally.wrong_examples:
        print(f"wrong results: {tally.wrong_examples}")

    # Growth: quarter means of the one-second probes (the first 10 s are warm-up). Leaks: each
    # worker has at most one request in flight, so open connections can never exceed the
    # number of workers (a leaked connection is never reused: at this volume they would pile up).
    steady = probes[10:] if len(probes) >= 20 else probes
    rss2, rss4 = quarter_means([p.client_rss for p in steady])
    conn2, conn4 = quarter_means([float(p.connections) for p in steady])
    sock2, sock4 = quarter_means([float(p.sockets) for p in steady])
    task2, task4 = quarter_means([float(p.tasks) for p in steady])
    max_conn = max(p.connections for p in probes)

    def flat(second: float, last: float) -> bool:
        return last <= second * 1.25 + 5

    checks = {
        f"memory flat (last quarter {rss4:.1f} MB vs second quarter {rss2:.1f} MB, "
        f"{(rss4 / rss2 - 1) * 100:+.1f} %)": abs(rss4 - rss2) <= 0.10 * rss2,
        f"no connection growth (open {conn2:.1f} -> {conn4:.1f}, sockets {sock2:.1f} -> "
        f"{sock4:.1f}; at most {max_conn} open <= {workers} workers)": flat(conn2, conn4)
        and flat(sock2, sock4)
        and max_conn <= workers,
        f"no task growth ({task2:.1f} -> {task4:.1f})": flat(task2, task4),
        f"wrong results: {tally.wrong}": tally.wrong == 0,
        f"untyped errors: {tally.untyped}": tally.untyped == 0,
        f"work done ({tally.pulls} pulls, {tally.counter_gets} counter reads)": tally.pulls > 0
        and tally.counter_gets > 0,
    }
    print()
    for text, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {text}")
    verdict = all(checks.values())
    print(f"\nVERDICT: {'PASS' if verdict else 'FAIL'}")
    return verdict


async def run(args: argparse.Namespace) -> bool:
    expected = [expected_pairs(values) for values in dataset(args.seed, args.messages)]
    proc: asyncio.subprocess.Process | None = None
    server: FakeTimServer | None = None
    if args.in_process:
        server = build_server(args)
        await server.start()
        base_url = server.base_url
    else:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            *("--seed", str(args.seed), "--messages", str(args.messages)),
            *("--rate", str(args.rate), "--fault-rate", str(args.fault_rate)),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        base_url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        if not base_url.startswith("http"):
            raise SystemExit(f"the emulator process did not start (got {base_url!r})")
    where = "in-process" if proc is None else f"pid {proc.pid}"
    print(
        f"soak: {args.seconds:.0f}s at {args.rate}/s per command, {args.fault_rate:.0%} faults, "
        f"{args.messages} messages, emulator {where} at {base_url}"
    )
    tally = Tally()
    try:
        async with TimClient(
            server.sdkappid if server else 1400000000,
            secret_key=TEST_SECRET_KEY,
            base_url=base_url,
            rate_limit=args.rate,
            timeout=TIMEOUT,
            retry=RetryPolicy(max_retries=3, backoff_base=0.05),
        ) as tim:
            loop = asyncio.get_running_loop()
            started = loop.time()
            stop = started + args.seconds
            workers = [pull_worker(tim, expected, tally, stop) for _ in range(args.workers)]
            workers += [counter_worker(tim, tally, stop) for _ in range(args.workers)]
            sampling = asyncio.create_task(
                sampler(tim, tally, proc.pid if proc else None, args.sample, stop)
            )
            await asyncio.gather(*workers)
            samples, probes = await sampling
            elapsed = loop.time() - started
            return report(samples, probes, tally, tim, elapsed, len(workers))
    finally:
        if server is not None:
            await server.close()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=int, default=200, help="calls/s per command")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--workers", type=int, default=WORKERS_PER_COMMAND)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--in-process", action="store_true", help="emulator in this process")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args))
        return 0
    return 0 if asyncio.run(run(args)) else 1


if __name__ == "__main__":
    sys.exit(main())
