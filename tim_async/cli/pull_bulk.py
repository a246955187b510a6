"""``ext pull-bulk``: many targets concurrently, one JSON line per target.

The pulling is :meth:`MsgExt.pull_many <tim_async.endpoints.msg_ext.MsgExt.pull_many>` (the one
bulk engine of the project); this module reads the targets, writes the lines and draws the
progress.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from tim_async.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    MAX_CONNECTIONS,
    client_options,
    connect,
    int_range,
)
from tim_async.cli.output import err, error_record, extension_record, isatty, quiet_stdout
from tim_async.cli.progress import Progress
from tim_async.cli.registry import Commands
from tim_async.cli.targets import MalformedTargetError, Target, TargetSource, to_message
from tim_async.endpoints.bulk import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    C2CMessage,
    GroupMessage,
    PullResult,
    PullStats,
)
from tim_async.errors import TimTypeError, TimValidationError

if TYPE_CHECKING:
    from tim_async.cli.meter import MeteredLimiter
    from tim_async.client import TimClient


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
        connections = min(2 * args.concurrency, MAX_CONNECTIONS)
        async with connect(options, connections=connections) as (tim, meter):
            return await _pull_bulk_to_stdout(tim, meter, source, args)
    finally:
        await source.aclose()


class _Writer:
    """Writes one JSON line per result; a closed pipe ends the run quietly, any other write
    error ends it as a failure."""

    def __init__(self, source: TargetSource) -> None:
        self._out = sys.stdout.buffer
        self._source = source
        self.broken = False
        self.error: OSError | None = None

    def write(self, record: dict[str, Any]) -> bool:
        if self.broken or self.error is not None:
            return False
        try:
            self._out.write(orjson.dumps(record) + b"\n")
            self._out.flush()  # every line: a reader sees results as they complete
        except (BrokenPipeError, ValueError):
            self.broken = True
        except OSError as exc:
            self.error = exc
        else:
            return True
        self._source.stop()
        return False


async def _pull_bulk_to_stdout(
    tim: TimClient, meter: MeteredLimiter, source: TargetSource, args: argparse.Namespace
) -> int:
    writer = _Writer(source)
    held: dict[int, Target] = {}  # id(message) -> its input target (at most 2 x concurrency)

    async def messages() -> AsyncIterator[GroupMessage | C2CMessage]:
        while (target := await source.next()) is not None:
            try:
                message = to_message(target)
            except (TimValidationError, TimTypeError) as exc:
                source.error = MalformedTargetError(source.name, target.line, str(exc))
                source.stop()
                return
            held[id(message)] = target
            yield message

    stats = PullStats()
    progress = Progress(
        sys.stderr,
        stats,
        total=source.total,
        calls=meter.current,
        label="pulled",
        limit=tim.rate_limit,
    )
    progress.start()
    try:
        results = tim.msg_ext.pull_many(messages(), concurrency=args.concurrency, stats=stats)
        async with contextlib.aclosing(results):
            async for result in results:
                if not writer.write(_record(held.pop(id(result.target)), result)):
                    break
    finally:
        await progress.stop()
    if writer.broken:
        # The reader went away (e.g. `| head`): stop quietly, as other Unix tools do.
        quiet_stdout()
        return EXIT_FAILED
    if writer.error is not None:
        err(f"error: cannot write to stdout: {writer.error.strerror or writer.error}")
        quiet_stdout()
        return EXIT_FAILED
    if source.error is not None:
        raise source.error
    if source.read_error is not None:
        raise source.read_error
    if not args.quiet:
        err(
            f"{stats.done:,} target(s): {stats.ok:,} ok, {stats.failed:,} failed; "
            f"{meter.calls:,} calls in {stats.elapsed:.1f} s ({_busiest(meter, tim)}), "
            f"{tim.stats.retries:,} retried"
        )
    return EXIT_FAILED if stats.failed else EXIT_OK


def _busiest(meter: MeteredLimiter, tim: TimClient) -> str:
    limit = f", limit {tim.rate_limit}/s" if tim.rate_limit else ""
    return f"busiest second {meter.busiest:,} calls per command{limit}"


def _record(target: Target, result: PullResult) -> dict[str, Any]:
    if result.extensions is not None:
        return extension_record(target, result.extensions)
    assert result.error is not None
    record = target.describe()
    record["error"] = error_record(result.error)
    return record


_DESCRIPTION = """\
Read targets (a file, or stdin when TARGETS is omitted or '-'), one per line:
  {"group": "G", "msg_seq": 5}            or CSV  G,5
  {"to": "A", "msg_key": "K", "from": "B"} or CSV  A,K[,B]
A first line naming the columns (group,msg_seq / to,msg_key,from) is skipped, so
are blank lines and lines starting with '#'; other JSON keys are ignored.

Targets are pulled concurrently at the rate limit (tim.msg_ext.pull_many: group
and one-to-one targets each through their own command's budget), reading the
input as it goes (memory stays bounded), and one JSON line per target is
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
        help=f"targets in flight at once per REST command [default {DEFAULT_CONCURRENCY}]",
    )
    bulk.add_argument(
        "-q", "--quiet", action="store_true", help="no summary line on stderr at the end"
    )
