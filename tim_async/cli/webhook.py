"""``tim-async webhook listen``: receive, verify and print Tencent's webhooks; and the demo's
webhook round trip (:class:`DemoWebhooks`).

``listen`` serves a :class:`~tim_async.webhooks.WebhookReceiver` on ``--host:--port`` at
``--path``, for checking a console configuration: each verified event is one JSON line on
stdout; each refused request one line on stderr. The token comes only from
``TIM_WEBHOOK_TOKEN`` (a flag would show it in ``ps``); without it, authentication is off and
only the app is checked. The SDKAppID comes from ``--sdkappid`` or ``TIM_SDKAPPID``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from tim_async.cli.options import (
    ENV_SDKAPPID,
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    UsageError,
    int_range,
)
from tim_async.cli.output import err
from tim_async.cli.registry import Commands

# tim_async.webhooks is imported where it is used: it brings aiohttp's server side (~30 ms at
# start-up), which no command but `webhook listen` and `demo` needs.
if TYPE_CHECKING:
    from tim_async.cli.demo_walk import _Checks
    from tim_async.client import TimClient
    from tim_async.testing import FakeTimServer
    from tim_async.webhooks import WebhookEvent

ENV_WEBHOOK_TOKEN: Final = "TIM_WEBHOOK_TOKEN"

__all__ = ["ENV_WEBHOOK_TOKEN", "DemoWebhooks", "event_record", "listen", "register"]


def event_record(event: WebhookEvent) -> dict[str, Any]:
    """The JSON object printed for one event: ``command``, ``dedupe_key`` and the event's
    fields (items as ``{key, value, seq}``, operations as their wire meaning)."""
    fields = attrs.asdict(event, recurse=True)
    if "operation" in fields:
        fields["operation"] = str(fields["operation"])
    if "items" in fields:
        fields["items"] = list(fields["items"])
    return {"command": event.command, "dedupe_key": event.dedupe_key, **fields}


class _StderrLines(logging.Handler):
    """Each refused request (a WARNING of the receiver) as one line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f": {record.exc_info[1]!r}"
            err(message.replace("\n", " "))


def _sdkappid(args: argparse.Namespace) -> int:
    text = getattr(args, "sdkappid", None) or os.environ.get(ENV_SDKAPPID)
    if not text:
        raise UsageError(f"the SDKAppID is needed: --sdkappid or {ENV_SDKAPPID}")
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise UsageError(f"SDKAppID must be a positive integer, got {text[:20]!r}")
    return int(text)


async def listen(
    sdkappid: int,
    token: str | None,
    *,
    host: str,
    port: int,
    path: str,
    stop: asyncio.Event,
    out: Any = None,
) -> None:
    """Serve until ``stop`` is set, printing each event as one JSON line on ``out``."""
    stream = out if out is not None else sys.stdout.buffer

    async def print_event(event: WebhookEvent) -> None:
        stream.write(orjson.dumps(event_record(event)) + b"\n")
        stream.flush()

    from tim_async.webhooks import WebhookReceiver

    logger = logging.getLogger("tim_async.webhooks")
    handler = _StderrLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        receiver = WebhookReceiver(sdkappid, token=token, handler=print_event)
        async with receiver.serve(host, port, path) as url:
            auth = "Sign checked" if token else f"no token ({ENV_WEBHOOK_TOKEN} unset): app only"
            err(f"listening on {url} for SDKAppID {sdkappid}; {auth}")
            await stop.wait()
    finally:
        logger.removeHandler(handler)


async def cmd_listen(args: argparse.Namespace) -> int:
    """``webhook listen``."""
    sdkappid = _sdkappid(args)
    token = os.environ.get(ENV_WEBHOOK_TOKEN) or None
    path = args.path if args.path.startswith("/") else "/" + args.path
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await listen(sdkappid, token, host=args.host, port=args.port, path=path, stop=stop)
    except OSError as exc:
        err(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_FAILED
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    err("stopped")
    return EXIT_OK


# --------------------------------------------------------------------------- demo


class DemoWebhooks:
    """The demo's webhook round trip. :meth:`start` serves a signed receiver on 127.0.0.1 and
    points the embedded emulator at it, so every REST write the demo makes sends a webhook;
    :meth:`finish` makes one write of every kind more, waits for the deliveries and checks that
    every write's webhook arrived verified, and with the Seq its REST answer gave."""

    def __init__(self, server: FakeTimServer, checks: _Checks) -> None:
        self.server = server
        self.checks = checks
        self.events: list[WebhookEvent] = []
        self._stack = contextlib.AsyncExitStack()

    @classmethod
    async def start(cls, server: FakeTimServer, checks: _Checks) -> DemoWebhooks:
        from tim_async.webhooks import WebhookReceiver

        trip = cls(server, checks)
        token = os.urandom(16).hex()
        receiver = WebhookReceiver(server.sdkappid, token=token, handler=trip._collect)
        url = await trip._stack.enter_async_context(receiver.serve())
        server.webhooks.url, server.webhooks.token = url, token
        return trip

    async def _collect(self, event: WebhookEvent) -> None:
        self.events.append(event)

    async def finish(self, tim: TimClient) -> None:
        server, checks = self.server, self.checks
        expected: list[tuple[Any, ...]] = []
        try:
            expected = await _round_trip_writes(server, tim)
            await server.webhooks.drain()
        except Exception as exc:  # a failed check, like the rest of the demo
            checks.check("webhook round trip", False, f"{type(exc).__name__}: {exc}")
            return
        finally:
            server.webhooks.url = None
            await self._stack.aclose()
        from tim_async.testing.webhook_delivery import WEBHOOK_COMMANDS

        deliveries = server.webhook_deliveries
        failed = [d for d in deliveries if not d.ok]
        # The applied writes, from the emulator's request log (not from the sender).
        writes = sum(
            1 for r in server.requests if r.command in WEBHOOK_COMMANDS and r.error_code == 0
        )
        checks.check(
            "every write's webhook arrived, verified (Sign, age, app)",
            writes > 0 and not failed and len(self.events) == len(deliveries) == writes,
            f"{len(self.events)} webhooks received for {writes} applied writes"
            + (f"; first failure: {failed[0].error}" if failed else ""),
        )
        got = [_signature(e) for e in self.events[-len(expected) :]]
        checks.check(
            "webhooks carry the Seq of each REST answer (set, delete, clear; attributes)",
            sorted(got, key=repr) == sorted(expected, key=repr),
            f"{len(expected)} writes compared",
        )


def _signature(event: WebhookEvent) -> tuple[Any, ...]:
    from tim_async.webhooks import (
        C2CMsgExtensionEvent,
        GroupAttrChangedEvent,
        GroupMsgExtensionEvent,
    )

    if isinstance(event, GroupMsgExtensionEvent):
        return ("group", event.operation.value, event.seq, [(i.key, i.seq) for i in event.items])
    if isinstance(event, C2CMsgExtensionEvent):
        return ("c2c", event.operation.value, event.seq, [(i.key, i.seq) for i in event.items])
    if isinstance(event, GroupAttrChangedEvent):
        return ("attr", event.operation.value, event.attrs)
    return ("unknown", event.command)


async def _round_trip_writes(server: FakeTimServer, tim: TimClient) -> list[tuple[Any, ...]]:
    """Writes of every kind; returns what their webhooks must say, from the REST answers."""
    from tim_async.webhooks import ExtensionOperation

    expected: list[tuple[Any, ...]] = []
    gid = server.create_group("@TGS#DEMOHOOKS")
    seq = server.send_group_msg(gid)
    key = server.send_c2c_msg("demo_alice", "demo_bob")
    for kind in ("group", "c2c"):

        async def write(values: Any, operation: str, kind: str = kind) -> list[Any]:
            if kind == "group":
                return await tim.msg_ext.group_set_key_values(gid, seq, values, operation=operation)
            return await tim.msg_ext.set_key_values(
                "demo_bob", key, values, from_account="demo_alice", operation=operation
            )

        results = await write({"like": "1", "seen": "1"}, "set")
        expected.append((kind, "set", results[0].seq, [(r.key, r.seq) for r in results]))
        results = await write(["seen"], "delete")
        expected.append((kind, "delete", results[0].seq, [(r.key, r.seq) for r in results]))
        await write(None, "clear")
        latest = (
            server.group_extension_meta(gid, seq)
            if kind == "group"
            else server.c2c_extension_meta("demo_alice", "demo_bob", key)
        ).latest_seq
        expected.append((kind, ExtensionOperation.CLEAR.value, latest, []))
    await tim.group_attr.modify_group_attr(gid, {"topic": "demo"})
    await tim.group_attr.delete_group_attr(gid, ["topic"])
    expected += [("attr", "modify", {"topic": "demo"}), ("attr", "delete", {"topic": ""})]
    return expected


def register(commands: Commands) -> None:
    """``tim-async webhook listen``."""
    commands.group(
        "webhook",
        help="receive Tencent's webhooks",
        description="Receive and verify the webhooks of message extensions and group "
        "attributes (Group.CallbackAfterGroupMsgExtension, C2C.CallbackAfterC2CMsgExtension, "
        "Group.CallbackAfterGroupAttrChanged).",
    )
    # Not commands.subcommand(): that adds the client's connection options, and a listener
    # needs only the SDKAppID.
    _, action = commands.groups["webhook"]
    listen_parser = action.add_parser(
        "listen",
        help="verify every request and print each event as one JSON line",
        description=f"Serve a webhook receiver for checking a console configuration. The "
        f"token comes only from the environment variable {ENV_WEBHOOK_TOKEN} (unset: "
        f"authentication off, only the app is checked). Each verified event is one JSON line "
        f"on stdout; each refused request (401, 403, 413, 400) one line on stderr. Stop with "
        f"Ctrl-C.",
        epilog=f"Behind HTTPS in production: `{PROG} webhook listen` speaks plain HTTP.",
    )
    listen_parser.set_defaults(handler=cmd_listen, prepare=None, _parser=listen_parser)
    listen_parser.add_argument(
        "--sdkappid",
        default=argparse.SUPPRESS,
        metavar="ID",
        help=f"the app whose webhooks are accepted [env {ENV_SDKAPPID}]",
    )
    listen_parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on [default 127.0.0.1]"
    )
    listen_parser.add_argument(
        "--port", type=int_range(0, 65535), default=8080, help="0: any free port [default 8080]"
    )
    listen_parser.add_argument(
        "--path", default="/", help="URL path of the webhook (the console's URL) [default /]"
    )
