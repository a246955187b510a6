"""WebhookReceiver on 127.0.0.1: status codes, reply before a slow handler ends, logging."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from test_webhooks import GROUP, GROUP_SAMPLE

from tim_async.errors import TimError
from tim_async.webhooks import (
    GroupMsgExtensionEvent,
    WebhookEvent,
    WebhookReceiver,
    sign,
)

APP = 1400000000
TOKEN = "S3cr3t-T0ken/ForWebhooks!"
OK = {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}


def query(
    token: str | None = TOKEN, *, age: float = 0, app: int = APP, **extra: str
) -> dict[str, str]:
    q = {
        "SdkAppid": str(app),
        "CallbackCommand": GROUP,
        "contenttype": "json",
        "ClientIP": "10.0.0.1",
        "OptPlatform": "RESTAPI",
    }
    if token is not None:
        request_time = str(int(time.time() - age))
        q["Sign"] = sign(token, request_time)
        q["RequestTime"] = request_time
    q.update(extra)
    return q


class Recorder:
    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []

    async def __call__(self, event: WebhookEvent) -> None:
        self.events.append(event)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    params: dict[str, str],
    body: bytes | str | io.BytesIO = GROUP_SAMPLE,
) -> tuple[int, Any]:
    async with http.post(url, params=params, data=body) as response:
        return response.status, await response.json(content_type=None)


async def test_verified_webhook_reaches_the_handler(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(APP, token=TOKEN, handler=recorder)
    async with receiver.serve(path="/tim") as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/tim")
        status, answer = await post(http, url, query())
    assert (status, answer) == (200, OK)
    assert len(recorder.events) == 1
    event = recorder.events[0]
    assert isinstance(event, GroupMsgExtensionEvent) and event.seq == 56


async def test_without_token_only_the_app_is_checked(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    async with WebhookReceiver(APP, handler=recorder).serve() as url:
        assert (await post(http, url, query(None)))[0] == 200
        assert (await post(http, url, query(None, app=APP + 1)))[0] == 403
    assert len(recorder.events) == 1


@pytest.mark.parametrize(
    ("make_params", "status", "field"),
    [
        # Built inside the test: a RequestTime stamped at collection could age past max_age.
        (lambda: query(app=APP + 1), 403, "SdkAppid"),
        (lambda: {k: v for k, v in query().items() if k != "SdkAppid"}, 403, "SdkAppid"),
        (lambda: query(token="another-token"), 401, "Sign"),
        (lambda: {k: v for k, v in query().items() if k != "Sign"}, 401, "Sign"),
        (lambda: query(None), 401, "Sign"),
        (lambda: query(age=120), 401, "RequestTime"),
        (lambda: query(age=-120), 401, "RequestTime"),
    ],
)
async def test_refused_requests_never_reach_the_handler(
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    make_params: Callable[[], dict[str, str]],
    status: int,
    field: str,
) -> None:
    params = make_params()
    recorder = Recorder()
    receiver = WebhookReceiver(APP, token=TOKEN, handler=recorder)
    with caplog.at_level(logging.WARNING, logger="tim_async.webhooks"):
        async with receiver.serve() as url:
            got, answer = await post(http, url, params)
    assert got == status
    assert answer["ActionStatus"] == "FAIL" and answer["ErrorInfo"].startswith(field)
    assert recorder.events == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and field in warnings[0].getMessage()
    assert str(status) in warnings[0].getMessage()


async def test_logs_reprs_and_answers_hold_no_part_of_the_token(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(event: WebhookEvent) -> None:
        raise RuntimeError("handler broke")

    receiver = WebhookReceiver(APP, token=TOKEN, handler=failing)
    answers: list[Any] = []
    with caplog.at_level(logging.DEBUG):
        async with receiver.serve() as url:
            for params in (
                query(),
                query(token="wrong"),
                query(age=999),
                query(age=-999),
                query(app=1),
                query(Sign="nope"),
                query(contenttype="xml"),
            ):
                answers.append(await post(http, url, params))
            answers.append(await post(http, url, query(), b"{broken"))
    texts = [caplog.text, repr(receiver), *map(repr, answers)]
    texts += [str(r.exc_info) for r in caplog.records if r.exc_info]
    pieces = {TOKEN[i : i + 8] for i in range(len(TOKEN) - 7)}
    for text in texts:
        assert not any(piece in text for piece in pieces)
    assert "<redacted>" in repr(receiver)
    assert [status for status, _ in answers] == [500, 401, 401, 401, 403, 401, 400, 400]


async def test_body_over_one_mib_is_refused(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(APP, token=TOKEN, handler=recorder)
    big = b'{"CallbackCommand": "X.Y", "pad": "' + b"x" * (1 << 20) + b'"}'
    assert len(big) > 1 << 20

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        for i in range(0, len(big), 1 << 16):
            yield big[i : i + (1 << 16)]

    async with receiver.serve() as url:
        assert (await post(http, url, query(), io.BytesIO(big)))[0] == 413
        async with http.post(url, params=query(), data=chunks()) as response:
            assert response.status == 413
        # just under the cap is fine
        small = b'{"pad": "' + b"x" * ((1 << 20) - 20) + b'"}'
        assert len(small) <= 1 << 20
        assert (await post(http, url, query(CallbackCommand="X.Y"), io.BytesIO(small)))[0] == 200
    assert len(recorder.events) == 1


async def test_malformed_body_is_400_naming_the_field(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    async with WebhookReceiver(APP, token=TOKEN, handler=recorder).serve() as url:
        status, answer = await post(
            http, url, query(), GROUP_SAMPLE.replace('"MsgSeq":10', '"MsgSeq":"10"')
        )
        assert status == 400 and answer["ErrorInfo"].startswith("MsgSeq")
        status, answer = await post(http, url, query(contenttype="XML"))
        assert status == 400 and "contenttype" in answer["ErrorInfo"]
        assert (await post(http, url, query(contenttype="JSON")))[0] == 200
    assert len(recorder.events) == 1


async def test_reply_goes_out_before_a_slow_handler_finishes(http: aiohttp.ClientSession) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished = asyncio.Event()

    async def slow(event: WebhookEvent) -> None:
        started.set()
        await release.wait()
        finished.set()

    receiver = WebhookReceiver(APP, token=TOKEN, handler=slow, reply_within=0.05)
    async with receiver.serve() as url:
        # (30 s: only so that a receiver waiting for the handler fails instead of hanging)
        status, answer = await asyncio.wait_for(post(http, url, query()), 30)
        # The answer arrived while the handler is still waiting to be released.
        assert (status, answer) == (200, OK)
        assert started.is_set() and not finished.is_set()
        assert receiver.running == 1
        release.set()
        await receiver.aclose()  # waits for the running handler
        assert finished.is_set() and receiver.running == 0
        assert (await post(http, url, query()))[0] == 503  # closed


async def test_fast_handler_is_awaited_before_the_reply(http: aiohttp.ClientSession) -> None:
    done: list[int] = []

    async def quick(event: WebhookEvent) -> None:
        await asyncio.sleep(0)
        done.append(1)

    async with WebhookReceiver(APP, token=TOKEN, handler=quick).serve() as url:
        assert (await post(http, url, query()))[0] == 200
        assert done == [1]


async def test_handler_exceptions_are_logged(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    async def failing(event: WebhookEvent) -> None:
        if isinstance(event, GroupMsgExtensionEvent) and event.seq == 56:
            raise ValueError("fast failure")
        await release.wait()
        raise KeyError("late failure")

    receiver = WebhookReceiver(APP, token=TOKEN, handler=failing, reply_within=0.05)
    with caplog.at_level(logging.ERROR, logger="tim_async.webhooks"):
        async with receiver.serve() as url:
            # Failed before the answer: 500.
            assert (await post(http, url, query()))[0] == 500
            # Still running at the answer: 200, and the later failure is logged.
            later = GROUP_SAMPLE.replace('"Seq":56,', '"Seq":57,')
            assert (await post(http, url, query(), later))[0] == 200
            release.set()
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[0] for r in failures if r.exc_info] == [ValueError, KeyError]
    assert "|56" in failures[0].getMessage() and "|57" in failures[1].getMessage()


async def test_aclose_cancels_handlers_past_the_grace(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled = asyncio.Event()

    async def forever(event: WebhookEvent) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    receiver = WebhookReceiver(APP, token=TOKEN, handler=forever, reply_within=0)
    with caplog.at_level(logging.WARNING, logger="tim_async.webhooks"):
        async with receiver.serve() as url:
            assert (await post(http, url, query()))[0] == 200
            assert receiver.running == 1
            await asyncio.wait_for(receiver.aclose(grace=0.01), 30)  # 30: fail, never hang
    assert cancelled.is_set() and receiver.running == 0
    assert "cancelling 1 webhook handler" in caplog.text


def test_bad_configuration_is_refused() -> None:
    async def handler(event: WebhookEvent) -> None:
        pass

    for kwargs in (
        {"token": ""},
        {"max_age": -1},
        {"reply_within": 2.5},
        {"max_body": 0},
        {"handler": None},
    ):
        with pytest.raises(TimError):
            WebhookReceiver(APP, **{"handler": handler, **kwargs})  # type: ignore[arg-type]
    with pytest.raises(TimError):
        WebhookReceiver("1400000000", handler=handler)  # type: ignore[arg-type]
