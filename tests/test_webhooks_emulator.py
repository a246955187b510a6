"""The emulator sends the webhooks of its writes; the SDK's own WebhookReceiver verifies them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tim_async import TimClient
from tim_async.models import ExtensionItem
from tim_async.testing import FakeTimServer, Fault, WebhookFault
from tim_async.webhooks import (
    C2CMsgExtensionEvent,
    ExtensionOperation,
    GroupAttrChangedEvent,
    GroupAttrOperation,
    GroupMsgExtensionEvent,
    WebhookEvent,
    WebhookReceiver,
    verify_webhook,
)

TOKEN = "Emul4tor-Webhook-Token"


class Inbox:
    """The events a receiver handed to its handler, with a way to wait for the n-th."""

    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []
        self._changed = asyncio.Condition()

    async def __call__(self, event: WebhookEvent) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait_for(self, count: int) -> list[WebhookEvent]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.events) >= count), 30)
        return self.events


@pytest.fixture
async def setup() -> AsyncIterator[tuple[FakeTimServer, TimClient, Inbox]]:
    inbox = Inbox()
    async with FakeTimServer(group_attr_write_limit=None) as server:
        receiver = WebhookReceiver(server.sdkappid, token=TOKEN, handler=inbox)
        async with receiver.serve(path="/tim") as url:
            server.webhooks.url = url
            server.webhooks.token = TOKEN
            async with TimClient(
                server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
            ) as tim:
                yield server, tim, inbox


def assert_delivered(server: FakeTimServer, count: int) -> None:
    deliveries = server.webhook_deliveries
    assert len(deliveries) == count
    for d in deliveries:
        assert d.ok and d.status == 200 and d.error is None and d.latency >= 0
        assert d.answer == {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}
        assert d.query["CallbackCommand"] == d.command == d.body["CallbackCommand"]
        assert d.query["contenttype"] == "json" and d.query["OptPlatform"] == "RESTAPI"
        assert d.query["ClientIP"] == "127.0.0.1"
        # The SDK's own check, on what was sent (the receiver checked it on arrival too).
        verify_webhook(d.query, sdkappid=server.sdkappid, token=TOKEN, max_age=5)


async def test_group_extension_writes(setup: tuple[FakeTimServer, TimClient, Inbox]) -> None:
    server, tim, inbox = setup
    gid = server.create_group("g1")
    seq = server.send_group_msg(gid)
    ext = tim.msg_ext

    await ext.group_set_key_values(gid, seq, {"k1": "v1", "k2": "v2"})
    await server.webhooks.drain()
    pulled = await ext.group_get_key_values(gid, seq)
    (event,) = await inbox.wait_for(1)
    assert isinstance(event, GroupMsgExtensionEvent)
    assert (event.group_id, event.msg_seq, event.operation) == (gid, seq, ExtensionOperation.SET)
    assert event.seq == pulled.latest_seq == 1
    assert event.items == pulled.items

    await ext.group_set_key_values(gid, seq, {"k2": "v2b", "k3": "v3"})
    await server.webhooks.drain()
    pulled = await ext.group_get_key_values(gid, seq)
    event = (await inbox.wait_for(2))[1]
    assert isinstance(event, GroupMsgExtensionEvent)
    assert event.seq == pulled.latest_seq == 2
    assert event.items == tuple(i for i in pulled.items if i.key in ("k2", "k3"))
    assert event.items == (ExtensionItem("k2", "v2b", 2), ExtensionItem("k3", "v3", 2))

    await ext.group_set_key_values(gid, seq, ["k1"], operation="delete")
    await server.webhooks.drain()
    pulled = await ext.group_get_key_values(gid, seq)
    event = (await inbox.wait_for(3))[2]
    assert isinstance(event, GroupMsgExtensionEvent)
    assert event.operation is ExtensionOperation.DELETE
    assert event.seq == pulled.latest_seq == 3
    assert event.items == (ExtensionItem("k1", "", 3),)
    assert "k1" not in pulled

    await ext.group_set_key_values(gid, seq, operation="clear")
    await server.webhooks.drain()
    pulled = await ext.group_get_key_values(gid, seq)
    event = (await inbox.wait_for(4))[3]
    assert isinstance(event, GroupMsgExtensionEvent)
    assert event.operation is ExtensionOperation.CLEAR
    assert event.seq == pulled.latest_seq == pulled.clear_seq == 4
    assert event.items == () and len(pulled) == 0
    assert_delivered(server, 4)
    assert [d.body["OperateType"] for d in server.webhook_deliveries] == [1, 1, 2, 3]
    assert server.webhook_deliveries[3].body["ExtensionList"] == []


async def test_c2c_extension_writes(setup: tuple[FakeTimServer, TimClient, Inbox]) -> None:
    server, tim, inbox = setup
    key = server.send_c2c_msg("alice", "bob")
    ext = tim.msg_ext

    # The write names the receiver first: the webhook still says who sent the message.
    await ext.set_key_values("bob", key, {"like": "1"}, from_account="alice")
    await ext.set_key_values("alice", key, ["like"], operation="delete", from_account="bob")
    await ext.set_key_values("bob", key, {"a": "x", "b": "y"})
    await server.webhooks.drain()
    pulled = await ext.get_key_values("bob", key, from_account="alice")
    await ext.set_key_values("bob", key, operation="clear")
    await server.webhooks.drain()
    events = await inbox.wait_for(4)
    assert all(isinstance(e, C2CMsgExtensionEvent) for e in events)
    by_seq = {e.seq: e for e in events if isinstance(e, C2CMsgExtensionEvent)}
    assert sorted(by_seq) == [1, 2, 3, 4]
    for e in by_seq.values():
        assert (e.from_account, e.to_account, e.msg_key) == ("alice", "bob", key)
    assert by_seq[1].operation is ExtensionOperation.SET
    assert by_seq[1].items == (ExtensionItem("like", "1", 1),)
    assert by_seq[2].operation is ExtensionOperation.DELETE
    assert by_seq[2].items == (ExtensionItem("like", "", 2),)
    assert by_seq[3].items == pulled.items and pulled.latest_seq == 3
    assert by_seq[4].operation is ExtensionOperation.CLEAR and by_seq[4].items == ()
    assert server.c2c_extension_meta("alice", "bob", key).clear_seq == 4
    assert_delivered(server, 4)


async def test_attribute_writes(setup: tuple[FakeTimServer, TimClient, Inbox]) -> None:
    server, tim, inbox = setup
    gid = server.create_group("@TGS#ATTRS", "Private")
    attr = tim.group_attr

    await attr.modify_group_attr(gid, {"a": "1", "b": "2"})
    await server.webhooks.drain()
    await attr.set_group_attr(gid, {"c": "3"})
    await server.webhooks.drain()
    await attr.delete_group_attr(gid, ["c"])
    await server.webhooks.drain()
    await attr.modify_group_attr(gid, {"d": "4"})
    await server.webhooks.drain()
    await attr.clear_group_attr(gid)
    await server.webhooks.drain()
    events = await inbox.wait_for(5)
    assert all(isinstance(e, GroupAttrChangedEvent) for e in events)
    got = [(e.operation, e.attrs) for e in events if isinstance(e, GroupAttrChangedEvent)]
    assert got == [
        (GroupAttrOperation.MODIFY, {"a": "1", "b": "2"}),
        (GroupAttrOperation.SET, {"c": "3"}),
        (GroupAttrOperation.DELETE, {"c": ""}),
        (GroupAttrOperation.MODIFY, {"d": "4"}),
        (GroupAttrOperation.CLEAR, {}),
    ]
    for e in events:
        assert isinstance(e, GroupAttrChangedEvent)
        assert (e.group_id, e.group_type, e.operator) == (gid, "Private", server.admin)
        assert e.event_time > 0
    assert await attr.get_group_attr(gid) == {}
    assert_delivered(server, 5)
    # EventTime a string, as in Tencent's sample.
    assert isinstance(server.webhook_deliveries[0].body["EventTime"], str)


async def test_reads_counters_and_refused_writes_send_nothing(
    setup: tuple[FakeTimServer, TimClient, Inbox],
) -> None:
    server, tim, inbox = setup
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.put_group_extensions(gid, seq, {"seeded": "x"})  # seeding helpers send nothing
    await tim.msg_ext.group_get_key_values(gid, seq)
    await tim.group_attr.get_group_attr(gid)
    await tim.group_counter.update_group_counter(gid, {"n": 1})
    await tim.group_counter.get_group_counter(gid)
    with pytest.raises(Exception, match="23004"):
        await tim.msg_ext.group_set_key_values(gid, seq + 1, {"k": "v"})
    with pytest.raises(Exception, match="10050"):
        await tim.group_attr.delete_group_attr(gid, ["missing"])
    await server.webhooks.drain()
    assert server.webhook_deliveries == [] and inbox.events == []


async def test_rest_faults_that_apply_still_send(
    setup: tuple[FakeTimServer, TimClient, Inbox],
) -> None:
    server, _, inbox = setup
    gid = server.create_group()
    seq = server.send_group_msg(gid)

    cmd = "openim_msg_ext_http_svc/group_set_key_values"
    server.faults.script(cmd, [Fault.DROP_AFTER_APPLY, Fault.http(502)])
    body = {
        "GroupId": gid,
        "MsgSeq": seq,
        "OperateType": 1,
        "ExtensionList": [{"Key": "k", "Value": "v"}],
    }
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            try:
                async with http.post(server.url(cmd), json=body) as response:
                    await response.read()
            except aiohttp.ClientError:
                pass
    await server.webhooks.drain()
    # The dropped answer was applied (one webhook); the 502 was not (none).
    assert [e.seq for e in inbox.events if isinstance(e, GroupMsgExtensionEvent)] == [1]
    assert server.group_extension_meta(gid, seq).latest_seq == 1


# --------------------------------------------------------------------------- delivery side


async def raw_receiver(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/"


async def test_deliveries_never_delay_the_rest_answer() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0})

    runner, url = await raw_receiver(stuck)
    try:
        async with FakeTimServer(webhook_url=url) as server:
            gid = server.create_group()
            seq = server.send_group_msg(gid)
            async with TimClient(
                server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
            ) as tim:
                results = await tim.msg_ext.group_set_key_values(gid, seq, {"k": "v"})
                assert results[0].ok
                await arrived.wait()
                # The REST answer came back while the webhook is still waiting for its answer.
                assert server.webhooks.pending == 1 and server.webhook_deliveries == []
                release.set()
                await server.webhooks.drain()
            (delivery,) = server.webhook_deliveries
            assert delivery.ok
            assert "Sign" not in delivery.query  # no token: no signature
    finally:
        release.set()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (lambda: web.Response(status=500, text="boom"), 500, "HTTP 500"),
        (lambda: web.json_response({"x": 1}, status=403), 403, "HTTP 403"),
        (lambda: web.Response(text="<html>ok</html>"), 200, "not JSON"),
    ],
)
async def test_failed_answers_are_recorded(
    answer: Callable[[], web.Response], status: int, error: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return answer()

    runner, url = await raw_receiver(handler)
    try:
        async with FakeTimServer(webhook_url=url, webhook_token=TOKEN) as server:
            gid = server.create_group()
            async with TimClient(
                server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
            ) as tim:
                await tim.group_attr.modify_group_attr(gid, {"a": "1"})
            await server.webhooks.drain()
            (delivery,) = server.webhook_deliveries
            assert not delivery.ok
            assert delivery.status == status and error in (delivery.error or "")
            assert delivery.command == "Group.CallbackAfterGroupAttrChanged"
    finally:
        await runner.cleanup()


async def test_a_receiver_slower_than_the_timeout_is_a_failed_delivery() -> None:
    release = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    runner, url = await raw_receiver(never)
    try:
        async with FakeTimServer(webhook_url=url) as server:
            assert server.webhooks.timeout == 2.0  # Tencent's backend waits 2 s
            server.webhooks.timeout = 0.05
            gid = server.create_group()
            async with TimClient(
                server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
            ) as tim:
                await tim.group_attr.modify_group_attr(gid, {"a": "1"})
            # (30 s: only so that a delivery without a timeout fails instead of hanging)
            await asyncio.wait_for(server.webhooks.drain(), 30)
            (delivery,) = server.webhook_deliveries
            assert delivery.status is None and "no answer within" in (delivery.error or "")
    finally:
        release.set()
        await runner.cleanup()


async def test_drop_and_duplicate_faults(setup: tuple[FakeTimServer, TimClient, Inbox]) -> None:
    server, tim, inbox = setup
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.webhooks.faults.script([WebhookFault.DROP, WebhookFault.DUPLICATE, None])
    for value in ("1", "2", "3"):
        await tim.msg_ext.group_set_key_values(gid, seq, {"k": value})
        await server.webhooks.drain()
    events = [e for e in inbox.events if isinstance(e, GroupMsgExtensionEvent)]
    assert [e.seq for e in events] == [2, 2, 3]  # 1 dropped, 2 twice
    assert events[0] == events[1] and events[0].dedupe_key == events[1].dedupe_key
    dropped = server.webhook_deliveries[0]
    assert dropped.fault is WebhookFault.DROP and not dropped.ok and dropped.status is None
    assert [d.fault for d in server.webhook_deliveries[1:]] == [WebhookFault.DUPLICATE] * 2 + [None]
    assert server.webhooks.faults.pending() == 0


async def test_delay_fault_reorders_deliveries(
    setup: tuple[FakeTimServer, TimClient, Inbox],
) -> None:
    server, tim, inbox = setup
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    server.webhooks.faults.script([WebhookFault.delay(3600), None])
    await tim.msg_ext.group_set_key_values(gid, seq, {"k": "1"})
    await tim.msg_ext.group_set_key_values(gid, seq, {"k": "2"})
    first = await inbox.wait_for(1)
    assert [e.seq for e in first if isinstance(e, GroupMsgExtensionEvent)] == [2]
    await server.webhooks.aclose()  # ends the delay: the held webhook goes out now
    events = await inbox.wait_for(2)
    assert [e.seq for e in events if isinstance(e, GroupMsgExtensionEvent)] == [2, 1]
    # The late delivery carries the body of its own write.
    late = events[1]
    assert isinstance(late, GroupMsgExtensionEvent) and late.items == (ExtensionItem("k", "1", 1),)


async def test_random_faults_are_seeded(setup: tuple[FakeTimServer, TimClient, Inbox]) -> None:
    server, tim, _ = setup
    gid = server.create_group()
    seq = server.send_group_msg(gid)
    plan = {WebhookFault.DROP: 0.3, WebhookFault.DUPLICATE: 0.3}
    runs: list[list[Any]] = []
    for _ in range(2):
        server.webhooks.faults.random(plan, seed=7)
        server.webhooks.deliveries.clear()
        for i in range(12):
            await tim.msg_ext.group_set_key_values(gid, seq, {"k": str(i)})
            await server.webhooks.drain()
        runs.append([d.fault for d in server.webhook_deliveries])
    assert runs[0] == runs[1]
    assert {WebhookFault.DROP, WebhookFault.DUPLICATE, None} <= set(runs[0])


def test_token_is_not_in_reprs() -> None:
    server = FakeTimServer(webhook_url="http://127.0.0.1:9/", webhook_token=TOKEN)
    for text in (repr(server), repr(server.webhooks), repr(server.webhooks.faults)):
        assert not any(TOKEN[i : i + 8] in text for i in range(len(TOKEN) - 7))
    assert "<redacted>" in repr(server.webhooks)


async def test_standalone_emulator_sends_webhooks() -> None:
    inbox = Inbox()
    receiver = WebhookReceiver(1400000000, token=TOKEN, handler=inbox)
    async with receiver.serve() as url:
        env = {**os.environ, "TIM_WEBHOOK_TOKEN": ""}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tim_async.testing",
            "--port",
            "0",
            "--webhook-url",
            url,
            "--webhook-token",
            TOKEN,
            "--group-messages",
            "1",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            assert proc.stdout is not None
            base_url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
            async with TimClient(
                1400000000,
                secret_key="805563148648527f29fb1e1e234b9446c009a22f8177dc463c4cca895bfeaa2f",
                base_url=base_url,
            ) as tim:
                await tim.call(
                    "group_open_http_svc/modify_group_attr",
                    {"GroupId": "@TGS#SEEDGROUP", "GroupAttr": [{"key": "a", "value": "1"}]},
                )
            (event,) = await inbox.wait_for(1)
            assert isinstance(event, GroupAttrChangedEvent) and event.attrs == {"a": "1"}
        finally:
            proc.terminate()
            await proc.wait()


async def test_no_delivery_record_without_the_request_log() -> None:
    inbox = Inbox()
    receiver = WebhookReceiver(1400000000, handler=inbox)
    async with (
        receiver.serve() as url,
        FakeTimServer(webhook_url=url, log_requests=False) as server,
    ):
        gid = server.create_group()
        async with TimClient(
            server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
        ) as tim:
            await tim.group_attr.modify_group_attr(gid, {"a": "1"})
        await server.webhooks.drain()
        assert len(await inbox.wait_for(1)) == 1
        assert server.webhook_deliveries == []  # a long-running emulator keeps none
