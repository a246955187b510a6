"""The session's ``decode`` hook, and the pulls that use it (tim_async.paging.decode_pull), on
the real session against the emulator."""

from __future__ import annotations

from typing import Any

import pytest

from tim_async import paging
from tim_async.client import TimClient
from tim_async.errors import TimNotFoundError, TimTransportError
from tim_async.retry import RetryPolicy
from tim_async.testing import FakeTimServer, Fault

PULL = "openim_msg_ext_http_svc/group_get_key_values"


def client(server: FakeTimServer) -> TimClient:
    return TimClient(
        server.sdkappid,
        server.admin,
        secret_key=server.secret_key,
        base_url=server.base_url,
        rate_limit=None,
        retry=RetryPolicy(max_retries=3, backoff_base=0.001),
    )


_REAL_DECODE_PULL = paging.decode_pull


class Spy:
    """Stands in for :func:`paging.decode_pull` (which the walk looks up at each page) and
    counts the answers it took and declined."""

    def __init__(self) -> None:
        self.taken = 0
        self.declined = 0

    def __call__(self, raw: bytes) -> Any:
        result = _REAL_DECODE_PULL(raw)
        if result is None:
            self.declined += 1
        else:
            self.taken += 1
        return result


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy()
    monkeypatch.setattr(paging, "decode_pull", spy)
    return spy


async def test_every_page_of_a_pull_is_decoded_by_the_hook(spy: Spy) -> None:
    async with FakeTimServer(rate_limit=None, page_size=25) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        # 60 pairs in 3 seqs: three pages of 25 (each re-reads the seq its predecessor cut)
        for batch in range(3):
            server.put_group_extensions(gid, seq, {f"k{batch}.{i}": f"v{i}" for i in range(20)})
        async with client(server) as tim:
            result = await tim.msg_ext.group_get_key_values(gid, seq)
            pages = tim.stats.attempts
    assert len(result) == 60
    assert pages >= 3
    assert spy.taken == pages and spy.declined == 0


async def test_error_answers_are_declined_and_raise_their_typed_error(spy: Spy) -> None:
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        async with client(server) as tim:
            with pytest.raises(TimNotFoundError):
                await tim.msg_ext.group_get_key_values(gid, 12345)
    assert spy.taken == 0 and spy.declined == 1


async def test_a_retried_code_is_declined_then_the_retry_is_decoded(spy: Spy) -> None:
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        server.put_group_extensions(gid, seq, {"a": "1"})
        server.faults.script(PULL, [Fault.code(70169)])
        async with client(server) as tim:
            result = await tim.msg_ext.group_get_key_values(gid, seq)
            assert tim.stats.retries == 1
    assert result.as_dict() == {"a": "1"}
    assert (spy.declined, spy.taken) == (1, 1)


async def test_a_truncated_answer_is_declined_and_retried_by_the_session(spy: Spy) -> None:
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        server.put_group_extensions(gid, seq, {"a": "1"})
        server.faults.script(PULL, [Fault.TRUNCATED_JSON])
        async with client(server) as tim:
            # the JSON path finds no envelope: retried (it may be a transport fault), decoded
            result = await tim.msg_ext.group_get_key_values(gid, seq)
            assert tim.stats.retries == 1
    assert result.as_dict() == {"a": "1"}
    assert (spy.declined, spy.taken) == (1, 1)


async def test_session_call_returns_what_the_hook_gives_and_the_json_when_it_declines() -> None:
    async with FakeTimServer(rate_limit=None) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        server.put_group_extensions(gid, seq, {"a": "1"})
        body = {"GroupId": gid, "MsgSeq": seq}
        seen: list[bytes] = []

        def taking(raw: bytes) -> tuple[str, int]:
            seen.append(raw)
            return ("decoded", len(raw))

        def declining(raw: bytes) -> None:
            seen.append(raw)
            return None

        async with client(server) as tim:
            session = tim._session  # the Session itself: the hook is not on TimClient.call
            taken = await session.call(PULL, body, decode=taking)
            declined = await session.call(PULL, body, decode=declining)
            plain = await session.call(PULL, body)
            with pytest.raises(TimNotFoundError):
                await session.call(PULL, {"GroupId": gid, "MsgSeq": 999}, decode=declining)
            # A 200 answer that is not the envelope: declined, then the session's own check.
            server.faults.script(PULL, [Fault.NON_JSON])
            tim_no_retry = TimClient(
                server.sdkappid,
                server.admin,
                secret_key=server.secret_key,
                base_url=server.base_url,
                rate_limit=None,
                max_retries=0,
            )
            async with tim_no_retry:
                with pytest.raises(TimTransportError):
                    await tim_no_retry._session.call(PULL, body, decode=declining)
    assert taken == ("decoded", len(seen[0]))
    assert declined == plain
    assert plain["ExtensionList"][0]["Key"] == "a"
    assert len(seen) == 4
