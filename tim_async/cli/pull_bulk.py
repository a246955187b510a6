"""``ext pull-bulk``: many targets concurrently, one JSON line per target."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from tim_async.cli.options import (
    DEFAULT_CONCURRENCY,
    EXIT_FAILED,
    EXIT_OK,
    MAX_CONCURRENCY,
    MAX_CONNECTIONS,
    client_options,
    int_range,
    new_client,
)
from tim_async.cli.output import err, error_record, extension_record, isatty
from tim_async.cli.progress import BulkCounters, Progress
from tim_async.cli.registry import Commands
from tim_async.cli.targets import GroupTarget, Target, TargetSource
from tim_async.models import ExtensionList, ExtensionPage

if TYPE_CHECKING:
    from tim_async.client import TimClient

# =========================================================================== bulk engine

#: called for each finished target with its list (and the pages walked) or its error
ResultSink = Callable[[Target, ExtensionList | None, int, BaseException | None], None]


async def pull_one(
    tim: TimClient, target: Target, on_page: Callable[[], None] | None = None
) -> tuple[ExtensionList, int]:
    """Pull every page of one target's extensions; return the merged list and the page count.
    ``on_page`` is called as each page arrives (live progress)."""
    if isinstance(target, GroupTarget):
        pages_iter = tim.msg_ext.iter_group_key_values(target.group, target.msg_seq)
    else:
        pages_iter = tim.msg_ext.iter_key_values(
            target.to, target.msg_key, from_account=target.from_account
        )
    pages: list[ExtensionPage] = []
    async for page in pages_iter:
        pages.append(page)
        if on_page is not None:
            on_page()
    return ExtensionList.from_pages(pages), len(pages)


async def pull_bulk(
    tim: TimClient,
    next_target: Callable[[], Awaitable[Target | None]],
    sink: ResultSink,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    counters: BulkCounters | None = None,
) -> BulkCounters:
    """Pull targets concurrently through ``concurrency`` workers.

    Workers take targets one at a time from ``next_target`` (which returns ``None`` when there
    are no more), so only ``concurrency`` targets are ever held; no task is created per target.
    The client's limiter keeps the rate. Each finished target goes to ``sink`` at once (in
    completion order); a failed target is passed with its exception and the run continues.
    """
    counters = counters if counters is not None else BulkCounters()
    take = asyncio.Lock()

    def page_done() -> None:
        counters.pages += 1

    async def worker() -> None:
        while True:
            async with take:
                target = await next_target()
            if target is None:
                return
            try:
                extensions, pages = await pull_one(tim, target, page_done)
            except Exception as exc:
                counters.done += 1
                counters.failed += 1
                sink(target, None, 0, exc)
                continue
            counters.done += 1
            counters.ok += 1
            counters.items += len(extensions)
            sink(target, extensions, pages, None)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    finally:
        counters.finished = time.monotonic()
    return counters


async def cmd_pull_bulk(args: argparse.Namespace) -> int:
    """``ext pull-bulk``: stream one JSON line per target; see the module docstring."""
    options = client_options(args)  # credentials are checked before the input is touched
    source = TargetSource.open(args.targets)
    try:
        if source.regular:
            source.validate()  # a malformed file stops here, before any call
        rate, timeout = options["rate_limit"], options["timeout"]
        if rate is not None and args.concurrency / rate > timeout / 2:
            err(
                f"warning: --concurrency {args.concurrency} queues up to "
                f"{args.concurrency / rate:.1f} s of calls behind the rate limit of {rate}/s; "
                f"calls waiting longer than --timeout {timeout:g} s fail"
            )
        if source.name == "stdin" and isatty(sys.stdin):
            err("reading targets from the terminal, one per line; end with Ctrl-D")
        # One connection per worker (each has one call in flight): waiting for a pooled
        # connection has a long tail in aiohttp when workers outnumber connections.
        tim = new_client({**options, "connections": min(args.concurrency, MAX_CONNECTIONS)})
        try:
            return await _pull_bulk_to_stdout(tim, source, args)
        finally:
            await tim.close()
    finally:
        await source.aclose()


async def _pull_bulk_to_stdout(
    tim: TimClient, source: TargetSource, args: argparse.Namespace
) -> int:
    out = sys.stdout.buffer
    broken = False

    def sink(
        target: Target, extensions: ExtensionList | None, pages: int, error: BaseException | None
    ) -> None:
        nonlocal broken
        if broken:
            return
        if extensions is not None:
            record = extension_record(target, extensions)
        else:
            assert error is not None
            record = target.describe()
            record["error"] = error_record(error)
        try:
            out.write(orjson.dumps(record) + b"\n")
            out.flush()  # every line: a reader sees results as they complete
        except (BrokenPipeError, ValueError):
            broken = True
            source.stop()

    counters = BulkCounters()
    progress = Progress(
        sys.stderr,
        counters,
        total=source.total,
        calls=lambda: counters.pages,
        label="pulled",
        limit=tim.rate_limit,
    )
    progress.start()
    try:
        await pull_bulk(tim, source.next, sink, concurrency=args.concurrency, counters=counters)
    finally:
        await progress.stop()
    if broken:
        # The reader went away (e.g. `| head`): stop quietly, as other Unix tools do.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    if source.error is not None:
        raise source.error
    if source.read_error is not None:
        raise source.read_error
    if not args.quiet:
        rate = tim.stats.attempts / counters.elapsed
        err(
            f"{counters.done:,} target(s): {counters.ok:,} ok, {counters.failed:,} failed; "
            f"{tim.stats.attempts:,} calls in {counters.elapsed:.1f} s ({rate:.1f} calls/s), "
            f"{tim.stats.retries:,} retried"
        )
    return EXIT_FAILED if counters.failed else EXIT_OK


_DESCRIPTION = """\
Read targets (a file, or stdin when TARGETS is omitted or '-'), one per line:
  {"group": "G", "msg_seq": 5}            or CSV  G,5
  {"to": "A", "msg_key": "K", "from": "B"} or CSV  A,K[,B]
A first line naming the columns (group,msg_seq / to,msg_key,from) is skipped, so
are blank lines and lines starting with '#'; other JSON keys are ignored.

Targets are pulled concurrently at the rate limit by a fixed pool of workers that
read the input as they go (memory stays bounded), and one JSON line per target is
written to stdout as it completes (not in input order): the target, its input
"line", then items/latest_seq/clear_seq, or "error": {code, type, message}. A
failed target does not stop the run. Progress goes to stderr when it is a terminal.

A malformed line is bad input (exit 2, the message names the line): a file is
checked completely before the first call; a stream (pipe) stops at that line.
Exit codes: 0 all targets pulled, 1 some target failed, 2 bad input, 130 Ctrl-C."""


def register(commands: Commands) -> None:
    """``tim-async ext pull-bulk``."""
    bulk = commands.subcommand(
        "ext",
        "pull-bulk",
        cmd_pull_bulk,
        help="pull many messages' extensions concurrently, one JSON line per target",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_DESCRIPTION,
    )
    bulk.add_argument(
        "targets", nargs="?", default=None, metavar="TARGETS", help="targets file [stdin]"
    )
    bulk.add_argument(
        "--concurrency",
        type=int_range(1, MAX_CONCURRENCY),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"targets in flight at once [default {DEFAULT_CONCURRENCY}]",
    )
    bulk.add_argument(
        "-q", "--quiet", action="store_true", help="no summary line on stderr at the end"
    )
