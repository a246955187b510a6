"""Secrets (the secret key, every UserSig) never appear in logs, exceptions or reprs.

A full run through every endpoint against the emulator on 127.0.0.1 with faults injected
(gateway errors, busy and rate-limit codes, dropped connections, slow answers past the timeout,
unreadable answers, an expired UserSig) plus servers that misbehave on purpose (an answer that
echoes the request URL and the UserSig back, a broken status line that makes aiohttp put the URL
in its exception). Every log record at DEBUG (root and ``tim_async``, formatted with
tracebacks), every exception (str, repr, attributes, the whole ``__cause__``/``__context__``
chain and the formatted traceback) and every repr (client, session, limiter, UserSig provider,
stats, endpoint namespaces, results, the emulator and its request log) is searched for the secret
key and for every UserSig the emulator received (raw and URL-encoded).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from _helpers import exception_texts
from aiohttp import web

from tim_async import errors
from tim_async.client import TimClient
from tim_async.models import CounterMode
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault

GID = "@TGS#SECRETS"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


@pytest.fixture
def captured_logs() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    sdk = logging.getLogger("tim_async")
    old = root.level, sdk.level
    root.addHandler(handler)
    sdk.addHandler(handler)
    sdk.propagate = False  # each record once
    root.setLevel(logging.DEBUG)
    sdk.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        sdk.removeHandler(handler)
        sdk.propagate = True
        root.setLevel(old[0])
        sdk.setLevel(old[1])


class Run:
    """Runs calls, keeping every result and exception."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.errors: list[BaseException] = []

    async def __call__(self, awaitable: Any) -> None:
        try:
            self.results.append(await awaitable)
        except errors.TimError as exc:
            self.errors.append(exc)


async def every_endpoint(tim: TimClient, run: Run, gid: str, seq: int, key: str) -> None:
    ext, attr, counter = tim.msg_ext, tim.group_attr, tim.group_counter
    await run(ext.group_set_key_values(gid, seq, {"a": "1", "b": "2"}))
    await run(ext.group_get_key_values(gid, seq))
    await run(ext.group_set_key_values(gid, seq, ["a"], operation="delete"))
    await run(ext.set_key_values("bob", key, {"x": "y"}, from_account="amy"))
    await run(ext.get_key_values("bob", key, from_account="amy"))
    await run(ext.set_key_values("bob", key, operation="clear"))
    await run(attr.modify_group_attr(gid, {"k": "v"}))
    await run(attr.set_group_attr(gid, {"k": "w", "j": "1"}))
    await run(attr.get_group_attr(gid))
    await run(attr.delete_group_attr(gid, ["j"]))
    await run(attr.clear_group_attr(gid))
    await run(counter.update_group_counter(gid, {"n": 2}, mode=CounterMode.INCREASE))
    await run(counter.update_group_counter(gid, {"n": 1}, mode=CounterMode.DECREASE))
    await run(counter.update_group_counter(gid, {"m": 5}))
    await run(counter.get_group_counter(gid))
    await run(counter.delete_group_counter(gid, ["m"]))
    await run(tim.call("group_open_http_svc/get_group_counter", {"GroupId": gid}))
    await run(tim.call("no_such_svc/no_such_command", {}))
    await run(tim.call("group_open_http_svc/get_group_counter", {"GroupId": "@TGS#GONE"}))


class Misbehaving:
    """A misbehaving server's address and the UserSigs it received (its request log)."""

    def __init__(self) -> None:
        self.url = ""
        self.sigs: list[str] = []


@pytest.fixture
async def echo_url() -> AsyncIterator[Misbehaving]:
    """A misbehaving server that echoes the request URL and the UserSig in every way it can:
    a 502 page, an error envelope, an ``ErrorInfo`` and a broken HTTP status line."""
    count = 0
    served = Misbehaving()

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal count
        count += 1
        url, sig = str(request.url), request.query.get("usersig", "")
        served.sigs.append(sig)
        if count % 3 == 0:
            return web.Response(status=502, text=f"<html>bad gateway for {url} sig {sig}</html>")
        return web.json_response(
            {"ActionStatus": "FAIL", "ErrorCode": 70009, "ErrorInfo": f"bad usersig {sig} in {url}"}
        )

    app = web.Application()
    app.router.add_post("/v4/{service}/{command}", handle)
    runner = web.AppRunner(app, access_log=None)  # our own server: its access log is not the SDK's
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    served.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield served
    await runner.cleanup()


@pytest.fixture
async def broken_http_url() -> AsyncIterator[Misbehaving]:
    """Answers a status line aiohttp cannot parse: its exception holds the full URL."""
    served = Misbehaving()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n")).decode()  # POST /v4/...?...usersig=... HTTP/1.1
        served.sigs += parse_qs(urlsplit(head.split(" ")[1]).query)["usersig"]
        writer.write(b"HTTP/1.1 999999 broken\r\nContent-Length: x\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    served.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield served
    server.close()
    await server.wait_closed()
    assert served.sigs  # it was reached


async def test_secrets_never_appear_in_logs_exceptions_or_reprs(
    captured_logs: Capture, echo_url: Misbehaving, broken_http_url: Misbehaving
) -> None:
    run = Run()
    reprs: list[str] = []
    sigs_sent: set[str] = set()
    policy = RetryPolicy(max_retries=2, backoff_base=0.01)
    faults = {
        Fault.http(502): 0.04,
        Fault.http(503): 0.04,
        Fault.code(10002): 0.04,
        Fault.code(60007): 0.04,
        Fault.code(70001): 0.04,
        Fault.DROP_BEFORE_APPLY: 0.04,
        Fault.DROP_AFTER_APPLY: 0.04,
        Fault.NON_JSON: 0.04,
        Fault.TRUNCATED_JSON: 0.04,
        Fault.slow(0.8): 0.02,
    }
    async with FakeTimServer(rate_limit=None, seed=1, group_attr_write_limit=None) as server:
        gid = server.create_group(GID)
        seq = server.send_group_msg(gid)
        key = server.send_c2c_msg("amy", "bob")
        server.faults.random(faults, seed=2)
        clients = [
            TimClient(
                server.sdkappid,
                server.admin,
                secret_key=TEST_SECRET_KEY,
                base_url=server.base_url,
                timeout=0.5,
                retry=policy,
                usersig_ttl=60,
            ),
            TimClient(  # a ready-made UserSig
                server.sdkappid,
                server.admin,
                usersig=server.usersig(),
                base_url=server.base_url,
                rate_limit=None,
                timeout=0.5,
                retry=policy,
            ),
            TimClient(  # signed with a wrong key: 70009 from the emulator
                server.sdkappid,
                secret_key=TEST_SECRET_KEY[::-1],
                base_url=server.base_url,
                retry=policy,
            ),
        ]
        for round_ in range(6):
            for tim in clients[: 3 if round_ == 0 else 2]:
                await every_endpoint(tim, run, gid, seq, key)
        for tim in clients:
            # Private reads, for want of public ones: the client's session, limiter and UserSig
            # provider are not handed out, yet their reprs reach tracebacks that show locals
            # (pytest --showlocals, error trackers), so they are searched too.
            reprs += [repr(tim), repr(tim._session), repr(tim._session._limiter)]
            reprs += [repr(tim._session._usersig), repr(tim.stats), str(tim.stats)]
            reprs += [repr(tim.msg_ext), repr(tim.group_attr), repr(tim.group_counter)]
            await tim.close()
        reprs += [repr(server), repr(server.emulator), repr(server.faults)]
        reprs += [repr(entry) for entry in server.requests]
        sigs_sent |= {entry.query["usersig"] for entry in server.requests}
        renewed = sum(tim.stats.retried_by_reason.get("usersig renewed", 0) for tim in clients)

    # Servers that echo the URL and the UserSig back, or break HTTP.
    for served in (echo_url, broken_http_url):
        async with TimClient(
            1400000000, secret_key=TEST_SECRET_KEY, base_url=served.url, retry=policy
        ) as tim:
            for _ in range(3):
                await run(tim.group_attr.get_group_attr(GID))
                await run(tim.group_counter.update_group_counter(GID, {"n": 1}, mode="Increase"))
            reprs += [repr(tim), repr(tim._session)]  # private read: see above
        sigs_sent |= set(served.sigs)  # every UserSig the server received
        assert served.sigs

    texts = captured_logs.texts + reprs + [repr(result) for result in run.results]
    for exc in run.errors:
        texts += exception_texts(exc)

    # The run did go through faults, retries, renewals and every kind of failure.
    kinds = {type(exc).__name__ for exc in run.errors}
    assert {"TimAuthError", "TimTransportError", "TimOutcomeUnknownError"} <= kinds, kinds
    assert renewed > 0
    assert any("retry" in text for text in captured_logs.texts)
    assert len(sigs_sent) >= 3 and len(run.results) > 100

    secrets = {TEST_SECRET_KEY, TEST_SECRET_KEY[::-1]}
    for sig in sigs_sent:
        secrets |= {sig, quote(sig, safe="")}
    leaks = [(secret[:12], text[:300]) for text in texts for secret in secrets if secret in text]
    assert leaks == []
    print(
        f"\nSECRETS checked {len(texts)} texts ({len(captured_logs.texts)} log texts, "
        f"{len(run.errors)} exceptions, {len(reprs)} reprs) for {len(secrets)} secrets: 0 leaks"
    )
