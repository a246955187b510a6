"""Error codes of the current table (spec section 6) against the emulator's fault injection:
which are retried (answered once, then success: exactly two requests arrive) and which class
each raised code maps to (exactly one request)."""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tim_async import (
    TimAPIError,
    TimAppConfigError,
    TimAuthError,
    TimClient,
    TimConflictError,
    TimPermissionError,
    TimPremiumRequiredError,
    TimServerBusyError,
    errors,
)
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer, Fault

GET_ATTR = "group_open_attr_http_svc/get_group_attr"
MODIFY_ATTR = "group_open_http_svc/modify_group_attr"
CLEAR_ATTR = "group_open_http_svc/clear_group_attr"
UPDATE = "group_open_http_svc/update_group_counter"


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None) as srv:
        yield srv


def make_client(server: FakeTimServer, **kw: Any) -> TimClient:
    kw.setdefault("retry", RetryPolicy(max_retries=3, backoff_base=0.001))
    return TimClient(
        server.sdkappid, server.admin, secret_key=TEST_SECRET_KEY, base_url=server.base_url, **kw
    )


@pytest.mark.parametrize("code", [70169, 70500, 60004, 60005])
async def test_retried_codes_are_answered_once_then_succeed(
    server: FakeTimServer, code: int
) -> None:
    gid = server.create_group()
    server.set_group_attrs(gid, {"a": "1"})
    server.faults.script(GET_ATTR, [Fault.code(code)])
    async with make_client(server) as tim:
        assert await tim.group_attr.get_group_attr(gid) == {"a": "1"}
        assert tim.stats.retried_by_reason == {f"ErrorCode {code}": 1}
    assert len(server.requests_for(GET_ATTR)) == 2


@pytest.mark.parametrize("code", [70169, 70500, 60004, 60005])
async def test_retried_codes_say_nothing_was_applied_so_increments_are_resent(
    server: FakeTimServer, code: int
) -> None:
    gid = server.create_group()
    server.set_group_counters(gid, {"n": 5})
    server.faults.script(UPDATE, [Fault.code(code)])
    async with make_client(server) as tim:
        out = await tim.group_counter.update_group_counter(gid, {"n": 1}, mode="Increase")
    assert out == {"n": 6}
    assert len(server.requests_for(UPDATE)) == 2
    assert server.group_counters(gid) == {"n": 6}


@pytest.mark.parametrize(("code", "cls"), [(70169, TimServerBusyError), (60004, TimAuthError)])
async def test_retried_codes_raise_their_class_once_retries_run_out(
    server: FakeTimServer, code: int, cls: type[TimAPIError]
) -> None:
    gid = server.create_group()
    server.faults.script(GET_ATTR, [Fault.code(code)] * 3)
    async with make_client(server, retry=RetryPolicy(max_retries=2, backoff_base=0.001)) as tim:
        with pytest.raises(cls) as info:
            await tim.group_attr.get_group_attr(gid)
    assert info.value.code == code
    assert len(server.requests_for(GET_ATTR)) == 3  # 1 + max_retries


@pytest.mark.parametrize(
    ("code", "classes"),
    [
        (10056, (TimConflictError,)),
        (60025, (TimAppConfigError,)),
        (60026, (TimAppConfigError,)),
        (60027, (TimAppConfigError,)),
        (60028, (TimAppConfigError,)),
        # configuration codes that had another class keep it (both are true)
        (60006, (TimAppConfigError, TimAuthError)),
        (70016, (TimAppConfigError, TimAuthError)),
        (70020, (TimAppConfigError, TimAuthError)),
        (60016, (TimAppConfigError, TimPermissionError)),
        (60017, (TimAppConfigError, TimPermissionError)),
        (60021, (TimAppConfigError, TimPermissionError)),
        (60020, (TimAppConfigError, TimPremiumRequiredError)),
    ],
)
async def test_raised_codes_map_to_their_class_and_are_not_retried(
    server: FakeTimServer, code: int, classes: tuple[type[TimAPIError], ...]
) -> None:
    gid = server.create_group()
    server.faults.script(MODIFY_ATTR, [Fault.code(code, "injected")])
    async with make_client(server) as tim:
        with pytest.raises(TimAPIError) as info:
            await tim.group_attr.modify_group_attr(gid, {"a": "2"})
        assert tim.stats.retries == 0
    err = info.value
    assert all(isinstance(err, cls) for cls in classes), type(err).__mro__
    assert (err.code, err.info, err.api) == (code, "injected", MODIFY_ATTR)
    assert len(server.requests_for(MODIFY_ATTR)) == 1
    assert server.group_attrs(gid) == {}


def test_the_conflict_error_says_what_to_do() -> None:
    assert TimConflictError.__doc__ is not None
    assert "read the latest attributes, then write again" in TimConflictError.__doc__.lower()


async def test_community_group_refusal_10007_is_a_permission_error(
    server: FakeTimServer,
) -> None:
    # The code the emulator answers for clear_group_attr and the counter commands on
    # Community groups.
    gid = server.create_group()
    server.faults.script(CLEAR_ATTR, [Fault.code(10007)])
    async with make_client(server) as tim:
        with pytest.raises(TimPermissionError) as info:
            await tim.group_attr.clear_group_attr(gid)
    assert info.value.code == 10007
    assert len(server.requests_for(CLEAR_ATTR)) == 1


def test_the_readme_error_table_lists_every_code_and_class() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Errors") : text.index("## How calls behave")]
    listed: set[int] = set()
    for low, high in re.findall(r"(\d{5})(?:\u2013(\d{5}))?", section):
        listed.update(range(int(low), int(high or low) + 1))
    assert sorted(set(errors._CODE_TABLE) - listed) == []
    classes = [name for name in errors.__all__ if name.startswith("Tim")]
    assert [name for name in classes if f"`{name}" not in section] == []
    # and each code's row names the class it maps to
    for code, cls in errors._CODE_TABLE.items():
        rows = [row for row in section.splitlines() if str(code) in row or _in_range(row, code)]
        assert any(f"`{cls.__name__}`" in row for row in rows), (code, cls.__name__)


def _in_range(row: str, code: int) -> bool:
    return any(
        int(low) <= code <= int(high) for low, high in re.findall(r"(\d{5})\u2013(\d{5})", row)
    )


def test_every_error_class_is_importable_from_the_package() -> None:
    import tim_async

    classes = [n for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    assert len(classes) >= 25
    for name in classes:
        assert getattr(tim_async, name) is getattr(errors, name), name
        assert name in tim_async.__all__
    assert issubclass(tim_async.TimEventLoopError, tim_async.TimError)


@pytest.mark.parametrize("copy_of", [copy.copy, lambda e: pickle.loads(pickle.dumps(e))])
def test_a_transport_error_copied_or_pickled_keeps_its_message(copy_of: Any) -> None:
    err = errors.TimOutcomeUnknownError("boom", api="a/b", status=502, body_excerpt="xx")
    err._amend(attempts=3)
    again = copy_of(err)
    assert type(again) is type(err)
    assert (again.message, again.api, again.status, again.attempts) == ("boom", "a/b", 502, 3)
    assert str(again) == str(err)
    again._amend(attempts=4, note="n")  # as the session amends an error it re-raises
    assert again.message == "n: boom"
    assert str(again) == "a/b: n: boom; HTTP 502; after 4 attempts"
