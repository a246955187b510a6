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
from tim_async.testing import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY, FakeTimServer

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
        rate_limit=None if limiter is None else limiter.inner.rate,
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
) -> tuple[list[object], bool]:
    peak = _common.max_in_window(times)
    sustained = _common.sustained_rate(times)
    share = sustained / rate
    refused = _common.over_limit(times, rate)
    ok = peak <= rate and share >= 0.99 and errors == 0
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


async def limiters(recorder: Recorder, calls: int, rate: int) -> tuple[list[list[object]], bool]:
    """Figure 1: one command, the SDK's limiter against aiolimiter used naively."""
    variants: list[tuple[str, Callable[[], AbstractAsyncContextManager[object] | None]]] = [
        (f"SDK SlidingWindowLimiter({rate})", lambda: None),
        (f"AsyncLimiter({rate}, 1)", lambda: AsyncLimiter(rate, 1)),
        (f"AsyncLimiter(1, 1/{rate})", lambda: AsyncLimiter(1, 1 / rate)),
    ]
    rows: list[list[object]] = []
    sdk_ok = True
    assert recorder.target is not None
    await recorder.arrivals()  # start from an empty log
    for index, (name, make) in enumerate(variants):
        outer = make()
        limiter = _common.TimedLimiter(rate) if outer is None else None
        wall, errors = await _one_command(recorder.base_url, recorder.target, outer, calls, limiter)
        times = (await recorder.arrivals())[API_GROUP_GET]
        round_trip = None if limiter is None else limiter.mean_ms()
        row, ok = _row(name, API_GROUP_GET, times, rate, wall, errors, round_trip)
        rows.append(row)
        if index == 0:
            sdk_ok = ok
        print(f"  done: {name}", file=sys.stderr, flush=True)
    # The goal is the SDK's; the aiolimiter rows show why it is built the way it is.
    for row in rows[1:]:
        row[-1] = "(reference)"
    return rows, sdk_ok


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("all", "limiters", "commands"), default="all")
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
    if args.mode in ("all", "limiters"):
        print(
            f"\nRate precision: {args.calls} x group_get_key_values at {args.rate}/s, "
            "arrival times at the server",
            flush=True,
        )
        rows, good = await limiters(recorder, args.calls, args.rate)
        _common.print_table(HEADERS, rows)
        ok = ok and good
    if args.mode in ("all", "commands"):
        print(
            f"\nPer-command budgets: 3 commands at once through one client, {args.calls} each",
            flush=True,
        )
        rows, good = await commands(recorder, args.calls, args.rate)
        _common.print_table(HEADERS, rows)
        ok = ok and good
    print(f"\ngoals (max <= {args.rate}, sustained >= 99 %): {'met' if ok else 'NOT met'}")
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
