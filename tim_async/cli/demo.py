"""``tim-async demo``: the whole SDK against the embedded emulator."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tim_async.cli.demo_walk import _Checks, _demo_endpoints, _group_matches
from tim_async.cli.meter import MeteredLimiter
from tim_async.cli.options import (
    DEFAULT_RATE_LIMIT,
    EXIT_FAILED,
    EXIT_OK,
    int_range,
)
from tim_async.cli.progress import Progress
from tim_async.cli.registry import Commands
from tim_async.endpoints.bulk import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, GroupMessage, PullStats
from tim_async.endpoints.msg_ext import API_GROUP_GET
from tim_async.limiter import SlidingWindowLimiter

if TYPE_CHECKING:
    from tim_async.testing import FakeTimServer


def busiest_second(times: Sequence[float]) -> int:
    """The most arrivals in any sliding one-second window (``times`` sorted)."""
    best = 0
    lo = 0
    for hi, now in enumerate(times):
        while times[lo] <= now - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _seed_bulk(server: FakeTimServer, messages: int, seed: int) -> tuple[str, list[int]]:
    """One group with ``messages`` messages: mostly 1-40 pairs, every 50th with more than 200
    (two pages), some cleared and written again, some with deleted keys."""
    rng = random.Random(seed)
    gid = server.create_group("@TGS#DEMOBULK")
    seqs: list[int] = []
    for i in range(messages):
        seq = server.send_group_msg(gid)
        seqs.append(seq)
        count = rng.randint(201, 300) if i % 50 == 7 else rng.randint(1, 40)
        server.put_group_extensions(gid, seq, {f"key{j:03d}": f"v{seq}.{j}" for j in range(count)})
        if i % 97 == 3:
            server.clear_group_extensions(gid, seq)
            server.put_group_extensions(gid, seq, {f"new{j}": f"n{seq}.{j}" for j in range(5)})
        elif i % 31 == 5:
            server.delete_group_extensions(gid, seq, ["key000"])
    return gid, seqs


async def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: start the emulator in-process and drive the whole SDK against it."""
    from tim_async.cli.webhook import DemoWebhooks
    from tim_async.client import TimClient
    from tim_async.testing import FakeTimServer, Fault

    out = sys.stdout
    rate = DEFAULT_RATE_LIMIT
    api = API_GROUP_GET
    checks = _Checks(out)
    wall = time.monotonic()
    async with FakeTimServer(rate_limit=rate, page_size=200, seed=args.seed) as server:
        out.write(
            f"tim_async demo: embedded emulator at {server.base_url} "
            f"(SDKAppID {server.sdkappid}, {rate} calls/s per command enforced)\n\n"
        )
        meter = MeteredLimiter(SlidingWindowLimiter(rate))
        async with TimClient(
            server.sdkappid,
            server.admin,
            secret_key=server.secret_key,
            base_url=server.base_url,
            rate_limit=rate,
            limiter=meter,
        ) as tim:
            webhooks = await DemoWebhooks.start(server, checks)
            try:
                await _demo_endpoints(tim, server, checks)
            except Exception as exc:  # report it as a failed check and go on to the bulk pull
                checks.check("endpoint walk-through", False, f"{type(exc).__name__}: {exc}")
            await webhooks.finish(tim)

            gid, seqs = _seed_bulk(server, args.messages, args.seed)
            injected = [Fault.http(502), Fault.code(10002)] * 4
            server.faults.script(api, _demo_fault_script(len(seqs), injected))
            server.clear_log()
            attempts0, calls0 = tim.stats.attempts, tim.stats.calls
            retries0 = tim.stats.retries
            reasons0 = dict(tim.stats.retried_by_reason)
            out.write(
                f"bulk pull: {len(seqs):,} group messages, {args.concurrency} workers, "
                f"limit {rate} calls/s, {len(injected)} faults injected\n"
            )
            out.flush()

            mismatched: list[int] = []
            failures: list[str] = []
            multi_page = 0
            counters = PullStats()
            progress = Progress(
                sys.stderr, counters, total=len(seqs), calls=meter.current, limit=rate
            )
            progress.start()
            try:
                targets = (GroupMessage(gid, seq) for seq in seqs)
                results = tim.msg_ext.pull_many(
                    targets, concurrency=args.concurrency, stats=counters
                )
                async for result in results:
                    seq = result.target.msg_seq  # type: ignore[union-attr]
                    if result.extensions is None:
                        failures.append(f"MsgSeq {seq}: {result.error}")
                        continue
                    multi_page += result.pages > 1
                    if not _group_matches(server, gid, seq, result.extensions):
                        mismatched.append(seq)
            finally:
                await progress.stop()

            attempts = tim.stats.attempts - attempts0
            calls = tim.stats.calls - calls0
            retries = tim.stats.retries - retries0
            reasons = {
                reason: count - reasons0.get(reason, 0)
                for reason, count in tim.stats.retried_by_reason.items()
                if count - reasons0.get(reason, 0)
            }
            total_calls = tim.stats.attempts

        logged = server.requests_for(api)
        delivered: dict[str, int] = {}
        for entry in logged:
            if entry.fault is not None:
                reason = (
                    f"HTTP {int(entry.fault.arg or 0)}"
                    if entry.fault.kind == "http"
                    else f"ErrorCode {int(entry.fault.arg or 0)}"
                )
                delivered[reason] = delivered.get(reason, 0) + 1
        admitted = sorted(r.time for r in logged if r.fault is None and r.error_code != 60007)
        rejected = sum(1 for r in logged if r.error_code == 60007)
        busiest = busiest_second(admitted)

    checks.check(
        "every message pulled",
        counters.done == len(seqs) and not failures,
        f"{counters.ok:,} ok, {counters.failed:,} failed"
        + (f"; first: {failures[0]}" if failures else ""),
    )
    checks.check(
        "every pulled list equals the emulator's state",
        not mismatched and counters.ok == len(seqs),
        f"{len(mismatched)} mismatched" if mismatched else f"{counters.ok:,} lists compared",
    )
    checks.check(
        "injected faults were retried and recovered",
        reasons == delivered and sum(delivered.values()) == len(injected) and not failures,
        ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items())) or "none",
    )
    checks.check(
        f"emulator never saw more than {rate} calls in one second",
        busiest <= rate and rejected == 0,
        f"busiest second: {busiest}, rejected with 60007: {rejected}",
    )

    await meter.aclose()
    elapsed = counters.elapsed
    # calls over the elapsed time, unless that exceeds the busiest sliding second (a short
    # run whose calls fit in little more than a second): the rate shown is one the server saw
    achieved = min(attempts / max(elapsed, 1e-9), float(meter.busiest))
    floor = counters.pages / rate
    reasons_text = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "none"
    out.write(
        "\nsummary\n"
        f"  calls made       {attempts:,} requests in the bulk pull ({calls:,} calls, "
        f"{retries} retries); {total_calls:,} in the whole demo\n"
        f"  pages walked     {counters.pages:,} ({multi_page} messages with more than "
        f"200 pairs took 2+ pages)\n"
        f"  items pulled     {counters.pairs:,}\n"
        f"  bulk time        {elapsed:.1f} s (floor at {rate}/s: {floor:.1f} s)\n"
        f"  achieved rate    {achieved:.1f} calls/s against a limit of {rate}/s "
        f"({achieved / rate:.1%})\n"
        f"  errors retried   {retries} ({reasons_text})\n"
        f"  wall time        {time.monotonic() - wall:.1f} s\n"
    )
    if checks.failed:
        out.write(
            f"result: {len(checks.failed)} of {checks.passed + len(checks.failed)} checks "
            f"FAILED: {', '.join(checks.failed)}\n"
        )
        out.flush()
        return EXIT_FAILED
    out.write(f"result: all {checks.passed} checks passed\n")
    out.flush()
    return EXIT_OK


def _demo_fault_script(calls: int, faults: Sequence[Any]) -> list[Any]:
    """``faults`` spread evenly over the first ``calls`` requests (``None`` = answer normally)."""
    script: list[Any] = []
    gap = max(calls // (len(faults) + 1), 1)
    for fault in faults:
        script.extend([None] * gap)
        script.append(fault)
    return script


def register(commands: Commands) -> None:
    """``tim-async demo``."""
    demo = commands.command(
        "demo",
        cmd_demo,
        connection=False,
        help="run the whole SDK against the embedded emulator (no credentials, no network)",
        description="Start the emulator on 127.0.0.1, seed groups, messages with extensions, "
        "attributes and counters, call every endpoint, then pull the extensions of many "
        "messages concurrently at the full rate (200 calls/s per command) with a few injected "
        "faults, and print a summary. Exit 0 when every check passes, 1 otherwise.",
    )
    demo.add_argument(
        "--messages",
        type=int_range(100, 20_000),
        default=3000,
        metavar="N",
        help="messages in the bulk pull [default 3000, about 16 s at 200 calls/s]",
    )
    demo.add_argument(
        "--concurrency",
        type=int_range(1, MAX_CONCURRENCY),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"workers of the bulk pull [default {DEFAULT_CONCURRENCY}]",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the generated data")
