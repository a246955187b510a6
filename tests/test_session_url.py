"""The request URL the session builds (from cached parts of the base URL): every kind of base URL
reaches the right server and path with the right query, each request with its own random."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tim_async.client import TimClient
from tim_async.usersig import verify_usersig

SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
APPID = 1400000000
API = "svc_a/cmd_b"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class Seen:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query)))
        return web.json_response({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""})


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Seen, int, int | None]]:
    """One app on 127.0.0.1 and (if the machine has it) on ::1, at / and under /proxy/."""
    seen = Seen()
    app = web.Application()
    app.router.add_post("/v4/{service}/{command}", seen.handle)
    app.router.add_post("/proxy/v4/{service}/{command}", seen.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    v4 = web.TCPSite(runner, "127.0.0.1", 0)
    await v4.start()
    port4 = runner.addresses[0][1]
    port6 = None
    if _ipv6_loopback():
        v6 = web.TCPSite(runner, "::1", 0)
        await v6.start()
        port6 = runner.addresses[1][1]
    yield seen, port4, port6
    await runner.cleanup()


async def _two_calls(base_url: str, **kw: Any) -> None:
    async with TimClient(APPID, secret_key=SECRET, base_url=base_url, **kw) as tim:
        await tim.call(API, {"A": 1})
        await tim.call(API, {"A": 2})


def _check(seen: Seen, path: str, identifier: str = "administrator") -> None:
    (path1, q1), (path2, q2) = seen.requests
    assert path1 == path2 == path
    for query in (q1, q2):
        assert set(query) == {"sdkappid", "identifier", "usersig", "random", "contenttype"}
        assert query["sdkappid"] == str(APPID)
        assert query["identifier"] == identifier
        assert query["contenttype"] == "json"
        assert 0 <= int(query["random"]) <= 2**32 - 1
        fields, valid = verify_usersig(query["usersig"], SECRET)
        assert valid and fields["TLS.identifier"] == identifier
    assert q1["random"] != q2["random"]
    seen.requests.clear()


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_an_ipv4_base_url(servers: tuple[Seen, int, int | None], suffix: str) -> None:
    seen, port4, _ = servers
    await _two_calls(f"http://127.0.0.1:{port4}{suffix}", identifier="admin one+two/é")
    _check(seen, f"/v4/{API}", identifier="admin one+two/é")


async def test_an_ipv6_base_url(servers: tuple[Seen, int, int | None]) -> None:
    seen, _, port6 = servers
    if port6 is None:
        pytest.skip("no IPv6 loopback on this machine")
    await _two_calls(f"http://[::1]:{port6}")
    _check(seen, f"/v4/{API}")


async def test_a_base_url_with_a_path(servers: tuple[Seen, int, int | None]) -> None:
    seen, port4, _ = servers
    await _two_calls(f"http://127.0.0.1:{port4}/proxy/")
    _check(seen, f"/proxy/v4/{API}")
