"""DNS failover between a region's main and backup domains, against the emulator on 127.0.0.1
reached through a resolver that knows two made-up host names (the main one fails to resolve)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tim_async import errors
from tim_async.limiter import UnlimitedLimiter
from tim_async.retry import RetryPolicy
from tim_async.session import Session
from tim_async.testing import FakeTimServer
from tim_async.usersig import UserSigSigner

MAIN = "main.tim-async.test"
BACKUP = "backup.tim-async.test"
CMD = "group_open_attr_http_svc/get_group_attr"


class Resolver(AbstractResolver):
    """``MAIN`` never resolves; ``BACKUP`` resolves to 127.0.0.1 (when ``backup_ok``).

    Each lookup takes a moment, so that many calls overlap in their failures."""

    def __init__(self, *, backup_ok: bool = True) -> None:
        self.backup_ok = backup_ok
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        await asyncio.sleep(0.001)
        if host == BACKUP and self.backup_ok:
            return [
                {
                    "hostname": host,
                    "host": "127.0.0.1",
                    "port": port,
                    "family": socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        raise OSError(socket.EAI_NONAME, f"Name or service not known: {host}")

    async def close(self) -> None:
        return None


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer() as srv:
        yield srv


def make_session(
    server: FakeTimServer, http: aiohttp.ClientSession, *, port: int | None = None, **kw: Any
) -> Session:
    kw.setdefault("retry", RetryPolicy(max_retries=3, backoff_base=0.01))
    port = server.port if port is None else port
    return Session(
        base_urls=[f"http://{MAIN}:{port}", f"http://{BACKUP}:{port}"],
        sdkappid=server.sdkappid,
        identifier=server.admin,
        usersig=UserSigSigner(server.sdkappid, server.admin, server.secret_key),
        limiter=UnlimitedLimiter(),
        timeout=10.0,
        http=http,
        **kw,
    )


async def test_many_overlapping_dns_failures_all_fail_over_to_the_backup(
    server: FakeTimServer,
) -> None:
    # 64 calls start on the main domain at once and all fail its DNS lookup: the first failure
    # switches to the backup, and the 63 others must not switch back (compare and set).
    resolver = Resolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        session = make_session(server, http)
        gid = server.create_group()
        try:
            results = await asyncio.gather(
                *(session.call(CMD, {"GroupId": gid}) for _ in range(64)),
                return_exceptions=True,
            )
        finally:
            await session.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert session.base_url.startswith(f"http://{BACKUP}")
    assert len(server.requests_for(CMD)) == 64
    assert resolver.lookups.count(MAIN) == 64  # each call failed once on the main domain


async def test_dns_failure_of_both_domains_names_both_and_the_attempts(
    server: FakeTimServer,
) -> None:
    connector = aiohttp.TCPConnector(resolver=Resolver(backup_ok=False), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        session = make_session(server, http)
        try:
            with pytest.raises(errors.TimTransportError) as info:
                await session.call(CMD, {"GroupId": server.create_group()})
        finally:
            await session.close()
    text = str(info.value)
    assert f"DNS lookup failed for {MAIN}, and for the backup domain {BACKUP} too" in text
    assert "after 4 attempts" in text
    assert info.value.attempts == 4
    assert server.requests == []


async def test_a_dns_failure_with_no_retry_left_names_the_backup_the_next_call_tries(
    server: FakeTimServer,
) -> None:
    connector = aiohttp.TCPConnector(resolver=Resolver(), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        session = make_session(server, http, retry=RetryPolicy(max_retries=0))
        try:
            with pytest.raises(errors.TimTransportError) as info:
                await session.call(CMD, {"GroupId": server.create_group()})
            assert session.base_url.startswith(f"http://{BACKUP}")
        finally:
            await session.close()
    text = str(info.value)
    assert f"DNS lookup failed for {MAIN}; the next call tries the backup domain {BACKUP}" in text
    assert "after 1 attempt" in text


async def test_a_backup_that_resolves_but_fails_is_named_as_tried(server: FakeTimServer) -> None:
    # The backup resolves to 127.0.0.1, but nothing listens on the port: the last failure is a
    # refused connection, and the error still tells that the main domain's DNS failed first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    connector = aiohttp.TCPConnector(resolver=Resolver(), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        session = make_session(server, http, port=closed_port)
        try:
            with pytest.raises(errors.TimTransportError) as info:
                await session.call(CMD, {"GroupId": server.create_group()})
        finally:
            await session.close()
    text = str(info.value)
    assert f"DNS lookup failed for {MAIN}; the backup domain {BACKUP} was tried too" in text
    assert "after 4 attempts" in text
