"""The write commands: ``ext set|delete|clear``, ``attr modify|set|delete|clear``,
``counter delete``, and ``call SERVICE/COMMAND`` for any REST command.

Each prints one JSON object. Every argument is checked before anything is sent: the shapes
here (``prepare``, before the event loop starts), the limits by the SDK's methods, which
refuse bad input before sending (exit 2, naming the argument).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from tim_async._validate import UINT32_MAX
from tim_async.cli.commands import target_from_args
from tim_async.cli.options import (
    EXIT_OK,
    UsageError,
    client_options,
    connect,
    int_range,
    key_value,
)
from tim_async.cli.output import write_json
from tim_async.cli.registry import Commands
from tim_async.cli.targets import GroupTarget, Target


def _unique(keys: list[str], what: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise UsageError(f"{what} {key!r} is given twice")
        seen.add(key)


def _prepare_ext(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.target = target_from_args(args, parser)
    if args.operation == "set":
        _unique([k for k, _ in args.pairs], "key")
    elif args.operation == "delete":
        _unique(args.keys, "key")


def _prepare_attr(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.operation in ("modify", "set"):
        _unique([k for k, _ in args.pairs], "attribute")
    elif args.operation == "delete":
        _unique(args.keys, "attribute")


def _prepare_counter_delete(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _unique(args.keys, "counter")


def _prepare_call(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    text = args.body
    if text == "-":
        try:
            text = sys.stdin.buffer.read()
        except (OSError, ValueError, AttributeError) as exc:
            raise UsageError(f"--body -: cannot read stdin ({exc})") from None
    try:
        body = {} if text is None else orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--body: invalid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise UsageError(f"--body: must be a JSON object, got {type(body).__name__}")
    args.body_object = body
    service, sep, command = args.api.partition("/")
    if not sep or not service or not command or "/" in command:
        raise UsageError(
            f"SERVICE/COMMAND: expected e.g. group_open_http_svc/get_group_info, got {args.api!r}"
        )


async def cmd_ext_write(args: argparse.Namespace) -> int:
    """``ext set|delete|clear``: one message's extensions; prints the per-key results."""
    target: Target = args.target
    values: Any = None
    if args.operation == "set":
        values = dict(args.pairs)
    elif args.operation == "delete":
        values = list(args.keys)
    async with connect(client_options(args)) as (tim, _):
        if isinstance(target, GroupTarget):
            results = await tim.msg_ext.group_set_key_values(
                target.group, target.msg_seq, values, operation=args.operation
            )
        else:
            results = await tim.msg_ext.set_key_values(
                target.to,
                target.msg_key,
                values,
                from_account=target.from_account,
                operation=args.operation,
            )
    record = target.describe()
    record["operation"] = args.operation
    record["results"] = [
        {"key": r.key, "value": r.value, "seq": r.seq, "error_code": r.error_code} for r in results
    ]
    write_json(record)
    return EXIT_OK


async def cmd_attr_write(args: argparse.Namespace) -> int:
    """``attr modify|set|delete|clear``."""
    async with connect(client_options(args)) as (tim, _):
        api = tim.group_attr
        if args.operation == "modify":
            await api.modify_group_attr(args.group, dict(args.pairs))
        elif args.operation == "set":
            await api.set_group_attr(args.group, dict(args.pairs))
        elif args.operation == "delete":
            await api.delete_group_attr(args.group, list(args.keys))
        else:
            await api.clear_group_attr(args.group)
    write_json({"group": args.group, "operation": args.operation, "ok": True})
    return EXIT_OK


async def cmd_counter_delete(args: argparse.Namespace) -> int:
    """``counter delete``: the counters given, or every counter with ``--all``."""
    async with connect(client_options(args)) as (tim, _):
        await tim.group_counter.delete_group_counter(args.group, list(args.keys) or None)
    write_json({"group": args.group, "deleted": list(args.keys) or "all", "ok": True})
    return EXIT_OK


async def cmd_call(args: argparse.Namespace) -> int:
    """``call SERVICE/COMMAND``: any REST command; prints the server's answer."""
    async with connect(client_options(args)) as (tim, _):
        answer = await tim.call(args.api, args.body_object, idempotent=not args.not_idempotent)
    write_json(answer)
    return EXIT_OK


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", metavar="GROUP_ID", help="group of a group message")
    parser.add_argument(
        "--msg-seq", type=int_range(0, UINT32_MAX), metavar="N", help="MsgSeq (group message)"
    )
    parser.add_argument("--to", metavar="ACCOUNT", help="recipient of a one-to-one message")
    parser.add_argument("--msg-key", metavar="KEY", help="MsgKey (one-to-one message)")
    parser.add_argument(
        "--from", dest="from_account", metavar="ACCOUNT", help="sender (one-to-one, optional)"
    )


def register(commands: Commands) -> None:
    """The write commands and ``call``."""
    for operation, help_text in (
        ("set", "set extension pairs KEY=VALUE (at most 20)"),
        ("delete", "delete extension keys (at most 20)"),
        ("clear", "remove every extension pair of the message"),
    ):
        parser = commands.subcommand(
            "ext",
            operation,
            cmd_ext_write,
            prepare=_prepare_ext,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}; prints the target, the "
            "operation and the per-key results [{key, value, seq, error_code}].",
        )
        _target_flags(parser)
        if operation == "set":
            parser.add_argument("pairs", nargs="+", type=key_value, metavar="KEY=VALUE")
        elif operation == "delete":
            parser.add_argument("keys", nargs="+", metavar="KEY")
        parser.set_defaults(operation=operation)

    for operation, help_text in (
        ("modify", "add or overwrite attributes KEY=VALUE, keeping the others"),
        ("set", "replace every attribute with KEY=VALUE pairs"),
        ("delete", "delete attribute keys"),
        ("clear", "remove every attribute"),
    ):
        parser = commands.subcommand(
            "attr",
            operation,
            cmd_attr_write,
            prepare=_prepare_attr,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]} (at most 16); prints "
            '{"group", "operation", "ok": true}.',
        )
        parser.add_argument("--group", required=True, metavar="GROUP_ID")
        if operation in ("modify", "set"):
            parser.add_argument("pairs", nargs="+", type=key_value, metavar="KEY=VALUE")
        elif operation == "delete":
            parser.add_argument("keys", nargs="+", metavar="KEY")
        parser.set_defaults(operation=operation)

    delete = commands.subcommand(
        "counter",
        "delete",
        cmd_counter_delete,
        prepare=_prepare_counter_delete,
        help="delete counters (the KEYs given, or all)",
        description="Delete the KEYs given (at most 20), or every counter of the group when "
        'none is given; prints {"group", "deleted", "ok": true}.',
    )
    delete.add_argument("--group", required=True, metavar="GROUP_ID")
    delete.add_argument("keys", nargs="*", metavar="KEY", help="counters to delete [all]")

    call = commands.command(
        "call",
        cmd_call,
        help="call any REST command with a JSON body; prints the answer",
        description="POST the JSON object of --body (or of stdin with --body -; {} when "
        "omitted) to SERVICE/COMMAND through the client's limiter, retries and error mapping, "
        "and print the server's answer. --not-idempotent: never resend the request once it may "
        "have reached the server (a timeout then fails with exit 1, outcome unknown).",
    )
    call.add_argument("api", metavar="SERVICE/COMMAND")
    call.add_argument("--body", default=None, metavar="JSON", help="the request body, or '-'")
    call.add_argument(
        "--not-idempotent", action="store_true", help="never resend this command after sending"
    )
    call.set_defaults(prepare=_prepare_call)
