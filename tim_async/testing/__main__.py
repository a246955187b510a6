"""Run the emulator standalone: ``python -m tim_async.testing [options]``.

Prints the base URL on stdout (one line, flushed) once it accepts connections; everything else
goes to stderr. Stops cleanly on SIGTERM or SIGINT. The request log is off (nobody could read
it from another process, and it would grow without bound under a benchmark).

With ``--seed-groups N`` it creates one group (``--group-id``) holding messages with MsgSeq
1..N, each with a random number of extension pairs between 1 and ``--keys-per-msg-max``
(deterministic with ``--seed``), written as set calls of 20 keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from .server import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY, FakeTimServer
from .state import EXT_MAX_PAIRS

DEFAULT_GROUP_ID = "@TGS#SEEDGROUP"


def _rate(text: str) -> int | None:
    if text.lower() == "none":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("rate limit must be >= 1 or 'none'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tim_async.testing",
        description="Run the tim_async emulator of the Tencent Cloud Chat REST API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 = any free port")
    parser.add_argument("--sdkappid", type=int, default=TEST_SDKAPPID)
    parser.add_argument(
        "--secret-key", default=TEST_SECRET_KEY, help="app secret key (default: the test key)"
    )
    parser.add_argument("--admin", action="append", help="App admin account (repeatable)")
    parser.add_argument(
        "--rate-limit", type=_rate, default=200, help="calls/s per command, or 'none'"
    )
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--seed-groups", type=int, default=0, metavar="N")
    parser.add_argument("--keys-per-msg-max", type=int, default=EXT_MAX_PAIRS)
    parser.add_argument("--group-id", default=DEFAULT_GROUP_ID)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-premium", action="store_true", help="answer 10008 / 10059")
    parser.add_argument("--webhook-url", help="POST the webhooks of writes to this URL")
    parser.add_argument(
        "--webhook-token",
        default=os.environ.get("TIM_WEBHOOK_TOKEN"),
        help="sign webhooks with this token (default: $TIM_WEBHOOK_TOKEN)",
    )
    return parser


def seed(server: FakeTimServer, group_id: str, messages: int, keys_max: int) -> int:
    """Create ``group_id`` with messages 1..messages; return the number of pairs written."""
    rng = server.state.rng
    server.create_group(group_id, "Public")
    total = 0
    for _ in range(messages):
        msg_seq = server.send_group_msg(group_id)
        count = rng.randint(1, keys_max)
        values = {f"k{i}": f"v{msg_seq}-{i}-{rng.randrange(1 << 30)}" for i in range(count)}
        server.put_group_extensions(group_id, msg_seq, values)
        total += count
    return total


async def serve(args: argparse.Namespace) -> None:
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
    if args.seed_groups:
        pairs = seed(server, args.group_id, args.seed_groups, args.keys_per_msg_max)
        print(
            f"seeded group {args.group_id}: {args.seed_groups} messages, {pairs} pairs",
            file=sys.stderr,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(server.base_url, flush=True)
        await stop.wait()
    print("emulator stopped", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.keys_per_msg_max <= EXT_MAX_PAIRS:
        print(f"--keys-per-msg-max must be in 1..{EXT_MAX_PAIRS}", file=sys.stderr)
        return 2
    if args.page_size < 1 or args.seed_groups < 0:
        print("--page-size must be >= 1 and --seed-groups >= 0", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
