"""SDK overhead: throughput of the SDK against a raw aiohttp loop sending the same requests.

The emulator runs in another process (``python -m tim_async.testing --rate-limit none``); two
group messages are given exactly 50 and 200 extension pairs (one page each at page size 200).
For each size, ``--rounds`` rounds alternate, back to back, one run of

* **sdk**: ``TimClient(rate_limit=None)``, ``await tim.msg_ext.group_get_key_values(gid, seq)``
  (URL and UserSig, the envelope check, decoding into ``ExtensionItem`` models, the paging walk,
  the merged ``ExtensionList``);
* **raw**: one ``aiohttp.ClientSession``, ``POST`` to the same URL shape (sdkappid, identifier, a
  valid UserSig made once, a fresh ``random``, ``contenttype=json``) with the same JSON body,
  ``orjson.loads`` of the answer and a check of ``ErrorCode`` (no model objects);

* **call**: the same SDK client, untyped: ``await tim.call(api, body)`` (URL, UserSig, envelope;
  no models), which splits the SDK's cost between the session and the typed layer;

each with ``--concurrency`` (16) calls in flight and ``--calls`` (2,000) calls per run. Printed:
calls/s of each, the ratio sdk/raw of the summed runs (goal >= 0.90), and the CPU time this
process spent per call (``time.process_time``) for each, whose difference is the SDK's own cost
per call; the emulator's CPU per call is shown too (the machine has few cores: when the client
and the server compete for them, CPU per call matters more than wall time).

``--profile`` also runs the SDK loop once under ``cProfile`` and prints the share of CPU spent in
``tim_async``'s own functions and the costliest of them.

Usage: ``python benchmarks/bench_overhead.py [--rounds 5] [--calls 2000] [--concurrency 16]
[--sizes 50,200] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import aiohttp
import orjson
from yarl import URL

from tim_async.client import TimClient
from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY
from tim_async.usersig import generate_usersig

API = "openim_msg_ext_http_svc/group_get_key_values"
GROUP_ID = _common.SEED_GROUP_ID


def _client(base_url: str) -> TimClient:
    return TimClient(
        TEST_SDKAPPID,
        TEST_ADMIN,
        secret_key=TEST_SECRET_KEY,
        base_url=base_url,
        rate_limit=None,
    )


async def _seed(base_url: str, sizes: Sequence[int]) -> dict[int, int]:
    """Give message i+1 exactly sizes[i] pairs (the emulator seeded each with one, ``k0``)."""
    targets: dict[int, int] = {}
    async with _client(base_url) as tim:
        for index, size in enumerate(sizes):
            msg_seq = index + 1
            keys = [f"k{i}" for i in range(size)]
            for start in range(0, size, 20):
                chunk = {k: f"value-of-{k}-" + "x" * 24 for k in keys[start : start + 20]}
                await tim.msg_ext.group_set_key_values(GROUP_ID, msg_seq, chunk)
            got = await tim.msg_ext.group_get_key_values(GROUP_ID, msg_seq)
            if len(got) != size:
                raise RuntimeError(f"message {msg_seq}: seeded {len(got)} pairs, wanted {size}")
            targets[size] = msg_seq
    return targets


async def _workers(concurrency: int, calls: int, one: Callable[[], Awaitable[int]]) -> int:
    """Run ``calls`` calls of ``one`` with ``concurrency`` in flight; return the items read."""
    remaining = calls
    items = 0

    async def worker() -> None:
        nonlocal remaining, items
        while remaining > 0:
            remaining -= 1
            got = await one()  # not `items += await one()`: that reads `items` first
            items += got

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return items


async def run_sdk(base_url: str, msg_seq: int, calls: int, concurrency: int) -> int:
    async with _client(base_url) as tim:
        ext = tim.msg_ext

        async def one() -> int:
            return len(await ext.group_get_key_values(GROUP_ID, msg_seq))

        return await _workers(concurrency, calls, one)


async def run_call(base_url: str, msg_seq: int, calls: int, concurrency: int) -> int:
    async with _client(base_url) as tim:

        async def one() -> int:
            answer = await tim.call(API, {"GroupId": GROUP_ID, "MsgSeq": msg_seq})
            return len(answer["ExtensionList"])

        return await _workers(concurrency, calls, one)


async def run_raw(base_url: str, msg_seq: int, calls: int, concurrency: int) -> int:
    usersig = generate_usersig(TEST_SDKAPPID, TEST_ADMIN, TEST_SECRET_KEY, 86400)
    prefix = (
        f"{base_url}/v4/{API}?sdkappid={TEST_SDKAPPID}&identifier={quote(TEST_ADMIN, safe='')}"
        f"&usersig={quote(usersig, safe='')}&contenttype=json&random="
    )
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

        async def one() -> int:
            url = URL(f"{prefix}{secrets.randbits(32)}", encoded=True)
            data = orjson.dumps({"GroupId": GROUP_ID, "MsgSeq": msg_seq})
            async with http.post(url, data=data, headers=headers) as resp:
                raw = await resp.read()
            answer: dict[str, Any] = orjson.loads(raw)
            if answer["ErrorCode"] != 0 or answer["CompleteFlag"] != 1:
                raise RuntimeError(f"unexpected answer: {answer.get('ErrorInfo')}")
            return len(answer["ExtensionList"])

        return await _workers(concurrency, calls, one)


RUNNERS = {"sdk": run_sdk, "call": run_call, "raw": run_raw}
KINDS = ("sdk", "call", "raw")


class Totals:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.server_cpu = 0.0
        self.calls = 0
        self.rates: list[float] = []


async def measure(
    emulator: _common.EmulatorProcess,
    kind: str,
    msg_seq: int,
    size: int,
    calls: int,
    concurrency: int,
    totals: Totals,
) -> None:
    server_cpu = emulator.cpu_seconds()
    cpu = time.process_time()
    start = time.perf_counter()
    items = await RUNNERS[kind](emulator.base_url, msg_seq, calls, concurrency)
    wall = time.perf_counter() - start
    totals.cpu += time.process_time() - cpu
    totals.server_cpu += emulator.cpu_seconds() - server_cpu
    totals.wall += wall
    totals.calls += calls
    totals.rates.append(calls / wall)
    if items != size * calls:
        raise RuntimeError(f"{kind}: read {items} items, expected {size * calls}")


def profile_sdk(base_url: str, msg_seq: int, calls: int, concurrency: int) -> str:
    """One SDK run under cProfile: tim_async's share of the CPU and its costliest functions."""
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run_sdk(base_url, msg_seq, calls, concurrency))
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw_stats: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw_stats.values())
    own: list[tuple[float, str]] = []
    for (filename, line, name), entry in raw_stats.items():
        if "/tim_async/" in filename and "/tim_async/testing/" not in filename:
            short = filename.split("/tim_async/", 1)[1]
            own.append((entry[2], f"{short}:{line} {name}"))
    own_total = sum(t for t, _ in own)
    own.sort(reverse=True)
    out = io.StringIO()
    print(
        f"cProfile, {calls} SDK calls: tim_async's own functions (tottime) "
        f"{1e6 * own_total / calls:.0f} us/call = {100 * own_total / total:.1f} % of "
        f"{1e6 * total / calls:.0f} us/call profiled (profiling inflates both)",
        file=out,
    )
    for seconds, where in own[:12]:
        print(f"  {1e6 * seconds / calls:7.1f} us/call  {where}", file=out)
    # anything generated (cattrs hooks live in <string> / "cattrs generated" files)
    generated = sum(
        entry[2] for (filename, _, _), entry in raw_stats.items() if "cattrs" in filename
    )
    print(f"  {1e6 * generated / calls:7.1f} us/call  cattrs generated hooks", file=out)
    return out.getvalue()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="calls per run")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--sizes", default="50,200", help="items per page, comma-separated")
    parser.add_argument("--profile", action="store_true", help="also profile one SDK run")
    return parser


HEADERS = [
    "items/page",
    "sdk calls/s",
    "call calls/s",
    "raw calls/s",
    "sdk/raw",
    "call/raw",
    "client CPU us/call sdk / call / raw",
    "SDK's own CPU us/call",
    "server CPU us/call sdk / call / raw",
    "goal sdk/raw >= 0.90",
]


async def amain(args: argparse.Namespace, sizes: list[int]) -> tuple[list[list[object]], bool]:
    rows: list[list[object]] = []
    ok = True
    emulator = _common.emulator_process(rate_limit=None, seed_groups=len(sizes), keys_per_msg_max=1)
    with emulator as emu:
        targets = await _seed(emu.base_url, sizes)
        for size in sizes:
            msg_seq = targets[size]
            warmup = max(1, min(args.calls, 200))
            for kind in KINDS:  # connections, caches, cattrs hooks
                await measure(emu, kind, msg_seq, size, warmup, args.concurrency, Totals())
            totals = {kind: Totals() for kind in KINDS}
            for _ in range(args.rounds):
                for kind in KINDS:
                    await measure(
                        emu, kind, msg_seq, size, args.calls, args.concurrency, totals[kind]
                    )
            sdk, call, raw = totals["sdk"], totals["call"], totals["raw"]
            rate = {kind: t.calls / t.wall for kind, t in totals.items()}
            cpu = {kind: 1e6 * t.cpu / t.calls for kind, t in totals.items()}
            ratio = rate["sdk"] / rate["raw"]
            per_round = [s / r for s, r in zip(sdk.rates, raw.rates, strict=True)]
            ok = ok and ratio >= 0.90
            rows.append(
                [
                    size,
                    f"{rate['sdk']:.0f}",
                    f"{rate['call']:.0f}",
                    f"{rate['raw']:.0f}",
                    f"**{ratio:.3f}** (rounds {min(per_round):.2f}-{max(per_round):.2f})",
                    f"{rate['call'] / rate['raw']:.3f}",
                    f"{cpu['sdk']:.0f} / {cpu['call']:.0f} / {cpu['raw']:.0f}",
                    f"{cpu['sdk'] - cpu['raw']:.0f} ({cpu['call'] - cpu['raw']:.0f} session + "
                    f"{cpu['sdk'] - cpu['call']:.0f} models)",
                    " / ".join(f"{1e6 * t.server_cpu / t.calls:.0f}" for t in (sdk, call, raw)),
                    _common.yes_no(ratio >= 0.90),
                ]
            )
            print(f"  done: {size} items/page", file=sys.stderr, flush=True)
        if args.profile:
            for size in sizes:
                text = await asyncio.to_thread(
                    profile_sdk, emu.base_url, targets[size], args.calls, args.concurrency
                )
                print(f"\n{size} items/page: {text}", end="")
    return rows, ok


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        print("--sizes: comma-separated integers", file=sys.stderr)
        return 2
    if not sizes or not all(1 <= s <= 200 for s in sizes) or min(args.rounds, args.calls) < 1:
        print("--sizes in 1..200 (one page); --rounds and --calls >= 1", file=sys.stderr)
        return 2
    _common.print_machine()
    print(
        f"\nSDK overhead: {args.rounds} rounds of sdk then raw, {args.calls} calls per run, "
        f"{args.concurrency} in flight, emulator in another process (no rate limit)",
        flush=True,
    )
    rows, ok = asyncio.run(amain(args, sizes))
    _common.print_table(HEADERS, rows)
    print(f"\ngoal (sdk/raw >= 0.90): {'met' if ok else 'NOT met'}")
    print(f"load average after the run: {_common.load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
