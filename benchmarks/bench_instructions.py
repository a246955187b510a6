"""Client instructions per call: the loops of ``bench_overhead.py`` counted by valgrind.

``valgrind --tool=callgrind`` counts the instructions a process executes, not seconds: for the
same code and inputs the count hardly moves, whatever else the shared machine is doing, where
the wall-clock ratios of ``bench_overhead.py`` move by ±0.1 from run to run. The count is the
client's CPU cost, which decides the throughput when the client is the bottleneck (it is in
``bench_overhead.py``: the client spends more CPU per call than the emulator).

One emulator runs in another process, not under valgrind, without a rate limit; two group
messages get exactly 50 and 200 pairs (as in ``bench_overhead.py``). For each size and each loop
(``sdk``, ``call``, ``users``, ``tuned``: the same functions as ``bench_overhead.py``, 32 calls
in flight), a child process runs under callgrind twice: 300 warm-up calls, then no calls; 300
warm-up calls, then ``--calls`` calls. The difference divided by ``--calls`` is the client's
instructions per call (Python's start-up, the imports and the warm-up cancel out).

Printed per size: instructions per call of each loop, and the ratios the goals of issue 13 are
stated in, as instruction ratios (tuned / sdk is the throughput ratio sdk / tuned a client-bound
loop would reach, and so on). Needs valgrind (``apt-get install valgrind``); ``--native`` runs
the same children without it (no counts: a check that the loops run, for the smoke test).

Usage: ``python benchmarks/bench_instructions.py [--calls 1000] [--sizes 50,200]
[--kinds sdk,call,users,tuned] [--native]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the tim_async tree the measured children import (``--tree``; this checkout by default)
TREE = Path(os.environ.get("BENCH_TREE") or HERE.parent)
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(TREE))

import _common  # noqa: E402
import bench_overhead  # noqa: E402

KINDS = ("sdk", "call", "users", "tuned")
WARMUP = 300
_COLLECTED = re.compile(rb"Collected : (\d+)")


def child(kind: str, base_url: str, msg_seq: int, size: int, calls: int) -> None:
    """The measured process: warm-up, then ``calls`` calls of one loop."""
    run = bench_overhead.RUNNERS[kind]

    async def main() -> None:
        await run(base_url, msg_seq, WARMUP, 32, "len")
        if calls:
            items = await run(base_url, msg_seq, calls, 32, "len")
            if items != size * calls:
                raise RuntimeError(f"{kind}: read {items} items, expected {size * calls}")

    asyncio.run(main())


def count(args: list[str], native: bool) -> int | None:
    """Instructions of one child run (None with ``native``)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    env = {**os.environ, "PYTHONPATH": str(TREE), "BENCH_TREE": str(TREE)}
    if native:
        subprocess.run(cmd, check=True, env=env)
        return None
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        capture_output=True,
        env=env,
        check=False,
    )
    found = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]!r}")
    return int(found.group(1))


def per_call(kind: str, base_url: str, msg_seq: int, size: int, calls: int, native: bool) -> float:
    base = [kind, base_url, str(msg_seq), str(size)]
    without = count([*base, "0"], native)
    with_calls = count([*base, str(calls)], native)
    if without is None or with_calls is None:
        return float("nan")
    return (with_calls - without) / calls


def _ratio(per: dict[str, float], a: str, b: str) -> str:
    if a not in per or b not in per or per[a] != per[a] or per[b] != per[b]:
        return "-"
    return f"{per[b] / per[a]:.3f}"


HEADERS = [
    "items/page",
    "instructions/call " + " / ".join(KINDS),
    "sdk/users (users ÷ sdk)",
    "sdk/tuned (tuned ÷ sdk)",
    "call/tuned (tuned ÷ call)",
    "SDK's own: session + models (k instructions/call)",
]


async def amain(args: argparse.Namespace, sizes: list[int], kinds: list[str]) -> list[list[object]]:
    emulator = _common.emulator_process(rate_limit=None, seed_groups=len(sizes), keys_per_msg_max=1)
    rows: list[list[object]] = []
    with emulator as emu:
        targets = await bench_overhead._seed(emu.base_url, sizes)
        for size in sizes:
            per: dict[str, float] = {}
            for kind in kinds:
                per[kind] = await asyncio.to_thread(
                    per_call, kind, emu.base_url, targets[size], size, args.calls, args.native
                )
                print(f"  {size} pairs, {kind}: {per[kind]:.0f}", file=sys.stderr, flush=True)
            own = "-"
            if {"sdk", "call", "tuned"} <= per.keys() and not args.native:
                session = per["call"] - per["tuned"]
                models = per["sdk"] - per["call"]
                own = f"{(session + models) / 1e3:.1f}: {session / 1e3:.1f} + {models / 1e3:.1f}"
            rows.append(
                [
                    size,
                    " / ".join(
                        f"{per[k] / 1e3:.1f}k" if per.get(k, math.nan) == per.get(k) else "-"
                        for k in KINDS
                    ),
                    _ratio(per, "sdk", "users"),
                    _ratio(per, "sdk", "tuned"),
                    _ratio(per, "call", "tuned"),
                    own,
                ]
            )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="measured calls per loop")
    parser.add_argument("--sizes", default="50,200", help="items per page, comma-separated")
    parser.add_argument("--kinds", default=",".join(KINDS), help="loops, comma-separated")
    parser.add_argument("--native", action="store_true", help="run the loops without valgrind")
    parser.add_argument(
        "--tree", type=Path, help="measure the tim_async of another checkout (before / after)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        kind, base_url, msg_seq, size, calls = argv[1:6]
        child(kind, base_url, int(msg_seq), int(size), int(calls))
        return 0
    args = build_parser().parse_args(argv)
    if args.tree is not None:
        global TREE
        TREE = args.tree.resolve()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        print("--sizes: comma-separated integers", file=sys.stderr)
        return 2
    kinds = [k for k in args.kinds.split(",") if k]
    if not sizes or not all(1 <= s <= 200 for s in sizes) or args.calls < 1:
        print("--sizes in 1..200 (one page); --calls >= 1", file=sys.stderr)
        return 2
    if not kinds or not set(kinds) <= set(KINDS):
        print(f"--kinds: some of {','.join(KINDS)}", file=sys.stderr)
        return 2
    if not args.native and shutil.which("valgrind") is None:
        print(
            "valgrind is not installed (apt-get install valgrind); or use --native", file=sys.stderr
        )
        return 2
    _common.print_machine()
    print(
        f"\nclient instructions per call (callgrind), {args.calls} calls after {WARMUP} warm-up, "
        f"32 in flight, --use len, emulator in another process (no rate limit), "
        f"tim_async from {TREE}" + (" -- native run, no counts" if args.native else ""),
        flush=True,
    )
    rows = asyncio.run(amain(args, sizes, kinds))
    _common.print_table(HEADERS, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
