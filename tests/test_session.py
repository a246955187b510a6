"""The session layer against a real aiohttp server on 127.0.0.1: URL and body as sent, the
envelope, every error class, retries, non-idempotent calls, UserSig renewal, timeouts, secrets,
session ownership."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tim_async import errors
from tim_async.client import TimClient
from tim_async.limiter import SlidingWindowLimiter, UnlimitedLimiter
from tim_async.regions import Region
from tim_async.retry import RetryPolicy
from tim_async.session import Session
from tim_async.usersig import StaticUserSig, decode_usersig, verify_usersig

SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
APPID = 1400000000

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


class Script:
    """A test server whose answers are scripted one per request; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.answers: list[Handler] = []
        self.default: Handler = ok()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        self.requests.append((request.path, dict(request.query), body))
        handler = self.answers.pop(0) if self.answers else self.default
        return await handler(request, body)


def ok(**fields: Any) -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", **fields})

    return handler


def fail(code: int, info: str = "failed") -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})

    return handler


def status(code: int, text: str = "<html>bad gateway</html>") -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(status=code, text=text)

    return handler


def raw(text: str) -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(text=text, content_type="application/json")

    return handler


def drop() -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0)
        return web.Response()

    return handler


def slow(seconds: float) -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await ok()(request, body)

    return handler


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    app = web.Application()
    app.router.add_post("/v4/{service}/{command}", script.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # a slow handler is cut off at teardown
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield script, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def client(base_url: str, **kw: Any) -> TimClient:
    kw.setdefault("secret_key", SECRET)
    return TimClient(APPID, base_url=base_url, **kw)


# --------------------------------------------------------------------------- request shape


async def test_query_and_body_as_sent(server: tuple[Script, str]) -> None:
    script, url = server
    async with client(url, identifier="admin one") as tim:
        out = await tim.call("svc_a/cmd_b", {"GroupId": "@TGS#1", "Nested": {"ü": [1, 2]}})
        await tim.call("svc_a/cmd_b")
    assert out == {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
    (path, query, body), (_, query2, body2) = script.requests
    assert path == "/v4/svc_a/cmd_b"
    assert set(query) == {"sdkappid", "identifier", "usersig", "random", "contenttype"}
    assert query["sdkappid"] == str(APPID)
    assert query["identifier"] == "admin one"  # URL-encoded on the wire, decoded here
    assert query["contenttype"] == "json"
    assert 0 <= int(query["random"]) <= 4294967295
    assert query["random"] != query2["random"]
    fields, valid = verify_usersig(query["usersig"], SECRET)
    assert valid and fields["TLS.identifier"] == "admin one"
    assert fields["TLS.sdkappid"] == APPID and fields["TLS.expire"] == 86400
    assert body == {"GroupId": "@TGS#1", "Nested": {"ü": [1, 2]}}
    assert body2 == {}  # never an empty body


async def test_static_usersig_is_sent_verbatim(server: tuple[Script, str]) -> None:
    script, url = server
    async with TimClient(APPID, base_url=url, usersig="abc*-_") as tim:
        await tim.call("a/b", {})
    assert script.requests[0][1]["usersig"] == "abc*-_"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (10004, errors.TimInvalidParameterError),
        (60003, errors.TimInvalidParameterError),
        (23004, errors.TimNotFoundError),
        (10010, errors.TimNotFoundError),
        (10007, errors.TimPermissionError),
        (60010, errors.TimPermissionError),
        (10008, errors.TimPremiumRequiredError),
        (10059, errors.TimPremiumRequiredError),
        (10063, errors.TimLimitExceededError),
        (10047, errors.TimLimitExceededError),
        (60007, errors.TimRateLimitedError),
        (10049, errors.TimRateLimitedError),
        (70003, errors.TimAuthError),
        (70999, errors.TimAuthError),
        (60005, errors.TimAuthError),
        (10002, errors.TimServerBusyError),
        (60014, errors.TimServerBusyError),
        (12345, errors.TimAPIError),
    ],
)
async def test_error_codes_map_to_classes(
    server: tuple[Script, str], code: int, cls: type[errors.TimAPIError]
) -> None:
    script, url = server
    script.default = fail(code, "it went wrong")
    async with client(url, max_retries=0) as tim:
        with pytest.raises(cls) as info:
            await tim.call("svc/cmd", {"x": 1})
    err = info.value
    assert type(err) is cls
    assert (err.code, err.info, err.api) == (code, "it went wrong", "svc/cmd")
    assert err.body["ErrorCode"] == code
    assert str(code) in str(err)


@pytest.mark.parametrize(
    ("handler", "fragment", "http_status"),
    [
        (status(404, "not here"), "URL path /v4/svc/cmd was not found at .*check base_url", 404),
        (status(400, "bad"), "unexpected HTTP status", 400),
        (raw("<html>oops</html>"), "not the JSON envelope", 200),
        (raw('{"ActionStatus": "OK"}'), "not the JSON envelope", 200),
        (raw('{"ErrorCode": "0", "ActionStatus": "OK"}'), "not the JSON envelope", 200),
        (raw("[1, 2]"), "not the JSON envelope", 200),
        (raw('{"ActionStatus": "OK", "ErrorCode": 0, "Lis'), "not the JSON envelope", 200),
    ],
)
async def test_unusable_answers_are_transport_errors(
    server: tuple[Script, str], handler: Handler, fragment: str, http_status: int
) -> None:
    script, url = server
    script.default = handler
    async with client(url, max_retries=0) as tim:
        with pytest.raises(errors.TimTransportError, match=fragment) as info:
            await tim.call("svc/cmd", {})
    assert info.value.status == http_status
    assert info.value.body_excerpt  # a short excerpt of what came back
    assert len(info.value.body_excerpt) <= 200


# --------------------------------------------------------------------------- retries


async def test_retries_502_and_10002_then_succeeds(server: tuple[Script, str]) -> None:
    script, url = server
    script.answers = [status(502), fail(10002), status(503), fail(60007)]
    script.default = ok(Value=7)
    async with client(url, retry=RetryPolicy(max_retries=4, backoff_base=0.001)) as tim:
        out = await tim.call("svc/cmd", {"a": 1})
        assert out["Value"] == 7
        stats = tim.stats
    assert len(script.requests) == 5
    assert all(body == {"a": 1} for _, _, body in script.requests)
    assert stats.retries == 4 and stats.attempts == 5 and stats.calls == 1
    assert stats.retried_by_reason == {
        "HTTP 502": 1,
        "ErrorCode 10002": 1,
        "HTTP 503": 1,
        "ErrorCode 60007": 1,
    }


async def test_retries_stop_at_max_retries(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = fail(10002)
    async with client(url, retry=RetryPolicy(max_retries=2, backoff_base=0.001)) as tim:
        with pytest.raises(errors.TimServerBusyError):
            await tim.call("svc/cmd", {})
    assert len(script.requests) == 3


async def test_final_errors_are_not_retried(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = fail(10004)
    async with client(url) as tim:
        with pytest.raises(errors.TimInvalidParameterError):
            await tim.call("svc/cmd", {})
    assert len(script.requests) == 1


async def test_dropped_connection_idempotent_is_resent(server: tuple[Script, str]) -> None:
    script, url = server
    script.answers = [drop()]
    async with client(url, retry=RetryPolicy(backoff_base=0.001)) as tim:
        out = await tim.call("svc/cmd", {"k": 1})
    assert out["ErrorCode"] == 0
    assert len(script.requests) == 2


async def test_dropped_connection_non_idempotent_is_never_resent(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.answers = [drop()]
    async with client(url) as tim:
        with pytest.raises(errors.TimOutcomeUnknownError) as info:
            await tim.call("svc/cmd", {"k": 1}, idempotent=False)
    assert isinstance(info.value, errors.TimTransportError)
    assert len(script.requests) == 1


@pytest.mark.parametrize("code", [502, 504])
async def test_gateway_errors_on_non_idempotent_calls_are_outcome_unknown(
    server: tuple[Script, str], code: int
) -> None:
    script, url = server
    script.answers = [status(code)]
    async with client(url) as tim:
        with pytest.raises(errors.TimOutcomeUnknownError):
            await tim.call("svc/cmd", {}, idempotent=False)
    assert len(script.requests) == 1


async def test_rejections_are_resent_even_for_non_idempotent_calls(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.answers = [fail(60007), status(503), fail(10002)]
    async with client(url, retry=RetryPolicy(backoff_base=0.001)) as tim:
        await tim.call("svc/cmd", {}, idempotent=False)
    assert len(script.requests) == 4


async def test_connection_refused_is_retried_then_raised() -> None:
    # A port nothing listens on: the request is never sent, so even non-idempotent calls retry.
    async with client(
        "http://127.0.0.1:9", retry=RetryPolicy(max_retries=2, backoff_base=0.001)
    ) as tim:
        with pytest.raises(errors.TimTransportError, match="after 3 attempts") as info:
            await tim.call("svc/cmd", {}, idempotent=False)
        assert tim.stats.attempts == 0  # requests sent: none got a connection
        assert tim.stats.retries == 2
    assert not isinstance(info.value, errors.TimOutcomeUnknownError)
    assert info.value.attempts == 3


async def test_timeout_bounds_the_whole_call(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = slow(30)
    loop = asyncio.get_running_loop()
    async with client(url, timeout=0.3) as tim:
        start = loop.time()
        with pytest.raises(errors.TimTimeoutError):
            await tim.call("svc/cmd", {})
        elapsed = loop.time() - start
    # It did not wait for the slow answer: far below the server's 30 s (slack for a busy
    # machine), and not before the timeout.
    assert 0.3 * 0.95 <= elapsed < 10
    assert len(script.requests) == 1  # no time left for a retry


async def test_timeout_on_non_idempotent_call_is_outcome_unknown(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.default = slow(2)
    async with client(url, timeout=0.3) as tim:
        with pytest.raises(errors.TimOutcomeUnknownError):
            await tim.call("svc/cmd", {}, idempotent=False)


class FixedBackoff(RetryPolicy):
    """Every backoff lasts 0.4 s (no jitter: the test does not hang on where the last one ends)."""

    def backoff(self, retries_done: int, rng: random.Random | None = None) -> float:
        return 0.4


async def test_backoff_never_overruns_the_timeout(server: tuple[Script, str]) -> None:
    # Retries at ~0 s, ~0.4 s and ~0.8 s; the next backoff would end past the 1 s timeout, so the
    # call raises the server's answer at once (with jitter, the last backoff could end so close
    # to the deadline that the next attempt timed out on a loaded machine).
    script, url = server
    script.default = fail(10002)
    async with client(url, retry=FixedBackoff(max_retries=50), timeout=1.0) as tim:
        with pytest.raises(errors.TimServerBusyError):
            await tim.call("svc/cmd", {})
    assert len(script.requests) in (2, 3)


# --------------------------------------------------------------------------- UserSig renewal


async def test_70001_renews_the_usersig_once_and_retries(server: tuple[Script, str]) -> None:
    script, url = server
    script.answers = [ok(), fail(70001, "UserSig expired")]
    async with client(url) as tim:
        await tim.call("svc/cmd", {})  # signs the first UserSig
        await asyncio.sleep(1.05)  # so that the new UserSig carries another TLS.time
        await tim.call("svc/cmd", {})
    # The UserSigs as the server received them (the request log), not the client's signer.
    (_, q0, _), (_, q1, _), (_, q2, _) = script.requests
    first = q0["usersig"]
    assert verify_usersig(first, SECRET)[1]
    assert q1["usersig"] == first  # cached until the server said it expired
    assert q2["usersig"] != first
    assert decode_usersig(q2["usersig"])["TLS.time"] > decode_usersig(first)["TLS.time"]
    assert verify_usersig(q2["usersig"], SECRET)[1]


async def test_70001_twice_raises_auth_error(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = fail(70001)
    async with client(url) as tim:
        with pytest.raises(errors.TimAuthError):
            await tim.call("svc/cmd", {})
    assert len(script.requests) == 2


async def test_70001_with_static_usersig_raises(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = fail(70001)
    async with TimClient(APPID, base_url=url, usersig="static") as tim:
        with pytest.raises(errors.TimAuthError):
            await tim.call("svc/cmd", {})
    assert len(script.requests) == 1


# --------------------------------------------------------------------------- limiter in the path


async def test_every_attempt_goes_through_the_limiter(server: tuple[Script, str]) -> None:
    script, url = server
    script.answers = [fail(10002), fail(10002)]
    limiter = SlidingWindowLimiter(50)
    async with client(url, retry=RetryPolicy(backoff_base=0.001), limiter=limiter) as tim:
        await tim.call("svc/cmd", {})
        await tim.call("svc/other", {})
        assert len(limiter.window("svc/cmd").finished) == 3
        assert len(limiter.window("svc/other").finished) == 1
    await limiter.aclose()  # a limiter given to the client is closed by whoever made it


# --------------------------------------------------------------------------- secrets


async def test_secrets_never_appear(
    server: tuple[Script, str], caplog: pytest.LogCaptureFixture
) -> None:
    script, url = server
    caplog.set_level(logging.DEBUG, logger="tim_async")
    script.answers = [fail(10002), status(502), drop()]

    async def echo_url(request: web.Request, body: Any) -> web.StreamResponse:
        # A hostile answer that echoes the request URL (with the usersig) into the error text.
        return web.json_response(
            {"ActionStatus": "FAIL", "ErrorCode": 10004, "ErrorInfo": str(request.url)}
        )

    script.default = echo_url
    texts: list[str] = []
    async with client(url, retry=RetryPolicy(backoff_base=0.001)) as tim:
        texts.append(repr(tim))
        with pytest.raises(errors.TimAPIError) as info:
            await tim.call("svc/cmd", {})
        texts += [str(info.value), repr(info.value)]
        script.answers = [drop()]
        with pytest.raises(errors.TimTransportError) as info2:
            await tim.call("svc/cmd", {}, idempotent=False)
        # Private read: the session object is not public, but its repr reaches tracebacks
        # that show locals (pytest --showlocals, error trackers), so it is checked too.
        texts += [str(info2.value), repr(info2.value), repr(tim._session)]
    texts += [r.getMessage() for r in caplog.records]
    sigs = {q["usersig"] for _, q, _ in script.requests}
    assert sigs and len(texts) > 5
    for text in texts:
        assert SECRET not in text
        for sig in sigs:
            assert sig not in text
    assert "usersig=<redacted>" in str(info.value)


# --------------------------------------------------------------------------- lifecycle


async def test_caller_session_is_used_and_left_open(server: tuple[Script, str]) -> None:
    script, url = server
    async with aiohttp.ClientSession() as http:
        async with client(url, session=http) as tim:
            await tim.call("a/b", {})
        assert not http.closed
        async with http.post(f"{url}/v4/a/b", data=b"{}") as resp:
            assert resp.status == 200
    assert len(script.requests) == 2


async def test_own_session_is_closed_and_use_after_close_fails(
    server: tuple[Script, str],
) -> None:
    _, url = server
    tim = client(url)
    await tim.call("a/b", {})
    # Private read: the client's own aiohttp session is deliberately not public (handing it
    # out would invite closing or reconfiguring it under the client); only it can show that
    # close() closes what the client made.
    http = tim._session._http
    assert http is not None and not http.closed
    await tim.close()
    await tim.close()  # idempotent
    assert http.closed and tim.closed
    with pytest.raises(errors.TimClosedError):
        await tim.call("a/b", {})


async def test_session_is_created_lazily_inside_the_loop() -> None:
    tim = client("http://127.0.0.1:9")
    # Private read, as above: no public seam tells whether the aiohttp session exists yet.
    assert tim._session._http is None
    await tim.close()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sdkappid": 0}, "sdkappid"),
        ({"sdkappid": -5}, "sdkappid"),
        ({"sdkappid": "1400000000"}, "sdkappid"),
        ({"sdkappid": True}, "sdkappid"),
        ({"secret_key": None}, "exactly one"),
        ({"usersig": "x"}, "exactly one"),
        ({"region": "atlantis"}, "unknown region"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"identifier": ""}, "identifier"),
        ({"base_url": "ftp://x"}, "base_url"),
    ],
)
def test_bad_configuration_raises_at_construction(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"sdkappid": APPID, "secret_key": SECRET}
    args.update(kwargs)
    with pytest.raises(errors.TimConfigError, match=fragment) as info:
        TimClient(**args)
    assert isinstance(info.value, ValueError)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"max_retries": -1}, {"backoff_base": -0.1}, {"backoff_cap": -1.0}]
)
def test_a_bad_retry_policy_is_a_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.TimConfigError) as info:
        RetryPolicy(**kwargs)
    assert isinstance(info.value, ValueError)


def test_regions_and_base_url() -> None:
    tim = TimClient(APPID, secret_key=SECRET, region="singapore")
    assert tim.base_url == "https://adminapisgp.im.qcloud.com"
    assert Region.parse("adminapiger.im.qcloud.com") is Region.FRANKFURT
    assert {r.backup_domain.split(".")[1] for r in Region} == {"my-imcloud"}
    assert len(Region) == 8
    assert SECRET not in repr(tim) and "TimClient(sdkappid=1400000000" in repr(tim)


# Mixed case is a valid path (ConfigSvc/GetIPList): see tests/test_call_api_names.py.
@pytest.mark.parametrize("api", ["", "/v4/a/b", "a", "a/b/c", "a-b/c", "a/b?x=1"])
async def test_call_validates_the_api_path(server: tuple[Script, str], api: str) -> None:
    script, url = server
    async with client(url) as tim:
        with pytest.raises(errors.TimValidationError, match="api"):
            await tim.call(api, {})
    assert script.requests == []


async def test_call_refuses_bodies_that_are_not_json(server: tuple[Script, str]) -> None:
    script, url = server
    async with client(url) as tim:
        with pytest.raises(errors.TimTypeError, match="body"):
            await tim.call("a/b", {"x": object()})
        with pytest.raises(errors.TimTypeError, match="body"):
            await tim.call("a/b", [1, 2])  # type: ignore[arg-type]
    assert script.requests == []


def test_a_session_without_a_base_url_is_a_config_error() -> None:
    with pytest.raises(errors.TimConfigError, match="base URL") as info:
        Session(
            base_urls=[],
            sdkappid=APPID,
            identifier="administrator",
            usersig=StaticUserSig("sig"),
            limiter=UnlimitedLimiter(),
            retry=RetryPolicy(),
            timeout=5.0,
        )
    assert isinstance(info.value, ValueError)


async def test_dns_failure_switches_to_the_backup_domain(server: tuple[Script, str]) -> None:
    # A region's main domain that does not resolve: the retry goes to its backup domain.
    # (.invalid never resolves: RFC 2606.)
    script, url = server
    session = Session(
        base_urls=["http://tim-async-test.invalid:1", url],
        sdkappid=APPID,
        identifier="administrator",
        usersig=StaticUserSig("sig"),
        limiter=UnlimitedLimiter(),
        retry=RetryPolicy(backoff_base=0.001),
        timeout=5.0,
    )
    try:
        assert (await session.call("svc/cmd", {}))["ErrorCode"] == 0
        assert session.base_url == url
        assert session.stats.attempts == 1 and session.stats.retries == 1
    finally:
        await session.close()
    assert len(script.requests) == 1
