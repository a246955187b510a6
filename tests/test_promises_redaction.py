"""No fragment of a secret survives: README "Secrets" checked against servers that echo them.

"The secret key and UserSigs never appear in repr(), in log records (...) or in exception
messages". A redaction that hides only part of a secret still leaks it, so this checks that no
substring of 8 or more characters of the secret key or of any UserSig sent (raw, and URL-encoded
as it travels) appears in any text the SDK produces: every log record at DEBUG (message, args,
formatted traceback), every exception (str, repr, args, attributes such as ``.info``, ``.body``
and ``.body_excerpt``, the whole ``__cause__``/``__context__`` chain and the formatted
traceback), and the reprs of the client and of what it returns.

Each failure kind is its own test: a local aiohttp server on 127.0.0.1 echoes the request URL,
its query and the UserSig back in the way named by the test id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote

import attrs
import pytest
from _helpers import exception_texts
from aiohttp import web

import tim_async.client
from tim_async import RetryPolicy, TimClient
from tim_async.errors import TimError
from tim_async.usersig import UserSigSigner, generate_usersig

#: not hex, so no run of digits elsewhere (a ``random=`` value, a port) can look like a fragment
SECRET_KEY = "sk-AUDIT-q7ZxLmN3vB8kRt2YwE6uPj4HsGd9FcVa5TnQ1oXiUe0r"
SDKAPPID = 1400000000
FRAGMENT = 8


def fragments(secret: str) -> set[str]:
    return {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}


def leaks(texts: Iterable[str], secrets: Iterable[str]) -> list[tuple[str, str]]:
    """(fragment, text excerpt) for every fragment of a secret found in a text."""
    grams: set[str] = set()
    for secret in secrets:
        grams |= fragments(secret)
    found = []
    for text in texts:
        for i in range(len(text) - FRAGMENT + 1):
            if text[i : i + FRAGMENT] in grams:
                found.append((text[i : i + FRAGMENT], text[max(0, i - 60) : i + 80]))
                break
    return found


def test_the_fragment_check_sees_a_partial_redaction() -> None:
    # The checker itself: a UserSig with only its first character hidden is still caught, as is
    # any 8-character piece; 7 characters are not (no false alarm on short coincidences).
    sig = "eJyrVspOLSrKTFGyUqoGAE-bR5*8fOi_"
    assert leaks([f"usersig=<redacted>{sig[1:]}"], [sig])
    assert leaks([f"...{sig[10:18]}..."], [sig])
    assert not leaks([f"...{sig[10:17]}..."], [sig])


# ------------------------------------------------------------------ the echoing server


@attrs.define
class Echo:
    """What the echo server saw: every UserSig (as aiohttp decoded it and as it was sent)."""

    url: str = ""
    sigs: list[str] = attrs.field(factory=list)
    raw_queries: list[str] = attrs.field(factory=list)

    def secrets(self) -> set[str]:
        out = {SECRET_KEY}
        for sig in self.sigs:
            out |= {sig, quote(sig, safe=""), quote(sig)}
        for raw in self.raw_queries:
            for part in raw.split("&"):
                if part.lower().startswith("usersig="):
                    out.add(part[len("usersig=") :])
        return out


def _echoes(request: web.Request, echo: Echo) -> dict[str, str]:
    sig = request.query.get("usersig", "")
    url = str(request.url)
    return {
        "url": url,  # as yarl shows it
        "raw_path": request.raw_path,  # as sent: the UserSig URL-encoded
        "decoded_url": unquote(url),
        "query": request.query_string,
        "sig": sig,
        "sig_encoded": quote(sig, safe=""),  # alone, without the "usersig=" before it
        "first_sig": echo.sigs[0] if echo.sigs else sig,
        "all_sigs": " ".join(echo.sigs),
    }


async def _handle(request: web.Request, echo: Echo) -> web.StreamResponse:
    echo.sigs.append(request.query.get("usersig", ""))
    echo.raw_queries.append(request.raw_path.partition("?")[2])
    e = _echoes(request, echo)
    mode = request.match_info["command"]
    everything = (
        f"{e['raw_path']} | {e['url']} | {e['decoded_url']} | {e['query']} | usersig: {e['sig']}"
        f" | token {e['sig_encoded']}"
    )
    if mode in ("api_error", "api_error_busy", "expired"):
        code = {"api_error": 70009, "api_error_busy": 10002, "expired": 70001}[mode]
        return web.json_response(
            {
                "ActionStatus": "FAIL",
                "ErrorCode": code,
                "ErrorInfo": f"bad request {everything}",
                "usersig": e["sig"],
                "Echo": {
                    "url": e["url"],
                    "list": [e["decoded_url"], e["sig"], e["raw_path"]],
                    e["sig"]: 1,
                },
            }
        )
    if mode == "echo_old_sigs":
        return web.json_response(
            {"ActionStatus": "FAIL", "ErrorCode": 70009, "ErrorInfo": f"seen: {e['all_sigs']}"}
        )
    if mode == "non_json":
        return web.Response(text=f"<html>oops {everything}</html>", content_type="text/html")
    if mode == "http_502":
        return web.Response(status=502, text=f"<html>bad gateway {everything}</html>")
    if mode == "usersig_field_cut":
        # The UserSig as a JSON field, placed so that the 200-byte excerpt ends inside it.
        head = '{"note": "' + "x" * 120 + '", "usersig": "'
        return web.Response(status=502, text=head + e["sig"] + '"}')
    if mode == "sig_at_excerpt_edge":
        # The usersig= form, cut by the excerpt limit.
        head = "y" * (200 - len("usersig=") - 20)
        return web.Response(status=502, text=f"{head}usersig={e['sig']}")
    if mode == "connection_lost":
        assert request.transport is not None
        request.transport.close()
        return web.Response(text="never sent")
    raise AssertionError(f"unknown mode {mode}")


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    state = Echo()
    app = web.Application()
    app.router.add_post("/v4/{service}/{command}", functools.partial(_handle, echo=state))
    runner = web.AppRunner(app, access_log=None)  # the test server's own log is not the SDK's
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest.fixture
async def broken_status_url() -> AsyncIterator[str]:
    """Answers a status line aiohttp cannot parse (its exception may hold the URL)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read(65536)
        assert b"usersig=" in request
        writer.write(b"HTTP/1.1 999999 broken\r\nContent-Length: x\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


class _Clock:
    """Advances one second at every read, so every renewal makes a new UserSig."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def ticking_signer(monkeypatch: pytest.MonkeyPatch) -> None:
    # TimClient has no clock argument: the public ``clock=`` of UserSigSigner is the seam.
    monkeypatch.setattr(
        tim_async.client, "UserSigSigner", functools.partial(UserSigSigner, clock=_Clock())
    )


FIXED_NOW = 1_700_000_000


@pytest.fixture
def fixed_sig(monkeypatch: pytest.MonkeyPatch) -> str:
    """TimClient signs at a fixed time: returns the one UserSig it sends."""
    monkeypatch.setattr(
        tim_async.client,
        "UserSigSigner",
        functools.partial(UserSigSigner, clock=lambda: float(FIXED_NOW)),
    )
    return generate_usersig(SDKAPPID, "administrator", SECRET_KEY, 86400, now=FIXED_NOW)


# ------------------------------------------------------------------ the runs

Calls = Callable[[TimClient], Awaitable[None]]


async def _calls(tim: TimClient, *commands: str) -> list[BaseException]:
    errors: list[BaseException] = []
    for command in commands:
        for idempotent in (True, False):
            try:
                await tim.call(f"echo/{command}", {"k": "v"}, idempotent=idempotent)
            except TimError as exc:
                errors.append(exc)
            else:
                raise AssertionError(f"echo/{command} succeeded")
    return errors


#: failure kind -> the echo commands called (each idempotent and not) and the exception kinds
KINDS: dict[str, tuple[tuple[str, ...], set[str]]] = {
    "api_error_echoing_the_url": (("api_error",), {"TimAuthError"}),
    "api_error_retried": (("api_error_busy",), {"TimServerBusyError"}),
    "usersig_expired_renewed": (("expired", "expired", "expired"), {"TimAuthError"}),
    "non_json_answer_echoing_the_url": (("non_json",), {"TimTransportError",
                                                        "TimOutcomeUnknownError"}),
    "http_502_echoing_the_url": (("http_502",), {"TimTransportError", "TimOutcomeUnknownError"}),
    "usersig_query_cut_by_the_excerpt": (("sig_at_excerpt_edge",), {"TimTransportError",
                                                                    "TimOutcomeUnknownError"}),
    "connection_lost": (("connection_lost",), {"TimTransportError", "TimOutcomeUnknownError"}),
    # The two holes issue 16.5 found (fixed in the session): an echo cut by the excerpt, and
    # UserSigs forgotten after renewals.
    "usersig_json_field_cut_by_the_excerpt": (("usersig_field_cut",), {"TimTransportError",
                                                                       "TimOutcomeUnknownError"}),
    "old_usersig_echoed_after_renewals": (("expired", "expired", "expired", "echo_old_sigs"),
                                          {"TimAuthError"}),
}  # fmt: skip


def _kind_params() -> Iterator[Any]:
    for kind in KINDS:
        yield pytest.param(kind, id=kind)


def _texts(
    caplog: pytest.LogCaptureFixture, tim: TimClient, errors: list[BaseException]
) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = [repr(tim), repr(tim.stats), str(tim.stats), repr(tim.msg_ext)]
    texts += [repr(tim.group_attr), repr(tim.group_counter), tim.base_url]
    for record in caplog.records:
        if record.name.startswith(("aiohttp.server", "aiohttp.access", "aiohttp.web")):
            continue  # the echo server's own log
        texts += [formatter.format(record), repr(record.args), str(record.msg)]
    for exc in errors:
        texts += exception_texts(exc)
    return texts


@pytest.mark.usefixtures("ticking_signer")
@pytest.mark.parametrize("kind", list(_kind_params()))
async def test_no_fragment_of_a_secret_survives(
    kind: str, echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    commands, kinds = KINDS[kind]
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tim_async")
    policy = RetryPolicy(max_retries=2, backoff_base=0.001)
    async with TimClient(
        SDKAPPID, secret_key=SECRET_KEY, base_url=echo.url, retry=policy, rate_limit=None
    ) as tim:
        errors = await _calls(tim, *commands)
        texts = _texts(caplog, tim, errors)
    assert {type(exc).__name__ for exc in errors} == kinds
    assert echo.sigs, "the server was not reached"
    # The URL-encoded form differs from the raw one (a '*' is sent as %2A), so both are tested.
    assert any(quote(sig, safe="") != sig for sig in echo.sigs)
    if kind in ("api_error_retried", "http_502_echoing_the_url"):
        assert any("retry" in record.getMessage() for record in caplog.records)
    if "renew" in kind or "renewals" in kind:
        assert len(set(echo.sigs)) >= 4  # several renewals happened
    found = leaks(texts, echo.secrets())
    assert found == [], found[:3]


async def test_no_fragment_after_a_broken_status_line(
    broken_status_url: str, fixed_sig: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(max_retries=1, backoff_base=0.001)
    async with TimClient(
        SDKAPPID, secret_key=SECRET_KEY, base_url=broken_status_url, retry=policy
    ) as tim:
        errors = await _calls(tim, "anything")
        texts = _texts(caplog, tim, errors)
    sig = fixed_sig
    assert {type(exc).__name__ for exc in errors} <= {
        "TimTransportError",
        "TimOutcomeUnknownError",
    }
    assert leaks(texts, {SECRET_KEY, sig, quote(sig, safe="")}) == []


async def test_no_fragment_after_connection_refused(
    fixed_sig: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # nothing listens there now
    policy = RetryPolicy(max_retries=2, backoff_base=0.001)
    async with TimClient(
        SDKAPPID, secret_key=SECRET_KEY, base_url=f"http://127.0.0.1:{port}", retry=policy
    ) as tim:
        errors = await _calls(tim, "anything")
        texts = _texts(caplog, tim, errors)
    sig = fixed_sig
    assert {type(exc).__name__ for exc in errors} == {"TimTransportError"}
    assert any("retry" in record.getMessage() for record in caplog.records)
    assert leaks(texts, {SECRET_KEY, sig, quote(sig, safe="")}) == []
