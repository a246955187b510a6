"""No part of a UserSig reaches an exception or a log record, whatever shape the echo takes.

An aiohttp server on 127.0.0.1 echoes the request's UserSig back in forms the ``usersig=...``
pattern does not match (a JSON field ``"usersig": "..."``), cut by the 200-byte excerpt limit or
by the answer itself, and after many renewals of the UserSig during the call."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from tim_async import errors
from tim_async._redact import REDACTED, Redactor
from tim_async.limiter import UnlimitedLimiter
from tim_async.retry import RetryPolicy
from tim_async.session import Session
from tim_async.usersig import UserSigProvider

FRAGMENT = 8


def leaks(texts: Iterable[str], sig: str) -> list[str]:
    """Every 8-character run of ``sig`` (raw or URL-encoded) found in ``texts``."""
    found = []
    for form in {sig, quote(sig, safe="")}:
        runs = {form[i : i + FRAGMENT] for i in range(len(form) - FRAGMENT + 1)}
        found += [run for text in texts for run in runs if run in text]
    return found


def strings(value: Any) -> list[str]:
    """Every string (keys included) in decoded JSON."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(k) + strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


class Renewable(UserSigProvider):
    """A UserSig that looks like a real one (URL-safe base64, ~300 characters) and changes on
    every renewal."""

    def __init__(self) -> None:
        self.sig = self._new()
        self.renewals = 0

    @staticmethod
    def _new() -> str:
        return "eJw" + secrets.token_urlsafe(225).replace("-", "*")

    def current(self) -> str:
        return self.sig

    def renew(self) -> bool:
        self.sig = self._new()
        self.renewals += 1
        return True


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"release": asyncio.Event(), "renew_seen": set()}

    async def cut_excerpt(request: web.Request) -> web.StreamResponse:
        # Not the envelope: the SDK shows a 200-byte excerpt, which cuts the echoed UserSig.
        sig = request.query["usersig"]
        text = '{"error": "upstream failed", "padding": "' + "x" * 60 + '", "usersig": "'
        return web.Response(status=502, text=text + sig + '"}', content_type="application/json")

    async def cut_info(request: web.Request) -> web.StreamResponse:
        # The envelope, with the UserSig in a field and its first 121 characters in ErrorInfo.
        sig = request.query["usersig"]
        return web.json_response(
            {
                "ActionStatus": "FAIL",
                "ErrorCode": 10004,
                "ErrorInfo": f'invalid "usersig": "{sig[:121]}',
                "usersig": sig,
                "Echo": {"list": [quote(sig, safe="")[:50]]},
            }
        )

    async def renew(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body["i"] not in state["renew_seen"]:
            state["renew_seen"].add(body["i"])
            return web.json_response(
                {"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "UserSig expired"}
            )
        return web.json_response({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""})

    async def slow_echo(request: web.Request) -> web.StreamResponse:
        sig = request.query["usersig"]
        state["slow_sig"] = sig
        state["slow_started"].set()
        await state["release"].wait()
        return web.json_response(
            {"ActionStatus": "FAIL", "ErrorCode": 10004, "ErrorInfo": f'"usersig": "{sig}"'}
        )

    async def at_the_edge(request: web.Request) -> web.StreamResponse:
        # The echoed UserSig starts 5 characters before the excerpt's 200-character end.
        pad = "é" if request.path.endswith("_wide") else "y"
        return web.Response(status=502, text=pad * 195 + request.query["usersig"])

    state["slow_started"] = asyncio.Event()
    app = web.Application()
    app.router.add_post("/v4/a/at_the_edge", at_the_edge)
    app.router.add_post("/v4/a/at_the_edge_wide", at_the_edge)
    app.router.add_post("/v4/a/cut_excerpt", cut_excerpt)
    app.router.add_post("/v4/a/cut_info", cut_info)
    app.router.add_post("/v4/a/renew", renew)
    app.router.add_post("/v4/a/slow_echo", slow_echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", state
    state["release"].set()
    await runner.cleanup()


def make_session(url: str, provider: UserSigProvider, **kw: Any) -> Session:
    return Session(
        base_urls=[url],
        sdkappid=1400000000,
        identifier="administrator",
        usersig=provider,
        limiter=UnlimitedLimiter(),
        retry=kw.pop("retry", RetryPolicy(max_retries=1, backoff_base=0.001)),
        timeout=10.0,
        **kw,
    )


async def test_an_echo_cut_by_the_excerpt_limit_is_redacted(
    echo_server: tuple[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = echo_server
    caplog.set_level(logging.DEBUG, logger="tim_async")
    provider = Renewable()
    session = make_session(url, provider)
    try:
        with pytest.raises(errors.TimTransportError) as info:
            await session.call("a/cut_excerpt", {})
    finally:
        await session.close()
    err = info.value
    assert err.status == 502 and "upstream failed" in err.body_excerpt
    assert "<redacted>" in err.body_excerpt
    retry_records = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retry_records) == 1  # the DEBUG record of the one retry
    texts = [str(err), repr(err), err.body_excerpt, *retry_records]
    assert leaks(texts, provider.sig) == []


@pytest.mark.parametrize("pad", ["y", "é"])
async def test_an_echo_at_the_end_of_the_excerpt_is_redacted_before_the_cut(
    echo_server: tuple[str, dict[str, Any]], pad: str
) -> None:
    # Cut first and the excerpt would end in the UserSig's first 5 characters, too short for
    # a fragment check to find; redacted first, the cut falls inside the marker.
    url, _ = echo_server
    provider = Renewable()
    session = make_session(url, provider, retry=RetryPolicy(max_retries=0))
    try:
        with pytest.raises(errors.TimTransportError) as info:
            await session.call("a/at_the_edge" + ("_wide" if pad != "y" else ""), {})
    finally:
        await session.close()
    excerpt = info.value.body_excerpt
    assert excerpt.startswith(pad * 195) and len(excerpt) == 200
    assert provider.sig[:5] not in excerpt


async def test_an_echo_in_a_json_field_and_a_cut_one_in_error_info_are_redacted(
    echo_server: tuple[str, dict[str, Any]],
) -> None:
    url, _ = echo_server
    provider = Renewable()
    session = make_session(url, provider)
    try:
        with pytest.raises(errors.TimInvalidParameterError) as info:
            await session.call("a/cut_info", {})
    finally:
        await session.close()
    err = info.value
    assert err.info.startswith('invalid "usersig": "<redacted>')
    assert err.body["usersig"] == "<redacted>"
    texts = [str(err), repr(err), err.info, *strings(dict(err.body))]
    assert leaks(texts, provider.sig) == []


async def test_the_usersig_a_call_used_is_redacted_after_many_renewals(
    echo_server: tuple[str, dict[str, Any]],
) -> None:
    # A call waits for its answer while 20 other calls each get 70001 and renew the UserSig:
    # the echo of the UserSig the first call sent is still redacted.
    url, state = echo_server
    provider = Renewable()
    session = make_session(url, provider)
    try:
        slow = asyncio.create_task(session.call("a/slow_echo", {}))
        await state["slow_started"].wait()
        for i in range(20):
            await session.call("a/renew", {"i": i})
        assert provider.renewals == 20
        state["release"].set()
        with pytest.raises(errors.TimInvalidParameterError) as info:
            await slow
    finally:
        await session.close()
    err = info.value
    sig = state["slow_sig"]
    assert sig != provider.sig
    assert err.info == '"usersig": "<redacted>"'
    assert leaks([str(err), repr(err), *strings(dict(err.body))], sig) == []


def test_the_redactor_remembers_only_its_last_keep_usersigs() -> None:
    # A long-lived client renews its UserSig every few hours: the remembered ones stay bounded,
    # and a call still redacts the ones it sent itself (passed as ``sigs``).
    redactor = Redactor(keep=2)
    first, second, third = (Renewable._new() for _ in range(3))
    for sig in (first, second, third):
        redactor.remember(sig)
    assert redactor.redact(f"a {third} b") == f"a {REDACTED} b"
    assert redactor.redact(f"a {second} b") == f"a {REDACTED} b"
    assert redactor.redact(f"a {first} b") == f"a {first} b"  # dropped out
    assert redactor.redact(f"a {first} b", [first]) == f"a {REDACTED} b"


def test_a_remembered_usersig_shorter_than_a_fragment_is_cut_from_short_text() -> None:
    # A UserSig under 8 characters is removed where it appears whole, also from a text that is
    # itself shorter than 8 characters (an error message such as "xabc12").
    redactor = Redactor()
    redactor.remember("abc12")
    assert redactor.redact("xabc12") == f"x{REDACTED}"
    assert redactor.redact("xxabc12x") == f"xx{REDACTED}x"
    assert redactor.redact("xabc1") == "xabc1"
