"""SDK overhead: throughput of the SDK against raw aiohttp loops sending the same requests.

The emulator runs in another process (``python -m tim_async.testing --rate-limit none``); two
group messages are given exactly 50 and 200 extension pairs (one page each at page size 200).
For each size, ``--rounds`` rounds run back to back, each round one run of every loop below (the
order rotates from round to round, so no loop always runs first or last):

* **sdk**: ``TimClient(rate_limit=None)``, ``await tim.msg_ext.group_get_key_values(gid, seq)``
  (URL and UserSig, the envelope check, strict decoding of every pair, the paging walk, the
  merged ``ExtensionList``);
* **call**: the same SDK client, untyped: ``await tim.call(api, body)`` (URL, UserSig, envelope;
  no models), which splits the SDK's cost between the session and the typed layer;
* **users**: the raw loop as users write it: one ``aiohttp.ClientSession()``,
  ``http.post(url, params={...}, json=body)`` with a UserSig made once and a fresh
  ``random.randint``, ``await resp.json()``, a check of ``ErrorCode``;
* **tuned**: a tuned raw loop: the URL prebuilt as a string (only ``random`` added per call,
  ``yarl.URL(..., encoded=True)``), the body and the answer through ``orjson``, a check of
  ``ErrorCode`` (no model objects);

each with ``--concurrency`` (32) calls in flight and ``--calls`` (3,000) calls per run. Every
loop finishes with ``len()`` of what it got (``--use len``, what the goals are measured with);
``--use items`` reads every pair's key, value and seq instead (SDK: iterating the
``ExtensionItem``s; raw: the dicts) and ``--use dict`` builds ``{key: value}`` (SDK:
``as_dict()``).

Printed per size: calls/s of each loop; the ratios sdk/users, sdk/tuned and call/tuned as the
median of the per-round ratios (with their range); the CPU time this process spent per call
(``time.process_time``) for each loop, whose differences are the SDK's own cost, split into the
session's (call - tuned) and the models' (sdk - call, also per pair); the emulator's CPU per call
(the machine has few cores: when the client and the server compete for them, CPU per call matters
more than wall time).

``--profile`` also runs the SDK loop once per size under ``cProfile`` and prints the share of CPU
spent in ``tim_async``'s own functions and the costliest of them. ``--local`` (no server)
measures the typed layer alone with a fake caller handing out freshly parsed answers: its CPU per
call for each ``--use`` (fastest of 5 runs, steadier than the live figures on a loaded machine),
and the memory held per pair (``tracemalloc``) by ``--memory-pulls`` kept ``ExtensionList``s,
before and after their items are first read.

Usage: ``python benchmarks/bench_overhead.py [--rounds 5] [--calls 3000] [--concurrency 32]
[--sizes 50,200] [--use len|items|dict] [--profile] [--local]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import pstats
import random
import secrets
import statistics
import sys
import time
import tracemalloc
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
from tim_async.endpoints.msg_ext import MsgExt
from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY
from tim_async.usersig import generate_usersig

API = "openim_msg_ext_http_svc/group_get_key_values"
GROUP_ID = _common.SEED_GROUP_ID
GOAL_USERS = 0.90
GOAL_TUNED = {50: 0.85, 200: 0.80}
GOAL_CALL = 0.95


def _client(base_url: str) -> TimClient:
    return TimClient(
        TEST_SDKAPPID,
        TEST_ADMIN,
        secret_key=TEST_SECRET_KEY,
        base_url=base_url,
        rate_limit=None,
    )


def _value(key: str) -> str:
    return f"value-of-{key}-" + "x" * 24


async def _seed(base_url: str, sizes: Sequence[int]) -> dict[int, int]:
    """Give message i+1 exactly sizes[i] pairs (the emulator seeded each with one, ``k0``)."""
    targets: dict[int, int] = {}
    async with _client(base_url) as tim:
        for index, size in enumerate(sizes):
            msg_seq = index + 1
            keys = [f"k{i}" for i in range(size)]
            for start in range(0, size, 20):
                chunk = {k: _value(k) for k in keys[start : start + 20]}
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


# What each loop does with its result (``--use``): the SDK's ExtensionList, or the raw list of
# {"Key", "Value", "Seq"} dicts.
def _sdk_len(ext: Any) -> int:
    return len(ext)


def _sdk_items(ext: Any) -> int:
    n = 0
    for item in ext:
        if item.key and item.value and item.seq:
            n += 1
    return n


def _sdk_dict(ext: Any) -> int:
    return len(ext.as_dict())


def _raw_len(pairs: list[dict[str, Any]]) -> int:
    return len(pairs)


def _raw_items(pairs: list[dict[str, Any]]) -> int:
    n = 0
    for pair in pairs:
        if pair["Key"] and pair["Value"] and pair["Seq"]:
            n += 1
    return n


def _raw_dict(pairs: list[dict[str, Any]]) -> int:
    return len({pair["Key"]: pair["Value"] for pair in pairs})


USES: dict[str, tuple[Callable[[Any], int], Callable[[list[dict[str, Any]]], int]]] = {
    "len": (_sdk_len, _raw_len),
    "items": (_sdk_items, _raw_items),
    "dict": (_sdk_dict, _raw_dict),
}


async def run_sdk(base_url: str, msg_seq: int, calls: int, concurrency: int, use: str) -> int:
    consume = USES[use][0]
    async with _client(base_url) as tim:
        ext = tim.msg_ext

        async def one() -> int:
            return consume(await ext.group_get_key_values(GROUP_ID, msg_seq))

        return await _workers(concurrency, calls, one)


async def run_call(base_url: str, msg_seq: int, calls: int, concurrency: int, use: str) -> int:
    consume = USES[use][1]
    async with _client(base_url) as tim:

        async def one() -> int:
            answer = await tim.call(API, {"GroupId": GROUP_ID, "MsgSeq": msg_seq})
            return consume(answer["ExtensionList"])

        return await _workers(concurrency, calls, one)


async def run_users(base_url: str, msg_seq: int, calls: int, concurrency: int, use: str) -> int:
    """The raw loop as an aiohttp user writes it: params dict, json= body, resp.json()."""
    consume = USES[use][1]
    usersig = generate_usersig(TEST_SDKAPPID, TEST_ADMIN, TEST_SECRET_KEY, 86400)
    url = f"{base_url}/v4/{API}"
    async with aiohttp.ClientSession() as http:

        async def one() -> int:
            params = {
                "sdkappid": TEST_SDKAPPID,
                "identifier": TEST_ADMIN,
                "usersig": usersig,
                "random": random.randint(0, 2**32 - 1),
                "contenttype": "json",
            }
            body = {"GroupId": GROUP_ID, "MsgSeq": msg_seq}
            async with http.post(url, params=params, json=body) as resp:
                answer = await resp.json()
            if answer["ErrorCode"] != 0 or answer["CompleteFlag"] != 1:
                raise RuntimeError(f"unexpected answer: {answer.get('ErrorInfo')}")
            return consume(answer["ExtensionList"])

        return await _workers(concurrency, calls, one)


async def run_tuned(base_url: str, msg_seq: int, calls: int, concurrency: int, use: str) -> int:
    consume = USES[use][1]
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
            return consume(answer["ExtensionList"])

        return await _workers(concurrency, calls, one)


RUNNERS = {"sdk": run_sdk, "call": run_call, "users": run_users, "tuned": run_tuned}
KINDS = ("sdk", "call", "users", "tuned")


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
    args: argparse.Namespace,
    calls: int,
    totals: Totals,
) -> None:
    gc.collect()
    server_cpu = emulator.cpu_seconds()
    cpu = time.process_time()
    start = time.perf_counter()
    items = await RUNNERS[kind](emulator.base_url, msg_seq, calls, args.concurrency, args.use)
    wall = time.perf_counter() - start
    totals.cpu += time.process_time() - cpu
    totals.server_cpu += emulator.cpu_seconds() - server_cpu
    totals.wall += wall
    totals.calls += calls
    totals.rates.append(calls / wall)
    if items != size * calls:
        raise RuntimeError(f"{kind}: read {items} items, expected {size * calls}")


def profile_sdk(base_url: str, msg_seq: int, calls: int, concurrency: int, use: str) -> str:
    """One SDK run under cProfile: tim_async's share of the CPU and its costliest functions."""
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run_sdk(base_url, msg_seq, calls, concurrency, use))
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


# --------------------------------------------------------------------------- memory


class _PageCaller:
    """A caller answering every pull with a freshly parsed copy of one page (no network)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def operation(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def call(
        self, api: str, body: dict[str, Any], *, idempotent: bool = True, decode: Any = None
    ) -> Any:
        # As the session does: the decode hook first, the JSON when it declines.
        if decode is not None and (decoded := decode(self.raw)) is not None:
            return decoded
        answer: dict[str, Any] = orjson.loads(self.raw)
        return answer


def _answer_bytes(size: int) -> bytes:
    pairs = [{"Key": f"k{i}", "Value": _value(f"k{i}"), "Seq": 1000 + i // 20} for i in range(size)]
    return orjson.dumps(
        {
            "ActionStatus": "OK",
            "ErrorCode": 0,
            "ErrorInfo": "",
            "CompleteFlag": 1,
            "LatestSeq": pairs[-1]["Seq"] if pairs else 0,
            "ClearSeq": 0,
            "ExtensionList": pairs,
        }
    )


def memory_per_pair(size: int, pulls: int) -> tuple[float, float, float]:
    """Bytes held per pair by ``pulls`` merged one-page ExtensionLists of ``size`` pairs: as
    returned, after reading their items once, and the key and value strings alone (which every
    representation holds)."""
    ext = MsgExt(_PageCaller(_answer_bytes(size)))  # type: ignore[arg-type]

    async def pull_all() -> list[Any]:
        return [await ext.group_get_key_values(GROUP_ID, 1) for _ in range(pulls)]

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        results = asyncio.run(pull_all())
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        strings = sum(
            sys.getsizeof(item.key) + sys.getsizeof(item.value)
            for result in results
            for item in result.items
        )
        gc.collect()
        touched = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    pairs = size * pulls
    del results
    return held / pairs, touched / pairs, strings / pairs


def models_cpu_per_call(size: int, use: str, calls: int = 2000, repeats: int = 5) -> float:
    """CPU microseconds per ``group_get_key_values`` spent in the typed layer alone (input
    checks, request body, decoding, walk, merged list, and what ``use`` reads), with a fake
    caller: the fastest of ``repeats`` runs, less the ``orjson.loads`` every loop pays."""
    raw = _answer_bytes(size)
    ext = MsgExt(_PageCaller(raw))  # type: ignore[arg-type]
    consume = USES[use][0]

    async def run() -> float:
        for _ in range(200):
            consume(await ext.group_get_key_values(GROUP_ID, 1))
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(calls):
                consume(await ext.group_get_key_values(GROUP_ID, 1))
            best = min(best, time.process_time() - start)
        return best

    best = asyncio.run(run())
    loads = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            orjson.loads(raw)
        loads = min(loads, time.process_time() - start)
    return 1e6 * (best - loads) / calls


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000, help="calls per run")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--sizes", default="50,200", help="items per page, comma-separated")
    parser.add_argument("--use", choices=sorted(USES), default="len", help="what is read")
    parser.add_argument("--profile", action="store_true", help="also profile one SDK run")
    parser.add_argument(
        "--local",
        action="store_true",
        help="no server: the typed layer's CPU per call and memory per pulled pair",
    )
    parser.add_argument("--memory-pulls", type=int, default=2000)
    return parser


HEADERS = [
    "items/page",
    "calls/s sdk / call / users / tuned",
    "sdk/users",
    "sdk/tuned",
    "call/tuned",
    "client CPU us/call sdk / call / users / tuned",
    "SDK's own CPU us/call: session + models (models per pair)",
    "server CPU us/call sdk / tuned",
    "goals",
]


def _ratio(totals: dict[str, Totals], a: str, b: str) -> tuple[float, str]:
    per_round = [x / y for x, y in zip(totals[a].rates, totals[b].rates, strict=True)]
    median = statistics.median(per_round)
    return median, f"**{median:.3f}** ({min(per_round):.2f}-{max(per_round):.2f})"


async def amain(args: argparse.Namespace, sizes: list[int]) -> tuple[list[list[object]], bool]:
    rows: list[list[object]] = []
    ok = True
    emulator = _common.emulator_process(rate_limit=None, seed_groups=len(sizes), keys_per_msg_max=1)
    with emulator as emu:
        targets = await _seed(emu.base_url, sizes)
        for size in sizes:
            msg_seq = targets[size]
            warmup = max(1, min(args.calls, 300))
            for kind in KINDS:  # connections, caches, cattrs hooks
                await measure(emu, kind, msg_seq, size, args, warmup, Totals())
            totals = {kind: Totals() for kind in KINDS}
            for index in range(args.rounds):
                shift = index % len(KINDS)
                for kind in KINDS[shift:] + KINDS[:shift]:
                    await measure(emu, kind, msg_seq, size, args, args.calls, totals[kind])
            rate = {kind: t.calls / t.wall for kind, t in totals.items()}
            cpu = {kind: 1e6 * t.cpu / t.calls for kind, t in totals.items()}
            users, users_text = _ratio(totals, "sdk", "users")
            tuned, tuned_text = _ratio(totals, "sdk", "tuned")
            call, call_text = _ratio(totals, "call", "tuned")
            goal_tuned = GOAL_TUNED.get(size)
            met = [
                f"users {_common.yes_no(users >= GOAL_USERS)}",
                f"call {_common.yes_no(call >= GOAL_CALL)}",
            ]
            ok = ok and users >= GOAL_USERS and call >= GOAL_CALL
            if goal_tuned is not None:
                met.insert(1, f"tuned {_common.yes_no(tuned >= goal_tuned)}")
                ok = ok and tuned >= goal_tuned
            session_cpu = cpu["call"] - cpu["tuned"]
            models_cpu = cpu["sdk"] - cpu["call"]
            rows.append(
                [
                    size,
                    " / ".join(f"{rate[kind]:.0f}" for kind in KINDS),
                    users_text,
                    tuned_text,
                    call_text,
                    " / ".join(f"{cpu[kind]:.0f}" for kind in KINDS),
                    f"{session_cpu + models_cpu:.0f}: {session_cpu:.0f} + {models_cpu:.0f} "
                    f"({models_cpu / size:.2f})",
                    " / ".join(
                        f"{1e6 * totals[kind].server_cpu / totals[kind].calls:.0f}"
                        for kind in ("sdk", "tuned")
                    ),
                    ", ".join(met),
                ]
            )
            print(f"  done: {size} items/page", file=sys.stderr, flush=True)
        if args.profile:
            for size in sizes:
                text = await asyncio.to_thread(
                    profile_sdk, emu.base_url, targets[size], args.calls, args.concurrency, args.use
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
    if args.local:
        print("\ntyped layer alone (fake caller, fastest of 5 runs of 2,000 calls), CPU us/call")
        for size in sizes:
            cpu = {use: models_cpu_per_call(size, use) for use in sorted(USES)}
            print(
                f"  {size} pairs/page: "
                + ", ".join(f"--use {u}: {c:.1f} ({c / size:.3f}/pair)" for u, c in cpu.items())
            )
        print(f"\nmemory held per pulled pair, {args.memory_pulls} one-page pulls kept")
        for size in sizes:
            held, touched, strings = memory_per_pair(size, args.memory_pulls)
            print(
                f"  {size} pairs/page: {held:.0f} B/pair as returned, {touched:.0f} B/pair "
                f"after reading .items; of which key and value strings {strings:.0f} B/pair"
            )
        return 0
    print(
        f"\nSDK overhead: {args.rounds} rounds of sdk, call, users and tuned (order rotating), "
        f"{args.calls} calls per run, {args.concurrency} in flight, --use {args.use}, "
        f"emulator in another process (no rate limit)",
        flush=True,
    )
    rows, ok = asyncio.run(amain(args, sizes))
    _common.print_table(HEADERS, rows)
    print(
        f"\ngoal (sdk/raw >= 0.90): sdk/users >= {GOAL_USERS}, sdk/tuned >= "
        f"{' / '.join(f'{v} at {k}' for k, v in GOAL_TUNED.items())}, call/tuned >= "
        f"{GOAL_CALL}: {'met' if ok else 'NOT met'}"
    )
    print(f"load average after the run: {_common.load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
