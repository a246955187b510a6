"""Run the emulator standalone: ``python -m tim_async.testing [options]``.

Prints the base URL on stdout (one line, flushed) once it accepts connections. On stderr it
says how to reach it: the SDKAppID, the admin account, the secret key (only the public test
key; a key given with ``--secret-key`` is never printed), ready-to-paste ``export TIM_...``
lines for the ``tim-async`` command line, and what was seeded (group ids, MsgSeqs, MsgKeys).
Stops cleanly on SIGTERM or SIGINT. The request log is off (nobody could read it from another
process, and it would grow without bound under a benchmark).

Seeding: the README's example data (:mod:`.examples`) unless ``--no-examples``; then, in the
group ``--group-id`` (of type ``--group-type``), ``--group-messages N`` messages with MsgSeq
1..N, each with 1..``--keys-per-msg-max`` random extension pairs (deterministic with
``--seed``) written as set calls of 20 keys, ``--group-attr`` and ``--group-counter`` values;
and ``--c2c-messages N`` one-to-one messages from ``--c2c-from`` to ``--c2c-to``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from .examples import CLI_C2C, CLI_GROUP, seed_examples
from .server import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY, FakeTimServer
from .state import EXT_MAX_PAIRS, GROUP_TYPES, EmulatorError

DEFAULT_GROUP_ID = "@TGS#SEEDGROUP"
#: MsgKeys printed per one-to-one seeding (the rest are counted)
_KEYS_SHOWN = 20


def _rate(text: str) -> int | None:
    if text.lower() == "none":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("rate limit must be >= 1 or 'none'")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _attr(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _counter(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=INTEGER, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tim_async.testing",
        description=(
            "Run the tim_async emulator of the Tencent Cloud Chat REST API on loopback. "
            "Prints its base URL on stdout; on stderr its credentials, export lines for the "
            "tim-async command line, and what was seeded."
        ),
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on")
    server.add_argument("--port", type=int, default=8080, help="TCP port (0 = any free port)")
    server.add_argument("--sdkappid", type=int, default=TEST_SDKAPPID, help="the app's SDKAppID")
    server.add_argument(
        "--secret-key",
        default=TEST_SECRET_KEY,
        help="app secret key that UserSigs must be signed with (default: the public test key)",
    )
    server.add_argument(
        "--admin", action="append", help=f"App admin account (repeatable; default {TEST_ADMIN})"
    )
    server.add_argument(
        "--rate-limit",
        type=_rate,
        default=200,
        help="calls per second accepted per command, or 'none' (default 200)",
    )
    server.add_argument(
        "--page-size", type=int, default=200, help="most pairs per extension page (default 200)"
    )
    server.add_argument(
        "--no-premium",
        action="store_true",
        help="act as a free edition: extensions answer 10008, counters 10059",
    )
    server.add_argument("--webhook-url", help="POST the webhook of every applied write to this URL")
    server.add_argument(
        "--webhook-token",
        default=os.environ.get("TIM_WEBHOOK_TOKEN"),
        help="sign the webhooks with this token (default: $TIM_WEBHOOK_TOKEN)",
    )
    seeding = parser.add_argument_group("seeding")
    seeding.add_argument(
        "--no-examples",
        action="store_true",
        help=(
            f"do not seed the README's example data (by default: group {CLI_GROUP} with "
            f"messages 158 and 159, attributes and counters; one-to-one messages "
            f"{CLI_C2C[0]} -> {CLI_C2C[1]}; the API reference's groups and messages)"
        ),
    )
    seeding.add_argument(
        "--group-id",
        default=DEFAULT_GROUP_ID,
        help=f"the group the --group-* flags seed (default {DEFAULT_GROUP_ID})",
    )
    seeding.add_argument(
        "--group-type",
        default="Public",
        choices=sorted(GROUP_TYPES),
        help="type of --group-id (default Public)",
    )
    seeding.add_argument(
        "--group-messages",
        type=_count,
        default=0,
        metavar="N",
        help="send N messages to --group-id (MsgSeq 1..N), each with random extension pairs",
    )
    seeding.add_argument(
        "--seed-groups",
        type=_count,
        default=None,
        metavar="N",
        help="deprecated name of --group-messages (it always seeded messages in one group)",
    )
    seeding.add_argument(
        "--keys-per-msg-max",
        type=int,
        default=EXT_MAX_PAIRS,
        metavar="K",
        help=f"each seeded message gets 1..K pairs (default {EXT_MAX_PAIRS})",
    )
    seeding.add_argument(
        "--group-attr",
        type=_attr,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a custom attribute of --group-id (repeatable)",
    )
    seeding.add_argument(
        "--group-counter",
        type=_counter,
        action="append",
        default=[],
        metavar="KEY=N",
        help="set a counter of --group-id (repeatable)",
    )
    seeding.add_argument(
        "--c2c-messages",
        type=_count,
        default=0,
        metavar="N",
        help="send N one-to-one messages from --c2c-from to --c2c-to, with random pairs",
    )
    seeding.add_argument("--c2c-from", default="alice", help="sender (default alice)")
    seeding.add_argument("--c2c-to", default="bob", help="receiver (default bob)")
    seeding.add_argument(
        "--seed", type=int, default=None, help="random seed: same flags, same data"
    )
    return parser


def _random_pairs(server: FakeTimServer, tag: str, keys_max: int) -> dict[str, str]:
    rng = server.state.rng
    count = rng.randint(1, keys_max)
    return {f"k{i}": f"v{tag}-{i}-{rng.randrange(1 << 30)}" for i in range(count)}


def seed(
    server: FakeTimServer, group_id: str, messages: int, keys_max: int, group_type: str = "Public"
) -> int:
    """Create ``group_id`` (if new) with messages 1..messages; return the pairs written.
    Messages of an AVChatRoom get none (it has no message extensions)."""
    if group_id not in server.state.groups:
        server.create_group(group_id, group_type)
    carries = server.state.groups[group_id].group_type != "AVChatRoom"
    total = 0
    for _ in range(messages):
        msg_seq = server.send_group_msg(group_id, support_extension=carries)
        if carries:
            values = _random_pairs(server, str(msg_seq), keys_max)
            server.put_group_extensions(group_id, msg_seq, values)
            total += len(values)
    return total


def seed_c2c(
    server: FakeTimServer, sender: str, receiver: str, messages: int, keys_max: int
) -> tuple[list[str], int]:
    """Send ``messages`` one-to-one messages with random pairs; return their MsgKeys and the
    pairs written."""
    keys: list[str] = []
    total = 0
    for i in range(messages):
        key = server.send_c2c_msg(sender, receiver)
        values = _random_pairs(server, f"c{i + 1}", keys_max)
        server.put_c2c_extensions(sender, receiver, key, values)
        keys.append(key)
        total += len(values)
    return keys, total


def seed_from_args(server: FakeTimServer, args: argparse.Namespace) -> list[str]:
    """Everything the flags ask for; one line per seeded object."""
    lines = [] if args.no_examples else seed_examples(server)
    gid = args.group_id
    if args.group_messages or args.group_attr or args.group_counter:
        if gid not in server.state.groups:
            server.create_group(gid, args.group_type)
        parts = []
        if args.group_messages:
            pairs = seed(server, gid, args.group_messages, args.keys_per_msg_max)
            parts.append(f"msg seqs 1..{args.group_messages} ({pairs} extension pairs)")
        if args.group_attr:
            server.set_group_attrs(gid, dict(args.group_attr))
            parts.append("attributes " + ", ".join(k for k, _ in args.group_attr))
        if args.group_counter:
            server.set_group_counters(gid, dict(args.group_counter))
            parts.append("counters " + ", ".join(k for k, _ in args.group_counter))
        lines.append(f"group {gid} ({args.group_type}): " + "; ".join(parts))
    if args.c2c_messages:
        keys, pairs = seed_c2c(
            server, args.c2c_from, args.c2c_to, args.c2c_messages, args.keys_per_msg_max
        )
        shown = ", ".join(keys[:_KEYS_SHOWN])
        more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
        lines.append(
            f"one-to-one {args.c2c_from} -> {args.c2c_to}: msg keys {shown}{more} "
            f"({pairs} extension pairs)"
        )
    return lines


def banner(server: FakeTimServer, seeded: Sequence[str], *, test_key: bool) -> str:
    """What stderr says once the emulator listens: how to reach it and what it holds."""
    exports = [f"TIM_SDKAPPID={server.sdkappid}", f"TIM_IDENTIFIER={server.admin}"]
    if test_key:
        exports.append(f"TIM_SECRET_KEY={server.secret_key}")
    exports.append(f"TIM_BASE_URL={server.base_url}")
    out = [
        f"tim_async emulator listening on {server.base_url}",
        f"  SDKAppID    {server.sdkappid}",
        f"  admin       {', '.join(server.admins)}",
        (
            f"  secret key  {server.secret_key} (the public test key: never use it for a real app)"
            if test_key
            else "  secret key  the one given with --secret-key (not printed)"
        ),
        "Point the tim-async command line at it (paste into your shell):",
        "export " + " ".join(exports),
    ]
    if not test_key:
        out.append("# and set TIM_SECRET_KEY to the key you gave with --secret-key")
    if seeded:
        out.append("Seeded:")
        out.extend(f"  {line}" for line in seeded)
    if any(line.startswith(f"group {CLI_GROUP} ") for line in seeded):
        sender, receiver, keys = CLI_C2C
        out += [
            "Try:",
            f"  tim-async ext get --group {CLI_GROUP} --msg-seq 158",
            f"  tim-async ext get --to {receiver} --msg-key {keys[0]} --from {sender}",
            f"  tim-async attr get --group {CLI_GROUP}",
            f"  tim-async counter get --group {CLI_GROUP}",
            f"  tim-async counter update --group {CLI_GROUP} --mode Increase likes=1",
            f"  printf '{CLI_GROUP},158\\n{receiver},{keys[1]},{sender}\\n' | "
            "tim-async ext pull-bulk",
        ]
    out.append("Stop it with Ctrl-C.")
    return "\n".join(out)


async def serve(args: argparse.Namespace) -> int:
    server = FakeTimServer(
        args.sdkappid,
        args.secret_key,
        admins=tuple(args.admin or (TEST_ADMIN,)),
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        page_size=args.page_size,
        seed=args.seed,
        premium=not args.no_premium,
        log_requests=False,
        webhook_url=args.webhook_url,
        webhook_token=args.webhook_token or None,
    )
    try:
        seeded = seed_from_args(server, args)
    except (EmulatorError, ValueError) as exc:
        print(f"python -m tim_async.testing: error: cannot seed: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        test_key = args.secret_key == TEST_SECRET_KEY
        print(banner(server, seeded, test_key=test_key), file=sys.stderr, flush=True)
        print(server.base_url, flush=True)
        await stop.wait()
    print("emulator stopped", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed_groups is not None:
        print(
            "python -m tim_async.testing: --seed-groups is deprecated: use --group-messages",
            file=sys.stderr,
        )
        args.group_messages = args.group_messages or args.seed_groups
    if not 1 <= args.keys_per_msg_max <= EXT_MAX_PAIRS:
        parser.error(f"--keys-per-msg-max must be in 1..{EXT_MAX_PAIRS}")
    if args.page_size < 1:
        parser.error("--page-size must be >= 1")
    code = 0
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(serve(args))
    return code


if __name__ == "__main__":
    sys.exit(main())
