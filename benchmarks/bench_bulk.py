"""Bulk pull against the rate limit's floor, and the mixed-commands ratio.

Starts the emulator in another process (``benchmarks/_bulk_emulator.py``, enforcing 200/s: one
group holding messages 1..N with 1-300 extension pairs each, written 20 per set call), then pulls
every message through ``tim.msg_ext.pull_many`` (``--style pull_many``, the default; ``gather``:
``group_get_key_values`` under ``asyncio.gather`` and a semaphore; ``workers``: a fixed pool),
``--concurrency`` 64, with the client's own limit at 200 calls/s (``TimClient(rate_limit=200)``,
default retries).

``--mixed`` measures head-of-line blocking instead: at ``rate_limit=100`` (client and server),
300 one-page group targets against 150 one-page group targets followed by 150 one-page
one-to-one targets (group first), alternating rounds (``--rounds``); printed: the median ratio
of the mixed time to the group-only time (goal <= 0.6; one pool shared by both commands gives
about 0.8).

Printed: the pages the server answered (the SDK's ``stats.attempts``; checked against the page
count computed from the pairs each message returned), the elapsed time from the first call to
the last answer, the floor ``pages / 200`` seconds (what a perfect client could do under a
200/s limit), ``elapsed / floor`` (goal <= 1.02), and the 60007 answers (rate limited,
counted from the retries the SDK made; goal 0).

``--base-url URL`` skips starting an emulator and only runs the pull against one that is running
(used by ``bench_memory.py``); ``--targets T`` then pulls T targets cycling over messages
1..``--messages``, ``--style workers`` uses a fixed pool of ``--concurrency`` workers reading
the targets as they go instead of one ``gather`` over all of them, and ``--json`` prints one
JSON summary line instead of the table.

Usage: ``python benchmarks/bench_bulk.py [--messages 5000] [--concurrency 64] [--rate 200]``
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _bulk_emulator import bulk_emulator

from tim_async import C2CMessage, GroupMessage
from tim_async.client import TimClient
from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY

GROUP_ID = _common.SEED_GROUP_ID
PAGE_SIZE = 200
#: the emulator's seeding writes 20 pairs per set call, so 20 pairs share each seq
PAIRS_PER_SEQ = 20


def pages_for(pairs: int, page_size: int = PAGE_SIZE, per_seq: int = PAIRS_PER_SEQ) -> int:
    """Requests the StartSeq walk makes for a message whose ``pairs`` were written ``per_seq``
    per set call (the emulator's seeding): each page restarts at the highest seq seen."""
    seqs = [i // per_seq + 1 for i in range(pairs)]
    cursor = 0
    pages = 0
    while True:
        start = bisect.bisect_left(seqs, cursor)
        end = start + page_size
        pages += 1
        if end >= len(seqs):
            return pages
        cursor = seqs[end - 1]


def targets(count: int, messages: int) -> Iterator[int]:
    """MsgSeq of ``count`` targets cycling over messages 1..messages."""
    for i in range(count):
        yield i % messages + 1


async def pull(
    base_url: str,
    *,
    messages: int,
    count: int,
    concurrency: int,
    rate: int | None,
    style: str,
) -> dict[str, Any]:
    """Pull ``count`` targets; return the figures (elapsed, pages, pairs, 60007, failures)."""
    limiter = _common.TimedLimiter(rate) if rate is not None else None
    async with TimClient(
        TEST_SDKAPPID,
        TEST_ADMIN,
        secret_key=TEST_SECRET_KEY,
        base_url=base_url,
        rate_limit=rate,
        limiter=limiter,
        timeout=60.0,
    ) as tim:
        ext = tim.msg_ext
        failures: dict[str, int] = {}
        pairs_by_message: dict[int, int] = {}

        async def one(msg_seq: int) -> int:
            try:
                pairs = len(await ext.group_get_key_values(GROUP_ID, msg_seq))
            except Exception as exc:
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1
                return 0
            pairs_by_message[msg_seq] = pairs
            return pairs

        start = time.perf_counter()
        cpu = time.process_time()
        if style == "pull_many":
            total_pairs = 0
            messages_iter = (GroupMessage(GROUP_ID, s) for s in targets(count, messages))
            async for result in ext.pull_many(messages_iter, concurrency=concurrency):
                if result.extensions is None:
                    name = type(result.error).__name__
                    failures[name] = failures.get(name, 0) + 1
                    continue
                pairs = len(result.extensions)
                pairs_by_message[result.target.msg_seq] = pairs  # type: ignore[union-attr]
                total_pairs += pairs
        elif style == "gather":
            semaphore = asyncio.Semaphore(concurrency)

            async def bounded(msg_seq: int) -> int:
                async with semaphore:
                    return await one(msg_seq)

            counts = await asyncio.gather(*(bounded(s) for s in targets(count, messages)))
            total_pairs = sum(counts)
        else:
            source = targets(count, messages)
            total_pairs = 0

            async def worker() -> None:
                nonlocal total_pairs
                for msg_seq in source:
                    got = await one(msg_seq)
                    total_pairs += got

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        stats = tim.stats
        computed_pages = sum(
            pages_for(pairs_by_message[msg_seq])
            for msg_seq in targets(count, messages)
            if msg_seq in pairs_by_message
        )
        held = sorted(limiter.held) if limiter is not None else []
        return {
            "held_mean": sum(held) / len(held) if held else None,
            "held_p99": held[int(0.99 * (len(held) - 1))] if held else None,
            "targets": count,
            "elapsed": elapsed,
            "cpu": cpu,
            "pages": stats.attempts,
            "computed_pages": computed_pages,
            "pairs": total_pairs,
            "rate_limited_60007": stats.retried_by_reason.get("ErrorCode 60007", 0),
            "retries": stats.retries,
            "retried_by_reason": dict(stats.retried_by_reason),
            "failures": failures,
        }


def report(result: dict[str, Any], rate: int, concurrency: int) -> bool:
    pages = result["pages"]
    floor = pages / rate
    ratio = result["elapsed"] / floor if floor else float("nan")
    rate_limited = result["rate_limited_60007"]
    ok = ratio <= 1.02 and rate_limited == 0 and not result["failures"]
    failed = sum(result["failures"].values())
    _common.print_table(
        [
            "messages",
            "pairs",
            "pages answered (computed)",
            "concurrency",
            "elapsed s",
            "floor s (pages/rate)",
            "elapsed/floor",
            "60007",
            "failed",
            "round trip ms mean / p99",
            "client CPU s",
            "goal met",
        ],
        [
            [
                result["targets"],
                result["pairs"],
                f"{pages} ({result['computed_pages']})",
                concurrency,
                f"{result['elapsed']:.2f}",
                f"{floor:.2f}",
                f"**{ratio:.4f}**",
                rate_limited,
                failed,
                f"{1e3 * result['held_mean']:.1f} / {1e3 * result['held_p99']:.1f}",
                f"{result['cpu']:.1f}",
                _common.yes_no(ok),
            ]
        ],
    )
    print(
        "A slot is reused 1 s + 1 ms after its call finished, so the pull can at best reach "
        f"elapsed/floor ~ 1.001 + mean round trip = {1.001 + result['held_mean']:.4f}."
    )
    if result["retried_by_reason"]:
        print(f"retries by reason: {result['retried_by_reason']}")
    if result["failures"]:
        print(f"failures: {result['failures']}")
    print(f"\ngoals (elapsed/floor <= 1.02, no 60007): {'met' if ok else 'NOT met'}")
    return ok


MIXED_RATE = 100


async def timed_run(
    base_url: str, items: list[GroupMessage | C2CMessage], concurrency: int
) -> float:
    """Seconds to pull ``items`` through ``pull_many`` at ``MIXED_RATE`` (every one must pass)."""
    async with TimClient(
        TEST_SDKAPPID, TEST_ADMIN, secret_key=TEST_SECRET_KEY, base_url=base_url,
        rate_limit=MIXED_RATE, timeout=60.0,
    ) as tim:  # fmt: skip
        start = time.perf_counter()
        done = 0
        async for result in tim.msg_ext.pull_many(items, concurrency=concurrency):
            if result.error is not None:
                raise RuntimeError(f"{result.target}: {result.error}")
            done += 1
        elapsed = time.perf_counter() - start
        assert done == len(items)
        assert tim.stats.retries == 0, tim.stats.retried_by_reason
    return elapsed


def mixed(rounds: int, concurrency: int) -> int:
    """The mixed-commands ratio (see the module docstring)."""
    _common.print_machine()
    print(f"\nMixed commands at rate_limit={MIXED_RATE} (client and server), "
          f"concurrency {concurrency}, {rounds} alternating rounds", flush=True)  # fmt: skip
    with bulk_emulator(rate=MIXED_RATE, small=300, c2c=150) as emulator:
        group = emulator["small_group"]
        group_only: list[GroupMessage | C2CMessage] = [
            GroupMessage(group, s) for s in emulator["small"]
        ]
        c2c = [C2CMessage("bob", key, from_account="alice") for key in emulator["c2c_keys"]]
        mixed_items: list[GroupMessage | C2CMessage] = [*group_only[:150], *c2c]
        times: dict[str, list[float]] = {"group": [], "mixed": []}
        ratios: list[float] = []
        for _ in range(rounds):
            for name, items in (("group", group_only), ("mixed", mixed_items)):
                times[name].append(asyncio.run(timed_run(emulator["base_url"], items, concurrency)))
                time.sleep(1.1)  # let the server's sliding second empty
            ratios.append(times["mixed"][-1] / times["group"][-1])
    ratios.sort()
    median = ratios[len(ratios) // 2]
    _common.print_table(
        ["run", "targets", "median s", "runs s"],
        [
            ["300 group", 300, f"{sorted(times['group'])[rounds // 2]:.2f}",
             ", ".join(f"{x:.2f}" for x in times["group"])],
            ["150 group + 150 one-to-one", 300, f"{sorted(times['mixed'])[rounds // 2]:.2f}",
             ", ".join(f"{x:.2f}" for x in times["mixed"])],
        ],
    )  # fmt: skip
    ok = median <= 0.6
    shown = ", ".join(f"{r:.3f}" for r in ratios)
    print(f"mixed / group-only: median **{median:.3f}** (rounds: {shown}); goal <= 0.6: "
          f"{_common.yes_no(ok)}")  # fmt: skip
    print(f"load average after the run: {_common.load_line()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages seeded and pulled")
    parser.add_argument("--keys-max", type=int, default=300, help="most pairs per message")
    parser.add_argument("--concurrency", type=int, default=64, help="pulls in flight")
    parser.add_argument("--rate", default="200", help="calls/s per command (client and server)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base-url", help="pull from this running emulator (no emulator started)")
    parser.add_argument("--targets", type=int, help="targets to pull [--messages]")
    parser.add_argument("--style", choices=("pull_many", "gather", "workers"), default="pull_many")
    parser.add_argument("--mixed", action="store_true", help="the mixed-commands ratio")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --mixed")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rate = None if args.rate.lower() == "none" else int(args.rate)
    if args.messages < 1 or args.concurrency < 1 or (rate is not None and rate < 1):
        print("--messages, --concurrency and --rate must be >= 1", file=sys.stderr)
        return 2
    count = args.targets if args.targets is not None else args.messages
    if args.mixed:
        return mixed(args.rounds, args.concurrency)
    if args.base_url:
        result = asyncio.run(
            pull(
                args.base_url,
                messages=args.messages,
                count=count,
                concurrency=args.concurrency,
                rate=rate,
                style=args.style,
            )
        )
        if args.json:
            print(json.dumps(result), flush=True)
        elif rate is not None:
            report(result, rate, args.concurrency)
        else:
            print(result)
        return 0
    _common.print_machine()
    print(
        f"\nBulk pull: {count} group messages with 1-{args.keys_max} pairs, "
        f"client limit {rate}/s, emulator in another process enforcing {rate}/s; starting "
        f"and seeding the emulator...",
        flush=True,
    )
    with bulk_emulator(
        rate=rate, messages=args.messages, keys_max=args.keys_max, seed=args.seed
    ) as emulator:
        pid = emulator["proc"].pid
        server_cpu = _common.proc_cpu_seconds(pid)
        result = asyncio.run(
            pull(
                emulator["base_url"],
                messages=args.messages,
                count=count,
                concurrency=args.concurrency,
                rate=rate,
                style=args.style,
            )
        )
        server_cpu = _common.proc_cpu_seconds(pid) - server_cpu
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    if rate is None:
        print(result)
        return 0
    report(result, rate, args.concurrency)
    print(f"emulator CPU during the pull: {server_cpu:.1f} s")
    print(f"load average after the run: {_common.load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
