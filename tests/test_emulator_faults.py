"""Fault injection in the emulator, as a raw aiohttp client sees it on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tim_async import TimClient
from tim_async.errors import TimAPIError
from tim_async.retry import RetryPolicy
from tim_async.testing import FakeTimServer, Fault

UPDATE_COUNTER = "group_open_http_svc/update_group_counter"
GET_COUNTER = "group_open_http_svc/get_group_counter"
GROUP_GET_KV = "openim_msg_ext_http_svc/group_get_key_values"
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(seed=3) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def gid(server: FakeTimServer) -> str:
    gid = server.create_group()
    server.set_group_counters(gid, {"n": 0})
    return gid


async def post(
    http: aiohttp.ClientSession, server: FakeTimServer, command: str, body: Any, **kw: Any
) -> tuple[int, str, bytes]:
    async with http.post(server.url(command), data=orjson.dumps(body), **kw) as resp:
        return resp.status, resp.content_type, await resp.read()


def increment(gid: str) -> dict[str, Any]:
    return {"GroupId": gid, "GroupCounter": [{"Key": "n", "Value": 1}], "Mode": "Increase"}


async def test_http_fault(server: FakeTimServer, http: aiohttp.ClientSession, gid: str) -> None:
    server.faults.script(UPDATE_COUNTER, [Fault.http(502), Fault.http(503)])
    for status in (502, 503):
        got, content_type, body = await post(http, server, UPDATE_COUNTER, increment(gid))
        assert (got, content_type) == (status, "text/html")
        assert str(status).encode() in body
    assert server.group_counters(gid) == {"n": 0}  # untouched
    entry = server.requests[-1]
    assert (entry.error_code, entry.http_status, entry.fault) == (None, 503, Fault.http(503))
    status, _, body = await post(http, server, UPDATE_COUNTER, increment(gid))
    assert status == 200 and orjson.loads(body)["GroupCounter"] == [{"Key": "n", "Value": 1}]


async def test_code_fault(server: FakeTimServer, http: aiohttp.ClientSession, gid: str) -> None:
    server.faults.script(UPDATE_COUNTER, [Fault.code(10002), Fault.code(60007, "busy")])
    status, content_type, body = await post(http, server, UPDATE_COUNTER, increment(gid))
    assert (status, content_type) == (200, "application/json")
    assert orjson.loads(body) == {
        "ActionStatus": "FAIL",
        "ErrorInfo": "injected fault: ErrorCode 10002",
        "ErrorCode": 10002,
    }
    _, _, body = await post(http, server, UPDATE_COUNTER, increment(gid))
    assert orjson.loads(body) == {"ActionStatus": "FAIL", "ErrorInfo": "busy", "ErrorCode": 60007}
    assert server.group_counters(gid) == {"n": 0}
    assert [r.error_code for r in server.requests] == [10002, 60007]
    assert [r.http_status for r in server.requests] == [200, 200]


async def test_drop_before_apply(
    server: FakeTimServer, http: aiohttp.ClientSession, gid: str
) -> None:
    # warm the pool so the drop hits a reused keep-alive connection, then a fresh one
    assert (await post(http, server, GET_COUNTER, {"GroupId": gid}))[0] == 200
    server.faults.script(UPDATE_COUNTER, [Fault.DROP_BEFORE_APPLY, Fault.DROP_BEFORE_APPLY])
    for _ in range(2):
        with pytest.raises(DISCONNECTED):
            await post(http, server, UPDATE_COUNTER, increment(gid))
    assert server.group_counters(gid) == {"n": 0}
    entry = server.requests[-1]
    assert (entry.error_code, entry.http_status, entry.fault) == (
        None,
        None,
        Fault.DROP_BEFORE_APPLY,
    )
    assert entry.body == increment(gid)
    # the session recovers on a new connection
    status, _, body = await post(http, server, UPDATE_COUNTER, increment(gid))
    assert status == 200 and orjson.loads(body)["ErrorCode"] == 0
    assert server.group_counters(gid) == {"n": 1}


async def test_drop_after_apply(
    server: FakeTimServer, http: aiohttp.ClientSession, gid: str
) -> None:
    server.faults.script(UPDATE_COUNTER, [Fault.DROP_AFTER_APPLY])
    with pytest.raises(DISCONNECTED):
        await post(http, server, UPDATE_COUNTER, increment(gid))
    assert server.group_counters(gid) == {"n": 1}  # applied although no answer came
    entry = server.requests[-1]
    assert (entry.error_code, entry.http_status, entry.fault) == (0, None, Fault.DROP_AFTER_APPLY)


async def test_drop_with_a_fresh_session_per_request(server: FakeTimServer, gid: str) -> None:
    server.faults.script(GET_COUNTER, [Fault.DROP_BEFORE_APPLY, Fault.DROP_AFTER_APPLY])
    for _ in range(2):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(DISCONNECTED):
                await post(session, server, GET_COUNTER, {"GroupId": gid})


async def test_slow_fault(server: FakeTimServer, http: aiohttp.ClientSession, gid: str) -> None:
    server.faults.script(UPDATE_COUNTER, [Fault.slow(0.6), Fault.slow(0.15)])
    with pytest.raises(asyncio.TimeoutError):
        await post(
            http, server, UPDATE_COUNTER, increment(gid), timeout=aiohttp.ClientTimeout(total=0.1)
        )
    assert server.group_counters(gid) == {"n": 1}  # applied before the delay
    start = time.monotonic()
    status, _, body = await post(http, server, UPDATE_COUNTER, increment(gid))
    assert time.monotonic() - start >= 0.15
    assert status == 200 and orjson.loads(body)["GroupCounter"] == [{"Key": "n", "Value": 2}]
    assert server.requests[-1].fault == Fault.slow(0.15)


async def test_close_answers_slow_requests_at_once() -> None:
    async with FakeTimServer() as srv, aiohttp.ClientSession() as session:
        gid = srv.create_group()
        srv.set_group_counters(gid, {"n": 4})
        srv.faults.script(GET_COUNTER, [Fault.slow(30)])
        task = asyncio.create_task(post(session, srv, GET_COUNTER, {"GroupId": gid}))
        for _ in range(500):  # until the request has arrived
            if srv.requests:
                break
            await asyncio.sleep(0.01)
        start = time.monotonic()
        await srv.close()
        assert time.monotonic() - start < 10.0  # not the 30 s delay
        # the answer was applied before the delay: closing delivers it, it is not lost
        status, _, body = await asyncio.wait_for(task, 5)
        assert status == 200
        assert orjson.loads(body)["GroupCounter"] == [{"Key": "n", "Value": 4}]


@pytest.mark.parametrize(
    "code", [10056, 70169, 70500, 60004, 60005, 60025, 60026, 60027, 60028, 10002, 99999]
)
async def test_code_fault_answers_any_code(
    server: FakeTimServer, http: aiohttp.ClientSession, gid: str, code: int
) -> None:
    server.faults.script(UPDATE_COUNTER, [Fault.code(code), Fault.code(code, "custom words")])
    for info in (f"injected fault: ErrorCode {code}", "custom words"):
        status, content_type, body = await post(http, server, UPDATE_COUNTER, increment(gid))
        assert (status, content_type) == (200, "application/json")
        assert orjson.loads(body) == {"ActionStatus": "FAIL", "ErrorInfo": info, "ErrorCode": code}
        entry = server.requests[-1]
        assert (entry.error_code, entry.http_status) == (code, 200)
    assert server.group_counters(gid) == {"n": 0}  # not applied
    # the SDK sees the code (which class it maps to is the session's business)
    server.faults.script(GET_COUNTER, [Fault.code(code)])
    async with TimClient(
        server.sdkappid,
        secret_key=server.secret_key,
        base_url=server.base_url,
        retry=RetryPolicy(max_retries=0),
    ) as tim:
        with pytest.raises(TimAPIError) as raised:
            await tim.group_counter.get_group_counter(gid)
    assert raised.value.code == code


async def test_non_json_fault(server: FakeTimServer, http: aiohttp.ClientSession, gid: str) -> None:
    server.faults.script(UPDATE_COUNTER, [Fault.NON_JSON])
    status, content_type, body = await post(http, server, UPDATE_COUNTER, increment(gid))
    assert (status, content_type) == (200, "text/html")
    assert body.startswith(b"<html>")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert server.group_counters(gid) == {"n": 0}
    assert (server.requests[-1].error_code, server.requests[-1].http_status) == (None, 200)


async def test_truncated_json_fault(
    server: FakeTimServer, http: aiohttp.ClientSession, gid: str
) -> None:
    seq = server.send_group_msg(gid)
    server.put_group_extensions(gid, seq, {f"k{i}": "v" * 10 for i in range(10)})
    pull = {"GroupId": gid, "MsgSeq": seq}
    _, _, full = await post(http, server, GROUP_GET_KV, pull)
    server.faults.script(GROUP_GET_KV, [Fault.TRUNCATED_JSON])
    server.faults.script(UPDATE_COUNTER, [Fault.TRUNCATED_JSON])
    status, content_type, body = await post(http, server, GROUP_GET_KV, pull)
    assert (status, content_type) == (200, "application/json")
    assert body == full[: len(full) // 2]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    # a write is applied before its answer is cut
    _, _, body = await post(http, server, UPDATE_COUNTER, increment(gid))
    assert server.group_counters(gid) == {"n": 1}
    assert server.requests[-1].error_code == 0


async def test_script_queue_semantics(
    server: FakeTimServer, http: aiohttp.ClientSession, gid: str
) -> None:
    faults = server.faults
    faults.script(GET_COUNTER, [Fault.http(502), None, Fault.code(10002)])
    faults.script("/v4/" + GET_COUNTER, [Fault.http(504)])  # appends; path forms accepted
    assert faults.pending(GET_COUNTER) == 4
    assert faults.pending() == 4
    # other commands are not affected
    assert (await post(http, server, UPDATE_COUNTER, increment(gid)))[0] == 200
    results = []
    for _ in range(5):
        status, _, body = await post(http, server, GET_COUNTER, {"GroupId": gid})
        results.append(orjson.loads(body)["ErrorCode"] if status == 200 else status)
    assert results == [502, 0, 10002, 504, 0]
    assert faults.pending() == 0
    faults.script(GET_COUNTER, [Fault.http(500)])
    faults.clear()
    assert faults.pending() == 0
    assert (await post(http, server, GET_COUNTER, {"GroupId": gid}))[0] == 200
    assert "scripted=0" in repr(faults)
    with pytest.raises(TypeError):
        faults.script(GET_COUNTER, ["502"])  # type: ignore[list-item]


async def test_random_faults_are_seeded_and_filtered(
    http: aiohttp.ClientSession,
) -> None:
    async def run(seed: int) -> list[int]:
        async with FakeTimServer(rate_limit=None) as srv:
            gid = srv.create_group()
            srv.faults.random(
                {Fault.code(10002): 0.3, Fault.http(502): 0.2}, seed=seed, commands=[GET_COUNTER]
            )
            outcomes = []
            for _ in range(60):
                status, _, body = await post(http, srv, GET_COUNTER, {"GroupId": gid})
                outcomes.append(orjson.loads(body)["ErrorCode"] if status == 200 else status)
            # commands outside the filter never fail
            for _ in range(20):
                assert (await post(http, srv, UPDATE_COUNTER, increment(gid)))[0] == 200
            return outcomes

    first = await run(seed=11)
    assert first == await run(seed=11)
    assert first != await run(seed=12)
    assert set(first) == {0, 10002, 502}
    assert 5 <= first.count(10002) <= 35 and 2 <= first.count(502) <= 25


async def test_scripted_faults_come_before_random(
    server: FakeTimServer, http: aiohttp.ClientSession, gid: str
) -> None:
    server.faults.random({Fault.http(503): 1.0})
    server.faults.script(GET_COUNTER, [None, Fault.code(10002)])
    statuses = []
    for _ in range(3):
        status, _, body = await post(http, server, GET_COUNTER, {"GroupId": gid})
        statuses.append(orjson.loads(body)["ErrorCode"] if status == 200 else status)
    assert statuses == [0, 10002, 503]
    server.faults.clear()
    assert (await post(http, server, GET_COUNTER, {"GroupId": gid}))[0] == 200


async def test_faults_before_apply_skip_the_rate_window(
    server: FakeTimServer, http: aiohttp.ClientSession, gid: str
) -> None:
    server.rate_limit = 2
    server.faults.script(GET_COUNTER, [Fault.http(502), Fault.code(10002), Fault.NON_JSON])
    for _ in range(3):
        await post(http, server, GET_COUNTER, {"GroupId": gid})
    codes = []
    for _ in range(3):
        _, _, body = await post(http, server, GET_COUNTER, {"GroupId": gid})
        codes.append(orjson.loads(body)["ErrorCode"])
    assert codes == [0, 0, 60007]
    # a fault that applies the command goes through the rate check like any request
    server.faults.script(UPDATE_COUNTER, [Fault.slow(0), Fault.slow(0), Fault.slow(0)])
    codes = []
    for _ in range(3):
        _, _, body = await post(http, server, UPDATE_COUNTER, increment(gid))
        codes.append(orjson.loads(body)["ErrorCode"])
    assert codes == [0, 0, 60007]


def test_fault_values() -> None:
    assert Fault.http(502) == Fault.http(502)
    assert len({Fault.http(502), Fault.http(502), Fault.DROP_AFTER_APPLY}) == 2
    assert repr(Fault.http(502)) == "Fault.http(502)"
    assert repr(Fault.code(10002)) == "Fault.code(10002)"
    assert repr(Fault.slow(1.5)) == "Fault.slow(1.5)"
    assert repr(Fault.DROP_BEFORE_APPLY) == "Fault.DROP_BEFORE_APPLY"
    assert repr(Fault.TRUNCATED_JSON) == "Fault.TRUNCATED_JSON"
    assert not Fault.http(502).applies and not Fault.NON_JSON.applies
    assert Fault.DROP_AFTER_APPLY.applies and Fault.slow(1).applies
    for bad in (200, 99, 600, "502", True):
        with pytest.raises(ValueError):
            Fault.http(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault.code(0)
    with pytest.raises(ValueError):
        Fault.slow(-1)


def test_random_plan_validation() -> None:
    server = FakeTimServer()
    with pytest.raises(ValueError):
        server.faults.random({Fault.http(502): 0.7, Fault.NON_JSON: 0.4})
    with pytest.raises(ValueError):
        server.faults.random({Fault.http(502): 1.5})
    with pytest.raises(TypeError):
        server.faults.random({"502": 0.5})  # type: ignore[dict-item]


async def until(condition: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_open_connections_counts_tcp_connections_at_the_server() -> None:
    srv = FakeTimServer()
    assert srv.open_connections == 0  # not started
    async with srv:
        assert srv.open_connections == 0
        streams = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(3)]
        await until(lambda: srv.open_connections == 3)
        _, writer = streams.pop()
        writer.close()
        await writer.wait_closed()
        await until(lambda: srv.open_connections == 2)
        # an aiohttp client keeps its connection alive between requests, closes it at the end
        gid = srv.create_group()
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                await post(session, srv, GET_COUNTER, {"GroupId": gid})
            assert srv.open_connections == 3
        await until(lambda: srv.open_connections == 2)
        # a dropped connection is gone from the count
        srv.faults.script(GET_COUNTER, [Fault.DROP_BEFORE_APPLY])
        async with aiohttp.ClientSession() as session:
            with pytest.raises(DISCONNECTED):
                await post(session, srv, GET_COUNTER, {"GroupId": gid})
            await until(lambda: srv.open_connections == 2)
        for _, writer in streams:
            writer.close()
            await writer.wait_closed()
        await until(lambda: srv.open_connections == 0)
    assert srv.open_connections == 0
