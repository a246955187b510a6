"""The single-object commands: ``ext get``, ``attr get``, ``counter get|update``."""

from __future__ import annotations

import argparse

from tim_async._validate import UINT32_MAX
from tim_async.cli.options import (
    EXIT_OK,
    UsageError,
    client_options,
    connect,
    counter_pair,
    int_range,
    mode_arg,
)
from tim_async.cli.output import extension_record, write_json
from tim_async.cli.registry import Commands
from tim_async.cli.targets import C2CTarget, GroupTarget, Target


def target_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Target:
    group, to = args.group, args.to
    if (group is None) == (to is None):
        parser.error("give either --group with --msg-seq, or --to with --msg-key")
    if group is not None:
        if args.msg_seq is None:
            parser.error("--group needs --msg-seq")
        if args.msg_key is not None or args.from_account is not None:
            parser.error("--msg-key and --from go with --to, not with --group")
        return GroupTarget(group, args.msg_seq)
    if args.msg_key is None:
        parser.error("--to needs --msg-key")
    if args.msg_seq is not None:
        parser.error("--msg-seq goes with --group, not with --to")
    return C2CTarget(to, args.msg_key, args.from_account)


async def cmd_ext_get(args: argparse.Namespace) -> int:
    """``ext get``: one message's extensions as one JSON object."""
    target: Target = args.target
    async with connect(client_options(args)) as (tim, _):
        if isinstance(target, GroupTarget):
            extensions = await tim.msg_ext.group_get_key_values(target.group, target.msg_seq)
        else:
            extensions = await tim.msg_ext.get_key_values(
                target.to, target.msg_key, from_account=target.from_account
            )
    write_json(extension_record(target, extensions))
    return EXIT_OK


async def cmd_attr_get(args: argparse.Namespace) -> int:
    """``attr get``: a group's custom attributes."""
    async with connect(client_options(args)) as (tim, _):
        attrs = await tim.group_attr.get_group_attr(args.group)
    write_json({"group": args.group, "attrs": attrs})
    return EXIT_OK


async def cmd_counter_get(args: argparse.Namespace) -> int:
    """``counter get``: a group's counters (all, or the keys given)."""
    keys: list[str] | None = args.keys or None
    async with connect(client_options(args)) as (tim, _):
        counters = await tim.group_counter.get_group_counter(args.group, keys)
    write_json({"group": args.group, "counters": counters})
    return EXIT_OK


async def cmd_counter_update(args: argparse.Namespace) -> int:
    """``counter update``: set, increase or decrease counters; prints their latest values."""
    counters: dict[str, int] = {}
    for key, value in args.pairs:
        if key in counters:
            raise UsageError(f"counter {key!r} is given twice")
        counters[key] = value
    async with connect(client_options(args)) as (tim, _):
        latest = await tim.group_counter.update_group_counter(args.group, counters, mode=args.mode)
    write_json({"group": args.group, "mode": args.mode.value, "counters": latest})
    return EXIT_OK


def _prepare_ext_get(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.target = target_from_args(args, parser)


def register(commands: Commands) -> None:
    """``ext get``, ``attr get``, ``counter get`` and ``counter update``."""
    ext_get = commands.subcommand(
        "ext",
        "get",
        cmd_ext_get,
        prepare=_prepare_ext_get,
        help="all extensions of one message, as JSON",
        description="Pull every page of one message's extensions and print one JSON object: "
        "the target, items [{key, value, seq}] sorted by seq, latest_seq and clear_seq.",
    )
    ext_get.add_argument("--group", metavar="GROUP_ID", help="group of a group message")
    ext_get.add_argument(
        "--msg-seq", type=int_range(0, UINT32_MAX), metavar="N", help="MsgSeq (group message)"
    )
    ext_get.add_argument("--to", metavar="ACCOUNT", help="recipient of a one-to-one message")
    ext_get.add_argument("--msg-key", metavar="KEY", help="MsgKey (one-to-one message)")
    ext_get.add_argument(
        "--from", dest="from_account", metavar="ACCOUNT", help="sender (one-to-one, optional)"
    )

    attr_get = commands.subcommand(
        "attr",
        "get",
        cmd_attr_get,
        help="a group's attributes, as JSON",
        description='Print {"group": G, "attrs": {key: value}}.',
    )
    attr_get.add_argument("--group", required=True, metavar="GROUP_ID")

    counter_get = commands.subcommand(
        "counter",
        "get",
        cmd_counter_get,
        help="a group's counters, as JSON",
        description='Print {"group": G, "counters": {key: value}}: all counters, or the '
        "KEYs given (at most 20).",
    )
    counter_get.add_argument("--group", required=True, metavar="GROUP_ID")
    counter_get.add_argument("keys", nargs="*", metavar="KEY", help="counters to read [all]")

    counter_update = commands.subcommand(
        "counter",
        "update",
        cmd_counter_update,
        help="set, increase or decrease counters",
        description='Apply KEY=VALUE pairs (at most 20) and print {"group", "mode", '
        '"counters": latest values}. Increase/Decrease are never resent after a timeout: '
        "if the outcome is unknown the command fails (exit 1) rather than risk counting twice.",
    )
    counter_update.add_argument("--group", required=True, metavar="GROUP_ID")
    counter_update.add_argument(
        "--mode",
        required=True,
        type=mode_arg,
        metavar="MODE",
        help="Set, Increase or Decrease",
    )
    counter_update.add_argument(
        "pairs", nargs="+", type=counter_pair, metavar="KEY=VALUE", help="counters to apply"
    )
