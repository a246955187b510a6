"""README statements of "Errors" and "How calls behave" that no other test checked, each against
a real local server (the emulator) and, where the README gives a list or a table, read from the
README itself so the documentation and the code cannot drift apart unnoticed."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from _helpers import max_in_window

from tim_async import CounterMode, RetryPolicy, TimClient, errors
from tim_async.testing import FakeTimServer, Fault
from tim_async.usersig import decode_usersig

README = Path(__file__).resolve().parent.parent / "README.md"
GID = "@TGS#README"
GET_ATTR = "group_open_attr_http_svc/get_group_attr"
GET_COUNTER = "group_open_http_svc/get_group_counter"
UPDATE_COUNTER = "group_open_http_svc/update_group_counter"


def _client(server: FakeTimServer, **kwargs: object) -> TimClient:
    return TimClient(
        server.sdkappid,
        server.admin,
        secret_key=server.secret_key,
        base_url=server.base_url,
        **kwargs,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ the error table


def _error_rows() -> list[tuple[str, str]]:
    """(exception name, codes cell) for every row of the README's Errors table that lists
    codes (the ├/└ rows under TimAPIError, at any depth)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Errors") : text.index("## How calls behave")]
    return re.findall(r"^\|(?:[ │]|&nbsp;)*[├└] `(\w+)` \| (.*?) \|$", section, re.M)


def _codes(cell: str) -> list[int]:
    codes: list[int] = []
    for low, high in re.findall(r"\b(\d{5})(?:\s*[\u2013-]\s*(\d{5}))?\b", cell):
        codes += range(int(low), int(high or low) + 1)
    return codes


def _error_table() -> list[tuple[str, int]]:
    """(exception name, code) for every code of the README's Errors table. "every 70xxx" is
    checked at 70002 and 70999 (70001 renews the UserSig first)."""
    rows: list[tuple[str, int]] = []
    for name, cell in _error_rows():
        rows += [(name, code) for code in _codes(cell)]
        if re.search(r"every (other )?70xxx", cell):
            rows += [(name, code) for code in (70002, 70999) if code not in _codes(cell)]
    return rows


ERROR_TABLE = _error_table()


def test_the_error_table_was_read() -> None:
    names = {name for name, _ in ERROR_TABLE}
    assert len(ERROR_TABLE) >= 30 and len(names) >= 8, ERROR_TABLE
    codes = [code for _, code in ERROR_TABLE]
    assert len(codes) == len(set(codes)), "a code listed under two classes"


@pytest.mark.parametrize(
    ("name", "code"), [pytest.param(n, c, id=f"{c}-{n}") for n, c in ERROR_TABLE]
)
async def test_every_code_of_the_error_table_raises_its_class(name: str, code: int) -> None:
    """README: "the server answered ErrorCode != 0; subclasses by meaning, each keeps .code,
    .info, .api, .body"."""
    cls = getattr(errors, name)
    async with FakeTimServer(rate_limit=None) as server:
        # Twice: 70001 renews the UserSig and retries once before it raises.
        server.faults.script(GET_ATTR, [Fault.code(code, f"the server says {code}")] * 2)
        async with _client(server, retry=RetryPolicy(max_retries=0)) as tim:
            with pytest.raises(errors.TimAPIError) as raised:
                await tim.call(GET_ATTR, {"GroupId": GID})
    exc = raised.value
    # isinstance: ``except <the class the README names>`` catches it (it may be a subclass).
    assert isinstance(exc, cls), f"{code}: {type(exc).__name__}, README says {name}"
    assert isinstance(exc, errors.TimError)
    assert (exc.code, exc.info, exc.api) == (code, f"the server says {code}", GET_ATTR)
    assert exc.body["ErrorCode"] == code


def test_every_code_the_sdk_maps_is_in_the_readme_table() -> None:
    """The other direction: a code that gets its own exception class is documented."""
    documented = {code for _, code in ERROR_TABLE}
    every_70xxx = [name for name, cell in _error_rows() if re.search(r"every (other )?70xxx", cell)]
    undocumented = []
    for code in range(10000, 100000):
        cls = type(errors.error_for_code(code, "", "svc/cmd"))
        if cls is errors.TimAPIError or code in documented:
            continue
        if (
            70000 <= code <= 70999
            and every_70xxx
            and issubclass(cls, getattr(errors, every_70xxx[0]))
        ):
            continue
        undocumented.append((code, cls.__name__))
    assert undocumented == []


def test_bad_input_and_configuration_are_also_value_and_type_errors() -> None:
    # README: TimValidationError / TimTypeError "also a ValueError / TypeError";
    # TimConfigError "at construction (also a ValueError)".
    with pytest.raises(ValueError) as config:
        TimClient(0, secret_key="k")
    assert isinstance(config.value, errors.TimConfigError)
    with pytest.raises(ValueError) as both:
        TimClient(1400000000, secret_key="k", usersig="s")
    assert isinstance(both.value, errors.TimConfigError)


async def test_bad_input_is_a_value_or_type_error_and_nothing_is_sent() -> None:
    async with FakeTimServer(rate_limit=None) as server:
        server.create_group(GID)
        async with _client(server) as tim:
            with pytest.raises(ValueError) as value:
                await tim.group_attr.modify_group_attr(GID, {"k" * 33: "v"})
            with pytest.raises(TypeError) as type_:
                await tim.group_counter.update_group_counter(GID, {"like": "1"})  # type: ignore[dict-item]
        assert server.requests == []
    assert isinstance(value.value, errors.TimValidationError)
    assert isinstance(type_.value, errors.TimTypeError)
    assert "32" in str(value.value)  # the documented limit is named


async def test_use_after_close_is_a_closed_error() -> None:
    async with FakeTimServer(rate_limit=None) as server:
        tim = _client(server)
        async with tim:
            await tim.call(GET_COUNTER, {"GroupId": server.create_group(GID)})
        with pytest.raises(errors.TimClosedError):
            await tim.call(GET_COUNTER, {"GroupId": GID})
        assert len(server.requests) == 1


# ------------------------------------------------------------------ HTTP statuses retried


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_statuses_are_retried_for_reads(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """README: "Retried: ... HTTP 502/503/504", logged at DEBUG on the logger ``tim_async``."""
    caplog.set_level(logging.DEBUG, logger="tim_async")
    async with FakeTimServer(rate_limit=None) as server:
        server.create_group(GID)
        server.set_group_attrs(GID, {"a": "1"})
        server.faults.script(GET_ATTR, [Fault.http(status)])
        async with _client(server, retry=RetryPolicy(backoff_base=0.01)) as tim:
            assert await tim.group_attr.get_group_attr(GID) == {"a": "1"}
        assert [e.http_status for e in server.requests_for(GET_ATTR)] == [status, 200]
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert retries and all(r.name == "tim_async" and r.levelno == logging.DEBUG for r in retries)


@pytest.mark.parametrize(("status", "resent"), [(502, False), (503, True), (504, False)])
async def test_gateway_statuses_and_an_increase(status: int, resent: bool) -> None:
    """README: a 502/504 may have been applied, so an Increase is never resent and raises
    TimOutcomeUnknownError; 503 says "not applied", so it is retried for every call."""
    async with FakeTimServer(rate_limit=None) as server:
        server.create_group(GID)
        server.faults.script(UPDATE_COUNTER, [Fault.http(status)])
        async with _client(server, retry=RetryPolicy(backoff_base=0.01)) as tim:
            increase = tim.group_counter.update_group_counter(
                GID, {"n": 1}, mode=CounterMode.INCREASE
            )
            if resent:
                assert await increase == {"n": 1}
            else:
                with pytest.raises(errors.TimOutcomeUnknownError):
                    await increase
        assert len(server.requests_for(UPDATE_COUNTER)) == (2 if resent else 1)


async def test_unreadable_answer_to_an_increase_is_outcome_unknown() -> None:
    async with FakeTimServer(rate_limit=None) as server:
        server.create_group(GID)
        server.faults.script(UPDATE_COUNTER, [Fault.NON_JSON])
        async with _client(server) as tim:
            with pytest.raises(errors.TimOutcomeUnknownError):
                await tim.group_counter.update_group_counter(
                    GID, {"n": 1}, mode=CounterMode.DECREASE
                )
        assert len(server.requests_for(UPDATE_COUNTER)) == 1


# ------------------------------------------------------------------ UserSig defaults


async def test_default_usersig_is_valid_one_day_and_cached() -> None:
    """README: "valid usersig_ttl seconds (default 1 day), cached"."""
    async with FakeTimServer(rate_limit=None) as server:
        server.create_group(GID)
        async with _client(server) as tim:
            for _ in range(3):
                await tim.call(GET_COUNTER, {"GroupId": GID})
        sigs = {entry.query["usersig"] for entry in server.requests}
    assert len(sigs) == 1
    assert decode_usersig(sigs.pop())["TLS.expire"] == 86400


# ------------------------------------------------------------------ the rate limit


def test_max_in_any_second_helper() -> None:
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_window([]) == 0


async def test_default_limit_is_200_per_command_and_two_commands_each_run_at_it() -> None:
    """README: "The server counts calls per REST command per SDKAppID per second (200/s by
    default). The client keeps one limiter per command, so two commands each run at the full
    rate. ... no sliding second at the server ever holds more than rate_limit calls of one
    command". The emulator enforces 200/s per command (60007 above it)."""
    async with FakeTimServer(rate_limit=200) as server:
        server.create_group(GID)
        server.set_group_attrs(GID, {"a": "1"})
        async with _client(server, retry=RetryPolicy(max_retries=0)) as tim:  # default limit
            calls = [tim.call(GET_ATTR, {"GroupId": GID}) for _ in range(230)]
            calls += [tim.call(GET_COUNTER, {"GroupId": GID}) for _ in range(230)]
            await asyncio.gather(*calls)
        log = server.requests
    assert [e for e in log if e.error_code != 0] == []  # no 60007: never over the limit
    per_command = {
        command: max_in_window([e.time for e in log if e.command == command])
        for command in (GET_ATTR, GET_COUNTER)
    }
    assert all(n <= 200 for n in per_command.values()), per_command
    # One shared budget would never let more than 200 of both into one second.
    assert max_in_window([e.time for e in log]) > 200, per_command
