"""The ``tim-async`` parser and entry point; each command module registers its own commands
(see :mod:`tim_async.cli.registry`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from tim_async.cli import commands, demo, pull_bulk, webhook, writes
from tim_async.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    UsageError,
    add_connection_options,
)
from tim_async.cli.output import StdoutClosed, err, quiet_stdout
from tim_async.cli.registry import Commands, Handler
from tim_async.errors import TimError, TimTypeError, TimValidationError

#: the command modules, in the order of ``--help``; each has ``register(commands)``
COMMAND_MODULES = (demo, commands, pull_bulk, writes, webhook)

#: the command groups: name -> (help, description)
GROUPS = {
    "ext": ("message extensions", "Message extensions (openim_msg_ext_http_svc)."),
    "attr": ("group custom attributes", "Group custom attributes."),
    "counter": ("group counters", "Group counters (signed 64-bit integers)."),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tim-async`` (every command and subcommand has ``--help``)."""
    from tim_async import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tencent Cloud Chat server-side REST API from the command line (tim_async).",
        epilog="Exit codes: 0 ok, 1 a call or a target failed, 2 bad input, 130 interrupted. "
        "Run `tim-async demo` to see the SDK work against its embedded emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_connection_options(parser)
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    tree = Commands(subparsers, GROUPS)
    for module in COMMAND_MODULES:
        module.register(tree)
    parser.set_defaults(_groups={name: group for name, (group, _) in tree.groups.items()})
    return parser


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Handler:
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        group = args._groups.get(args.command) if args.command else None
        (group or parser).print_help(sys.stderr)
        raise SystemExit(EXIT_USAGE)
    if args.prepare is not None:
        args.prepare(args, args._parser)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        handler = _dispatch(parser, args)
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except (UsageError, TimValidationError, TimTypeError) as exc:
        # TimValidationError / TimTypeError: the SDK refused an argument before sending.
        err(f"error: {exc}")
        return EXIT_USAGE
    except TimError as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    except StdoutClosed:
        return EXIT_FAILED  # the reader went away (e.g. `| true`): quietly, like pull-bulk
    except OSError as exc:  # e.g. stdout on a full disk
        err(f"error: cannot write the result: {exc.strerror or exc}")
        quiet_stdout()
        return EXIT_FAILED
