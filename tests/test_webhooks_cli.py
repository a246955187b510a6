"""``tim-async webhook listen`` and the demo's webhook round trip."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tim_async import TimClient
from tim_async.cli.demo_walk import _Checks
from tim_async.cli.webhook import DemoWebhooks, event_record
from tim_async.testing import FakeTimServer, WebhookFault
from tim_async.webhooks import parse_webhook, sign

TOKEN = "Cli-Listen-Token-0042"
APP = "1400000000"
GROUP = "Group.CallbackAfterGroupMsgExtension"
SAMPLE = (
    '{"CallbackCommand": "Group.CallbackAfterGroupMsgExtension","GroupId":"test","MsgSeq":10,'
    '"OperateType":1,"ExtensionList":[{"Key":"key2","Value":"value2","Seq":56},'
    '{"Key":"key3","Value":"12122","Seq":56}],"Seq":56,"EventTime":1764688294360}'
)


class Listener:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, stderr: list[str]) -> None:
        self.proc, self.url, self.stderr = proc, url, stderr

    async def stdout_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line.endswith(b"\n")
        record: dict[str, Any] = json.loads(line)
        return record

    async def stderr_line(self) -> str:
        assert self.proc.stderr is not None
        line = (await asyncio.wait_for(self.proc.stderr.readline(), 30)).decode()
        self.stderr.append(line)
        return line


async def start_listener(env: dict[str, str], *args: str) -> Listener:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tim_async",
        "webhook",
        "listen",
        "--port",
        "0",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    listener = Listener(proc, "", [])
    first = await listener.stderr_line()
    match = re.search(r"listening on (http://\S+) for SDKAppID (\d+)", first)
    assert match, first
    listener.url = match.group(1)
    return listener


async def stop(listener: Listener) -> tuple[int, str, bytes]:
    listener.proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(listener.proc.communicate(), 30)
    return listener.proc.returncode or 0, "".join(listener.stderr) + err.decode(), out


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
    env.update(extra)
    return env


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def signed(token: str = TOKEN, app: str = APP, command: str = GROUP) -> dict[str, str]:
    now = str(int(time.time()))
    return {
        "SdkAppid": app,
        "CallbackCommand": command,
        "contenttype": "json",
        "Sign": sign(token, now),
        "RequestTime": now,
    }


async def test_listen_prints_verified_events_and_refusals(http: aiohttp.ClientSession) -> None:
    listener = await start_listener(
        base_env(TIM_SDKAPPID=APP, TIM_WEBHOOK_TOKEN=TOKEN), "--path", "/tim"
    )
    try:
        assert listener.url.endswith("/tim")
        assert "Sign checked" in listener.stderr[0]
        async with FakeTimServer(webhook_url=listener.url, webhook_token=TOKEN) as server:
            gid = server.create_group("g1")
            seq = server.send_group_msg(gid)
            key = server.send_c2c_msg("alice", "bob")
            async with TimClient(
                server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
            ) as tim:
                await tim.msg_ext.group_set_key_values(gid, seq, {"like": "1"})
                first = await listener.stdout_line()
                await tim.msg_ext.set_key_values("bob", key, ["x"], operation="delete")
                second = await listener.stdout_line()
                await tim.group_attr.modify_group_attr(gid, {"topic": "t"})
                third = await listener.stdout_line()
            await server.webhooks.drain()
            assert all(d.ok for d in server.webhook_deliveries)
        assert first == {
            "command": GROUP,
            "dedupe_key": f"{GROUP}|g1|{seq}|1",
            "group_id": "g1",
            "msg_seq": seq,
            "operation": "set",
            "items": [{"key": "like", "value": "1", "seq": 1}],
            "seq": 1,
            "event_time": first["event_time"],
        }
        assert second["command"] == "C2C.CallbackAfterC2CMsgExtension"
        assert (second["from_account"], second["to_account"], second["msg_key"]) == (
            "alice",
            "bob",
            key,
        )
        assert second["operation"] == "delete" and second["items"] == [
            {"key": "x", "value": "", "seq": 1}
        ]
        assert third["command"] == "Group.CallbackAfterGroupAttrChanged"
        assert third["attrs"] == {"topic": "t"} and third["operation"] == "modify"
        assert third["operator"] == "administrator" and third["group_type"] == "Public"

        # Refused requests: one line each on stderr, nothing on stdout.
        for params, status in (
            (signed(token="forged"), 401),
            (signed(app="1400000001"), 403),
        ):
            async with http.post(listener.url, params=params, data=SAMPLE) as response:
                assert response.status == status
            line = await listener.stderr_line()
            assert line.startswith("tim-async: webhook ") and f"HTTP {status}" in line
    finally:
        code, err, out = await stop(listener)
    assert code == 0 and "stopped" in err
    assert out == b""  # no event printed for the refused requests
    for text in (err, out.decode()):
        assert not any(TOKEN[i : i + 8] in text for i in range(len(TOKEN) - 7))


async def test_listen_without_token_checks_only_the_app(http: aiohttp.ClientSession) -> None:
    listener = await start_listener(base_env(TIM_SDKAPPID=APP))
    try:
        assert "TIM_WEBHOOK_TOKEN unset" in listener.stderr[0]
        query = {"SdkAppid": APP, "CallbackCommand": GROUP}
        async with http.post(listener.url, params=query, data=SAMPLE) as response:
            assert response.status == 200
        record = await listener.stdout_line()
        assert record["seq"] == 56 and record["group_id"] == "test"
        async with http.post(
            listener.url, params={**query, "SdkAppid": "1"}, data=SAMPLE
        ) as response:
            assert response.status == 403
        assert "HTTP 403" in await listener.stderr_line()
    finally:
        code, _, _ = await stop(listener)
    assert code == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--token", TOKEN], {"TIM_SDKAPPID": APP}, "unrecognized arguments"),
        ([], {}, "the SDKAppID is needed"),
        (["--sdkappid", "abc"], {}, "positive integer"),
        (["--port", "70000"], {"TIM_SDKAPPID": APP}, "0..65535"),
    ],
)
def test_bad_usage_exits_2(args: list[str], env: dict[str, str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tim_async", "webhook", "listen", *args],
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert TOKEN not in proc.stderr or args[:1] == ["--token"]


def test_event_record_is_plain_json() -> None:
    record = event_record(parse_webhook(GROUP, SAMPLE))
    assert json.loads(json.dumps(record)) == record
    assert record["items"][1] == {"key": "key3", "value": "12122", "seq": 56}
    assert record["operation"] == "set"


# --------------------------------------------------------------------------- demo


def test_demo_checks_its_webhooks() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tim_async", "demo", "--messages", "100"],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    arrived = re.search(
        r"\[ok  \] every write's webhook arrived, verified.*\((\d+) webhooks "
        r"received for (\d+) applied writes\)",
        proc.stdout,
    )
    assert arrived and int(arrived.group(1)) == int(arrived.group(2)) > 8, proc.stdout
    assert "[ok  ] webhooks carry the Seq of each REST answer" in proc.stdout


async def test_demo_round_trip_fails_when_a_webhook_is_lost() -> None:
    out = io.StringIO()
    checks = _Checks(out)
    async with (
        FakeTimServer() as server,
        TimClient(server.sdkappid, secret_key=server.secret_key, base_url=server.base_url) as tim,
    ):
        trip = await DemoWebhooks.start(server, checks)
        server.webhooks.faults.script([None, WebhookFault.DROP])
        await trip.finish(tim)
    assert checks.passed == 0 and len(checks.failed) == 2, out.getvalue()
    assert server.webhooks.url is None
