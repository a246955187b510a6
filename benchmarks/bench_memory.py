"""Memory: peak RSS of a bulk pull at 10,000 and 100,000 targets.

Starts one emulator in another process (``benchmarks/_bulk_emulator.py``, no rate limit, one
group with ``--messages`` messages of 1-300 pairs, as in ``bench_bulk.py``), then runs each puller
as a child process and reads its peak resident set size from the kernel (``ru_maxrss`` of
``os.wait4``):

* **pull_many**: ``tim.msg_ext.pull_many`` over a generator of targets (``bench_bulk.py
  --style pull_many``), client limit off;
* **gather**: the bulk pull of ``bench_bulk.py`` (``asyncio.gather`` over every target under a
  semaphore), client limit off;
* **workers**: the same pull through a fixed pool of ``--concurrency`` workers reading the
  targets as they go (no task per target);
* **cli**: ``python -m tim_async ext pull-bulk TARGETS --rate-limit none`` (JSON lines to
  ``/dev/null``; it runs on ``pull_many`` too).

Targets cycle over the seeded messages (target ``i`` is message ``i % messages + 1``), so the
emulator stays small while the pullers see ``--targets`` targets. Goal: the peak at 100,000
targets within 1.2x of the peak at 10,000.

Usage: ``python benchmarks/bench_memory.py [--targets 10000,100000] [--messages 5000]
[--concurrency 64] [--pullers pull_many,cli,gather,workers]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _bulk_emulator import bulk_emulator

from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY

HERE = Path(__file__).resolve().parent
PULLERS = ("pull_many", "cli", "gather", "workers")
DEFAULT_PULLERS = "pull_many,cli"


def run_child(cmd: list[str], *, env: dict[str, str], stdout: Any) -> tuple[int, int, float, str]:
    """Run ``cmd``; return (exit code, peak RSS in KiB, wall seconds, stderr tail)."""
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=errors, env=env, cwd=_common.REPO
        )
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            _common.stop_process(proc)
        wall = time.perf_counter() - start
        errors.seek(0)
        tail = errors.read()[-1500:]
    return proc.returncode, usage.ru_maxrss, wall, tail


def measure(
    puller: str, base_url: str, count: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    env = dict(os.environ)
    if puller == "cli":
        targets = workdir / f"targets-{count}.jsonl"
        if not targets.exists():
            with targets.open("w") as out:
                for i in range(count):
                    group = _common.SEED_GROUP_ID
                    out.write(f'{{"group": "{group}", "msg_seq": {i % args.messages + 1}}}\n')
        env["TIM_SECRET_KEY"] = TEST_SECRET_KEY
        cmd = [
            sys.executable,
            "-m",
            "tim_async",
            "ext",
            "pull-bulk",
            str(targets),
            "--rate-limit",
            "none",
            "--base-url",
            base_url,
            "--sdkappid",
            str(TEST_SDKAPPID),
            "--identifier",
            TEST_ADMIN,
            "--concurrency",
            str(args.concurrency),
        ]
        with open(os.devnull, "wb") as devnull:
            code, rss, wall, tail = run_child(cmd, env=env, stdout=devnull)
        summary = tail.strip().splitlines()[-1] if tail.strip() else ""
        return {"exit": code, "rss_kib": rss, "wall": wall, "detail": summary, "ok": code == 0}
    cmd = [
        sys.executable,
        str(HERE / "bench_bulk.py"),
        "--base-url",
        base_url,
        "--messages",
        str(args.messages),
        "--targets",
        str(count),
        "--rate",
        "none",
        "--concurrency",
        str(args.concurrency),
        "--style",
        puller,
        "--json",
    ]
    with tempfile.TemporaryFile("w+") as out:
        code, rss, wall, tail = run_child(cmd, env=env, stdout=out)
        out.seek(0)
        lines = out.read().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if code == 0 and lines else {}
    failed = sum(result.get("failures", {}).values()) if result else None
    detail = (
        f"{result['pages']:,} calls, {failed} failed" if result else f"exit {code}: {tail[-300:]}"
    )
    return {"exit": code, "rss_kib": rss, "wall": wall, "detail": detail, "ok": failed == 0}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="10000,100000", help="comma-separated counts")
    parser.add_argument("--messages", type=int, default=5000, help="distinct messages seeded")
    parser.add_argument("--keys-max", type=int, default=300, help="most pairs per message")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pullers", default=DEFAULT_PULLERS, help=",".join(PULLERS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        counts = [int(c) for c in args.targets.split(",") if c]
    except ValueError:
        print("--targets: comma-separated integers", file=sys.stderr)
        return 2
    pullers = [p for p in args.pullers.split(",") if p]
    if not counts or min(counts) < 1 or args.messages < 1 or not set(pullers) <= set(PULLERS):
        print(f"--targets and --messages >= 1; --pullers among {PULLERS}", file=sys.stderr)
        return 2
    _common.print_machine()
    print(
        f"\nPeak RSS of bulk pulls (limit off, emulator in another process, "
        f"{args.messages} messages of 1-{args.keys_max} pairs, targets cycle over them, "
        f"concurrency {args.concurrency})",
        flush=True,
    )
    rows: list[list[object]] = []
    all_ok = True
    with (
        tempfile.TemporaryDirectory() as tmp,
        bulk_emulator(rate=None, messages=args.messages, keys_max=args.keys_max) as emulator,
    ):
        for puller in pullers:
            peaks: dict[int, int] = {}
            for count in counts:
                result = measure(puller, emulator["base_url"], count, args, Path(tmp))
                peaks[count] = result["rss_kib"]
                print(
                    f"  {puller} {count:,}: peak RSS {result['rss_kib'] / 1024:.1f} MiB, "
                    f"{result['wall']:.1f} s, {result['detail']}",
                    file=sys.stderr,
                    flush=True,
                )
                all_ok = all_ok and result["ok"]
                rows.append(
                    [
                        puller,
                        f"{count:,}",
                        f"{result['rss_kib'] / 1024:.1f}",
                        f"{peaks[count] / peaks[counts[0]]:.2f}",
                        f"{result['wall']:.1f}",
                        "ok" if result["ok"] else f"FAILED ({result['detail']})",
                    ]
                )
            if len(counts) > 1:
                growth = peaks[counts[-1]] / peaks[counts[0]]
                rows[-1][-1] = f"{rows[-1][-1]}; goal <= 1.2x: {_common.yes_no(growth <= 1.2)}"
    _common.print_table(
        ["puller", "targets", "peak RSS MiB", f"x of {counts[0]:,}", "wall s", "result"], rows
    )
    if not all_ok:
        print("some pulls failed (see the result column)")
    print(f"load average after the run: {_common.load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
