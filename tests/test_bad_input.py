"""Bad input and malformed answers.

* Bad arguments (hypothesis) for every public method of ``tim.msg_ext``, ``tim.group_attr`` and
  ``tim.group_counter`` are refused before anything is sent: the exception is a ``TimError``
  and a ``ValueError``/``TypeError`` whose field names the argument, and the emulator's request
  log stays empty. Oversized keys and values are made of multi-byte characters, so that a count
  of characters would pass and only a count of UTF-8 bytes refuses them.
* Malformed answers (missing fields, wrong JSON types, not the envelope, huge bodies, a body
  that never ends) from a small aiohttp server on 127.0.0.1 raise ``TimTransportError`` or
  another typed ``TimError``, never a bare ``KeyError``/``TypeError``, never a hang; unknown
  extra fields are accepted.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tim_async import errors
from tim_async.client import TimClient
from tim_async.models import CounterMode, ExtensionItem
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer

GID = "@TGS#BADINPUT"
MULTIBYTE = "é中😀ü"  # 2, 3, 4 and 2 bytes in UTF-8


# --------------------------------------------------------------------------- strategies


def oversized(limit: int) -> st.SearchStrategy[str]:
    """At most ``limit`` characters but more than ``limit`` UTF-8 bytes."""
    return st.builds(
        lambda ascii_, ch, n: (ascii_ + ch * n)[:limit],
        st.text("abc", max_size=3),
        st.sampled_from(MULTIBYTE),
        st.integers(limit // 2 + 1, limit),
    ).filter(lambda s: len(s.encode()) > limit)


def keys_(n: int) -> list[str]:
    return [f"key{i}" for i in range(n)]


NOT_STR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=5),
    st.lists(st.text(max_size=3), max_size=2),
    st.just(CounterMode.SET.value.encode()),
)
#: A lone surrogate cannot be encoded as UTF-8 (nor sent as JSON).
SURROGATE = st.builds(lambda a, b: f"{a}\ud800{b}", st.text(max_size=3), st.text(max_size=3))
BAD_ID = st.one_of(NOT_STR.filter(lambda v: v is not None), st.just(""), st.none(), SURROGATE)
BAD_OPTIONAL_ID = st.one_of(NOT_STR.filter(lambda v: v is not None), st.just(""), SURROGATE)
NOT_INT = st.one_of(
    st.booleans(), st.floats(), st.text(max_size=4), st.none(), st.just(b"1"), st.just([1])
)
BAD_MSG_SEQ = st.one_of(NOT_INT, st.integers(max_value=-1), st.integers(min_value=2**32))
BAD_START_SEQ = st.one_of(NOT_INT, st.integers(max_value=-1), st.integers(min_value=2**64))
VALID_VALUE = st.text(max_size=5)


def bad_str_mapping(
    max_items: int,
    key_bytes: int,
    value_bytes: int,
    *,
    allow_empty: bool,
    total_bytes: int | None = None,
) -> st.SearchStrategy[Any]:
    cases = [
        st.one_of(NOT_STR, st.text(max_size=5)),  # not a mapping (a bare str included)
        st.lists(st.tuples(st.text(min_size=1), st.text()), min_size=1, max_size=3),  # pairs
        st.builds(lambda k, v: {k: v}, oversized(key_bytes), VALID_VALUE),
        st.builds(lambda v: {"k": v}, oversized(value_bytes)),
        st.builds(lambda v: {"k": v}, NOT_STR),
        st.builds(lambda k: {k: "v"}, NOT_STR.filter(lambda k: k.__hash__ is not None)),
        st.just({"": "v"}),
        st.integers(max_items + 1, max_items + 30).map(lambda n: dict.fromkeys(keys_(n), "v")),
        st.just({"k": "lone \ud800 surrogate"}),
    ]
    if not allow_empty:
        cases.append(st.just({}))
    if total_bytes is not None:  # each value fits, together they do not
        value = MULTIBYTE[1] * (value_bytes // 3)
        count = total_bytes // len(value.encode()) + 1
        assert count <= max_items and count * len(value) <= total_bytes
        cases.append(st.just(dict.fromkeys(keys_(count), value)))
    return st.one_of(cases)


def bad_key_list(max_items: int, key_bytes: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(max_size=5),  # a bare str is not a list of keys
        st.integers(),
        st.floats(),
        st.just([]),
        st.just(()),
        st.integers(max_items + 1, max_items + 30).map(keys_),
        st.builds(lambda k: ["a", k, "b", k], st.text(min_size=1, max_size=5)),  # duplicates
        st.builds(lambda k: ["a", k], oversized(key_bytes)),
        st.builds(lambda k: ["a", k], NOT_STR),
        st.just(["a", ""]),
    )


BAD_EXT_VALUES = st.one_of(
    st.none(),  # required for "set"
    bad_str_mapping(20, 100, 1000, allow_empty=False),
    st.just([]),
    st.just(["a", "b"]),  # keys are not pairs for "set"
    st.builds(
        lambda k: [ExtensionItem(k, "v", 0), ExtensionItem(k, "w", 0)], st.text("ab", min_size=1)
    ),
    st.builds(lambda s: [ExtensionItem("k", "v", s)], BAD_START_SEQ),
    st.builds(lambda v: [ExtensionItem("k", v, 0)], st.one_of(oversized(1000), NOT_STR)),
    st.builds(
        lambda k: [ExtensionItem(k, "v", 0)], st.one_of(oversized(100), NOT_STR, st.just(""))
    ),
    st.integers(21, 40).map(lambda n: [ExtensionItem(k, "v", 0) for k in keys_(n)]),
)
BAD_OPERATION = st.one_of(
    st.text(max_size=8).filter(lambda s: s.lower() not in {"set", "delete", "clear"}),
    st.integers().filter(lambda i: i not in (1, 2, 3)),
    st.booleans(),
    st.none(),
    st.floats(),
)
BAD_COUNTERS = st.one_of(
    st.one_of(NOT_STR, st.text(max_size=5)),
    st.just({}),
    st.integers(21, 40).map(lambda n: dict.fromkeys(keys_(n), 1)),
    st.builds(lambda k: {k: 1}, st.one_of(oversized(128), st.just(""), st.integers())),
    st.builds(
        lambda v: {"k": v},
        st.one_of(
            st.booleans(),
            st.floats(),
            st.text(max_size=3),
            st.none(),
            st.integers(min_value=2**63),
            st.integers(max_value=-(2**63) - 1),
        ),
    ),
)
BAD_MODE = st.one_of(
    st.text(max_size=10).filter(lambda s: s.lower() not in {"set", "increase", "decrease"}),
    st.integers(),
    st.booleans(),
    st.none(),
)
BAD_OPTIONAL_KEYS = st.one_of(bad_key_list(20, 128))

#: method -> (valid arguments, {argument: strategy of bad values})
METHODS: dict[str, tuple[dict[str, Any], dict[str, st.SearchStrategy[Any]]]] = {
    "msg_ext.group_get_key_values": (
        {"group_id": GID, "msg_seq": 1, "start_seq": 0},
        {"group_id": BAD_ID, "msg_seq": BAD_MSG_SEQ, "start_seq": BAD_START_SEQ},
    ),
    "msg_ext.iter_group_key_values": (
        {"group_id": GID, "msg_seq": 1, "start_seq": 0},
        {"group_id": BAD_ID, "msg_seq": BAD_MSG_SEQ, "start_seq": BAD_START_SEQ},
    ),
    "msg_ext.get_key_values": (
        {"to_account": "bob", "msg_key": "1_2_3", "from_account": None, "start_seq": 0},
        {
            "to_account": BAD_ID,
            "msg_key": BAD_ID,
            "from_account": BAD_OPTIONAL_ID,
            "start_seq": BAD_START_SEQ,
        },
    ),
    "msg_ext.iter_key_values": (
        {"to_account": "bob", "msg_key": "1_2_3", "from_account": "amy", "start_seq": 0},
        {
            "to_account": BAD_ID,
            "msg_key": BAD_ID,
            "from_account": BAD_OPTIONAL_ID,
            "start_seq": BAD_START_SEQ,
        },
    ),
    "msg_ext.group_set_key_values": (
        {"group_id": GID, "msg_seq": 1, "values": {"k": "v"}, "operation": "set"},
        {
            "group_id": BAD_ID,
            "msg_seq": BAD_MSG_SEQ,
            "values": BAD_EXT_VALUES,
            "operation": BAD_OPERATION,
        },
    ),
    "msg_ext.set_key_values": (
        {"to_account": "bob", "msg_key": "1_2_3", "values": {"k": "v"}, "operation": "set"},
        {
            "to_account": BAD_ID,
            "msg_key": BAD_ID,
            "from_account": BAD_OPTIONAL_ID,
            "values": BAD_EXT_VALUES,
            "operation": BAD_OPERATION,
        },
    ),
    "group_attr.get_group_attr": ({"group_id": GID}, {"group_id": BAD_ID}),
    "group_attr.modify_group_attr": (
        {"group_id": GID, "attrs": {"k": "v"}},
        {
            "group_id": BAD_ID,
            "attrs": bad_str_mapping(16, 32, 4000, allow_empty=False, total_bytes=16000),
        },
    ),
    "group_attr.set_group_attr": (
        {"group_id": GID, "attrs": {"k": "v"}},
        {
            "group_id": BAD_ID,
            "attrs": bad_str_mapping(16, 32, 4000, allow_empty=True, total_bytes=16000),
        },
    ),
    "group_attr.delete_group_attr": (
        {"group_id": GID, "keys": ["k"]},
        {"group_id": BAD_ID, "keys": bad_key_list(16, 32)},
    ),
    "group_attr.clear_group_attr": ({"group_id": GID}, {"group_id": BAD_ID}),
    "group_counter.get_group_counter": (
        {"group_id": GID, "keys": None},
        {"group_id": BAD_ID, "keys": BAD_OPTIONAL_KEYS},
    ),
    "group_counter.update_group_counter": (
        {"group_id": GID, "counters": {"k": 1}, "mode": CounterMode.INCREASE},
        {"group_id": BAD_ID, "counters": BAD_COUNTERS, "mode": BAD_MODE},
    ),
    "group_counter.delete_group_counter": (
        {"group_id": GID, "keys": ["k"]},
        {"group_id": BAD_ID, "keys": BAD_OPTIONAL_KEYS},
    ),
}


def bad_call(method: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(the argument made bad, all arguments)."""
    valid, bad = METHODS[method]
    return st.sampled_from(sorted(bad)).flatmap(
        lambda name: bad[name].map(lambda value: (name, {**valid, name: value}))
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def server() -> AsyncIterator[FakeTimServer]:
    async with FakeTimServer(rate_limit=None) as srv:
        srv.create_group(GID)
        yield srv


@pytest.fixture
async def tim(server: FakeTimServer) -> AsyncIterator[TimClient]:
    async with TimClient(
        server.sdkappid, server.admin, secret_key=TEST_SECRET_KEY, base_url=server.base_url
    ) as client:
        yield client


def method_of(tim: TimClient, method: str) -> Callable[..., Any]:
    namespace, name = method.split(".")
    return getattr(getattr(tim, namespace), name)  # type: ignore[no-any-return]


async def invoke(tim: TimClient, method: str, args: dict[str, Any]) -> Any:
    result = method_of(tim, method)(**args)
    if inspect.iscoroutine(result):
        return await result
    return [page async for page in result]  # iter_*: consumes the pages


# --------------------------------------------------------------------------- bad arguments


async def test_valid_arguments_are_sent(tim: TimClient, server: FakeTimServer) -> None:
    """The baseline every bad case starts from: valid, and sent (so a refusal is the bad
    argument's doing)."""
    gid_seq = server.send_group_msg(GID)
    msg_key = server.send_c2c_msg("amy", "bob", msg_key="1_2_3")
    assert msg_key == "1_2_3" and gid_seq == 1
    for method, (valid, _) in METHODS.items():
        await invoke(tim, method, valid)
    assert len(server.requests) == len(METHODS)
    assert all(entry.error_code == 0 for entry in server.requests), [
        (e.command, e.error_code) for e in server.requests if e.error_code
    ]


@pytest.mark.parametrize("method", list(METHODS))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_bad_arguments_are_refused_before_sending(
    tim: TimClient, server: FakeTimServer, method: str, data: st.DataObject
) -> None:
    name, args = data.draw(bad_call(method))
    call = method_of(tim, method)
    with pytest.raises(errors.TimError) as caught:
        result = call(**args)
        if inspect.iscoroutine(result):
            await result
    exc = caught.value
    assert isinstance(exc, ValueError | TypeError), repr(exc)
    assert isinstance(exc, errors.TimValidationError | errors.TimTypeError), repr(exc)
    assert exc.field.split("[")[0].split(".")[0] == name, (exc.field, name)
    assert str(exc).startswith(name), str(exc)
    assert server.requests == []


@pytest.mark.parametrize(
    ("method", "args", "field"),
    [
        ("msg_ext.group_set_key_values", {"operation": "clear", "values": {"a": "b"}}, "values"),
        ("msg_ext.group_set_key_values", {"operation": "delete", "values": None}, "values"),
        ("msg_ext.group_set_key_values", {"operation": 2, "values": ["k", "k"]}, "values"),
        ("msg_ext.set_key_values", {"operation": "clear", "values": ["a"]}, "values"),
        ("msg_ext.set_key_values", {"operation": "delete", "values": keys_(21)}, "values"),
        ("group_counter.get_group_counter", {"keys": []}, "keys"),
        ("group_counter.delete_group_counter", {"keys": iter([])}, "keys"),
        ("group_counter.update_group_counter", {"counters": {"k": True}}, "counters"),
        ("msg_ext.group_get_key_values", {"msg_seq": 2**32}, "msg_seq"),
        ("msg_ext.group_get_key_values", {"msg_seq": True}, "msg_seq"),
    ],
)
async def test_bad_argument_combinations(
    tim: TimClient, server: FakeTimServer, method: str, args: dict[str, Any], field: str
) -> None:
    valid, _ = METHODS[method]
    with pytest.raises(errors.TimError) as caught:
        await invoke(tim, method, {**valid, **args})
    assert isinstance(caught.value, ValueError | TypeError)
    assert str(caught.value).startswith(field)
    assert server.requests == []


@pytest.mark.parametrize(
    ("method", "field", "limit"),
    [
        ("group_attr.modify_group_attr", "attrs", 32),
        ("group_counter.update_group_counter", "counters", 128),
        ("msg_ext.group_set_key_values", "values", 100),
    ],
)
async def test_key_limits_count_bytes_not_characters(
    tim: TimClient, server: FakeTimServer, method: str, field: str, limit: int
) -> None:
    valid, _ = METHODS[method]
    fits = "中" * (limit // 3)  # at most `limit` bytes: sent
    too_big = "中" * (limit // 3 + 1)  # still fewer than `limit` characters
    assert len(too_big) < limit < len(too_big.encode())
    value: Any = 1 if field == "counters" else "v"
    with pytest.raises(errors.TimValidationError, match=f"{len(too_big.encode())} bytes"):
        await invoke(tim, method, {**valid, field: {too_big: value}})
    assert server.requests == []
    if field == "values":
        server.send_group_msg(GID)
    await invoke(tim, method, {**valid, field: {fits: value}})
    assert [e.error_code for e in server.requests] == [0]


@pytest.mark.parametrize(
    ("method", "field"),
    [
        ("group_attr.get_group_attr", "group_id"),
        ("msg_ext.get_key_values", "to_account"),
        ("msg_ext.set_key_values", "msg_key"),
    ],
)
async def test_lone_surrogate_in_an_id_is_refused_naming_the_field(
    tim: TimClient, server: FakeTimServer, method: str, field: str
) -> None:
    valid, _ = METHODS[method]
    with pytest.raises(errors.TimError) as caught:
        await invoke(tim, method, {**valid, field: "bad\ud800id"})
    assert server.requests == []
    assert isinstance(caught.value, ValueError | TypeError)
    assert str(caught.value).startswith(field), str(caught.value)


class RepeatingMapping(Mapping[str, Any]):
    """A Mapping (not a dict) whose ``items()`` repeat a key, as a careless wrapper might."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self._pairs = pairs

    def __getitem__(self, key: str) -> Any:
        return dict(self._pairs)[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


@pytest.mark.parametrize(
    ("method", "field"),
    [
        ("group_attr.modify_group_attr", "attrs"),
        ("group_attr.set_group_attr", "attrs"),
        ("msg_ext.group_set_key_values", "values"),
        ("msg_ext.set_key_values", "values"),
        ("group_counter.update_group_counter", "counters"),
    ],
)
async def test_a_mapping_that_repeats_a_key_is_refused(
    tim: TimClient, server: FakeTimServer, method: str, field: str
) -> None:
    valid, _ = METHODS[method]
    pairs: list[tuple[str, Any]] = [("k", "1"), ("other", "2"), ("k", "3")]
    if method.startswith("group_counter"):  # an Increase that would add "k" twice
        pairs = [(key, int(value)) for key, value in pairs]
    repeated = RepeatingMapping(pairs)
    with pytest.raises(errors.TimValidationError, match="duplicate key 'k'") as caught:
        await invoke(tim, method, {**valid, field: repeated})
    assert caught.value.field == field
    assert server.requests == []


def test_a_secret_key_that_is_not_utf8_is_refused_at_construction() -> None:
    # os.environ turns undecodable bytes into lone surrogates.
    key = "0123456789abcdef\udcff\udcfe0123456789abcdef"
    with pytest.raises(errors.TimConfigError, match="secret_key") as caught:
        TimClient(1400000000, secret_key=key, base_url="http://127.0.0.1:9")
    assert isinstance(caught.value, ValueError)
    text = str(caught.value) + repr(caught.value)
    assert "0123456789abcdef" not in text and "udcff" not in text and "\udcff" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"x": float("nan")}, "body['x']"),
        ({"x": [1, {"y": float("inf")}]}, "body['x'][1]['y']"),
        ({"x": (1.5, -float("inf"))}, "body['x'][1]"),
    ],
)
async def test_call_refuses_nan_and_infinity(
    tim: TimClient, server: FakeTimServer, body: dict[str, Any], path: str
) -> None:
    with pytest.raises(errors.TimValidationError) as caught:
        await tim.call("group_open_attr_http_svc/get_group_attr", body)
    assert caught.value.field == "body"
    assert path in str(caught.value) and "NaN and infinity" in str(caught.value)
    assert server.requests == []


async def test_call_accepts_any_mapping(tim: TimClient, server: FakeTimServer) -> None:
    gid = server.create_group()
    server.set_group_attrs(gid, {"a": "1"})
    body = types.MappingProxyType({"GroupId": gid, "Extra": types.MappingProxyType({"t": (1,)})})
    answer = await tim.call("group_open_attr_http_svc/get_group_attr", body)
    assert answer["GroupAttrAry"] == [{"key": "a", "value": "1"}]
    assert server.requests[0].body == {"GroupId": gid, "Extra": {"t": [1]}}
    with pytest.raises(errors.TimValidationError, match="repeats a key"):
        await tim.call("a/b", RepeatingMapping([("k", "1"), ("k", "2")]))
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- malformed answers

OK = {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
PULL_OK = {
    **OK,
    "ExtensionList": [{"Key": "k", "Value": "v", "Seq": 1}],
    "CompleteFlag": 1,
    "LatestSeq": 1,
    "ClearSeq": 0,
}
ATTR_OK = {**OK, "GroupAttrAry": [{"key": "k", "value": "v"}]}
COUNTER_OK = {**OK, "GroupCounter": [{"Key": "k", "Value": 1}]}
SET_OK = {
    **OK,
    "ExtensionList": [
        {"ErrorCode": 0, "ErrorInfo": "", "Extension": {"Key": "k", "Value": "v", "Seq": 2}}
    ],
}

#: name -> (method, arguments, a valid answer)
CALLS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "group_pull": ("msg_ext.group_get_key_values", {"group_id": GID, "msg_seq": 1}, PULL_OK),
    "c2c_pull": ("msg_ext.get_key_values", {"to_account": "bob", "msg_key": "1_2_3"}, PULL_OK),
    "get_attr": ("group_attr.get_group_attr", {"group_id": GID}, ATTR_OK),
    "get_counter": ("group_counter.get_group_counter", {"group_id": GID}, COUNTER_OK),
    "update_counter": (
        "group_counter.update_group_counter",
        {"group_id": GID, "counters": {"k": 1}},
        COUNTER_OK,
    ),
    "group_set": (
        "msg_ext.group_set_key_values",
        {"group_id": GID, "msg_seq": 1, "values": {"k": "v"}},
        SET_OK,
    ),
    "c2c_set": (
        "msg_ext.set_key_values",
        {"to_account": "bob", "msg_key": "1_2_3", "values": {"k": "v"}},
        SET_OK,
    ),
}


def patch(answer: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``answer`` with ``path`` set to ``value`` (``DELETE``: removed)."""
    copy = orjson.loads(orjson.dumps(answer))
    target = copy
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy  # type: ignore[no-any-return]


DELETE = object()


def _values(*values: Any) -> tuple[Any, ...]:
    return values


ITEM = ("ExtensionList", 0)
MALFORMED: list[tuple[str, tuple[str | int, ...], Any]] = [
    *[("group_pull", (f,), DELETE) for f in ("CompleteFlag", "LatestSeq", "ClearSeq")],
    *[("group_pull", (*ITEM, f), DELETE) for f in ("Key", "Value", "Seq")],
    *[("c2c_pull", (*ITEM, "Seq"), v) for v in _values("1", 1.5, True, None, [1])],
    *[("group_pull", (*ITEM, "Key"), v) for v in _values(5, None, {"a": 1})],
    *[("group_pull", ("ExtensionList",), v) for v in _values({}, "x", [1], [None], 3)],
    *[("group_pull", ("CompleteFlag",), v) for v in _values("1", 2, True, None, -1)],
    *[("group_pull", ("LatestSeq",), v) for v in _values(1.0, "1")],
    *[
        ("get_attr", ("GroupAttrAry",), v)
        for v in _values("x", {}, [None], [{"key": "k"}], [{"key": 1, "value": "v"}])
    ],
    *[("get_counter", ("GroupCounter", 0, "Value"), v) for v in _values("1", 1.5, None, True)],
    ("get_counter", ("GroupCounter", 0, "Key"), DELETE),
    ("get_counter", ("GroupCounter",), {"Key": "k", "Value": 1}),
    ("update_counter", ("GroupCounter", 0, "Value"), DELETE),
    ("update_counter", ("GroupCounter",), "k=1"),
    ("group_set", ("ExtensionList", 0, "Extension"), "x"),
    ("group_set", ("ExtensionList", 0, "Extension", "Key"), DELETE),
    ("group_set", ("ExtensionList", 0, "ErrorCode"), "0"),
    ("c2c_set", ("ExtensionList",), [{"Value": "v", "Seq": 1}]),
    ("c2c_set", ("ExtensionList",), [7]),
]

#: Bodies that are not the JSON envelope, answered with HTTP 200.
NOT_ENVELOPE: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"123",
    b'"OK"',
    b'{"ErrorCode": 0}',
    b'{"ActionStatus": "OK"}',
    b'{"ActionStatus": "OK", "ErrorCode": "0"}',
    b'{"ActionStatus": "OK", "ErrorCode": true}',
    b'{"ActionStatus": "OK", "ErrorCode": 0.0}',
    b'{"ActionStatus": "OK", "ErrorCode": null}',
    b'{"ActionStatus": "OK", "ErrorCode": 1e999}',
    b'{"ActionStatus": "OK", "ErrorCode": 0, "X": NaN}',
    b'{"ActionStatus": "OK", "ErrorCode": 0, "X": "\xff\xfe"}',
    b'{"ActionStatus": "OK", "ErrorCode": 18446744073709551616000}',
    b'{"ActionStatus": "OK", "ErrorCode": 0',
    b"[" * 100_000 + b"]" * 100_000,
    b"<html><body>502 Bad Gateway</body></html>",
]


class AnswerServer:
    """A tiny aiohttp server on 127.0.0.1 answering every request with ``answer``."""

    def __init__(self) -> None:
        self.requests = 0
        self.answer: Callable[[web.Request], Any] = lambda request: web.json_response(OK)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        result = self.answer(request)
        if inspect.isawaitable(result):
            result = await result
        return result  # type: ignore[no-any-return]

    def body(self, raw: bytes, status: int = 200, **headers: str) -> None:
        self.answer = lambda request: web.Response(
            status=status, body=raw, content_type="application/json", headers=headers
        )

    def json(self, answer: Any) -> None:
        self.body(orjson.dumps(answer))


@pytest.fixture
async def answers() -> AsyncIterator[tuple[AnswerServer, TimClient]]:
    server = AnswerServer()
    app = web.Application()
    app.router.add_post("/v4/{service}/{command}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    async with TimClient(
        1400000000,
        secret_key=TEST_SECRET_KEY,
        base_url=f"http://127.0.0.1:{port}",
        rate_limit=None,
        timeout=2.0,
        retry=RetryPolicy(max_retries=1, backoff_base=0.01),
    ) as tim:
        yield server, tim
    await runner.cleanup()


async def call_expecting(
    tim: TimClient, name: str, expected: type[errors.TimError]
) -> errors.TimError:
    method, args, _ = CALLS[name]
    with pytest.raises(errors.TimError) as caught:
        async with asyncio.timeout(10):  # never a hang
            await invoke(tim, method, args)
    exc = caught.value
    assert isinstance(exc, expected), repr(exc)
    assert not isinstance(exc, errors.TimTypeError | errors.TimValidationError)
    return exc


@pytest.mark.parametrize(("name", "path", "value"), MALFORMED, ids=repr)
async def test_malformed_answers_raise_transport_errors(
    answers: tuple[AnswerServer, TimClient], name: str, path: tuple[str | int, ...], value: Any
) -> None:
    server, tim = answers
    server.json(patch(CALLS[name][2], path, value))
    exc = await call_expecting(tim, name, errors.TimTransportError)
    assert "malformed answer" in str(exc) and str(path[0]) in str(exc), str(exc)
    # A well-formed envelope with a malformed field is a final answer: not resent.
    assert server.requests == 1


@pytest.mark.parametrize("raw", NOT_ENVELOPE, ids=lambda raw: repr(raw[:30]))
async def test_bodies_that_are_not_the_envelope_raise_transport_errors(
    answers: tuple[AnswerServer, TimClient], raw: bytes
) -> None:
    server, tim = answers
    server.body(raw)
    exc = await call_expecting(tim, "get_attr", errors.TimTransportError)
    assert "not the JSON envelope" in str(exc)
    assert len(str(exc)) < 500
    assert server.requests == 2  # an unreadable answer is resent once (max_retries=1)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"ActionStatus": "FAIL", "ErrorCode": -5, "ErrorInfo": {"a": 1}}, -5),
        ({"ActionStatus": "OK", "ErrorCode": 2**40}, 2**40),
        ({"ErrorCode": 10004, "ActionStatus": "FAIL", "ErrorInfo": None, "Extra": [1]}, 10004),
    ],
)
async def test_odd_error_envelopes_are_api_errors(
    answers: tuple[AnswerServer, TimClient], answer: dict[str, Any], code: int
) -> None:
    server, tim = answers
    server.json(answer)
    exc = await call_expecting(tim, "get_counter", errors.TimAPIError)
    assert isinstance(exc, errors.TimAPIError) and exc.code == code


@pytest.mark.parametrize("name", list(CALLS))
async def test_unknown_extra_fields_are_accepted(
    answers: tuple[AnswerServer, TimClient], name: str
) -> None:
    server, tim = answers
    method, args, answer = CALLS[name]
    extra = orjson.loads(orjson.dumps(answer))
    extra["NewField"] = {"nested": [1, "x", None]}
    extra["ErrorDisplay"] = ""
    for key in ("ExtensionList", "GroupAttrAry", "GroupCounter"):
        for item in extra.get(key, []):
            item["Unknown"] = 1
            if isinstance(item.get("Extension"), dict):
                item["Extension"]["Unknown"] = [2]
    server.json(extra)
    result = await invoke(tim, method, args)
    server.json(answer)
    assert result == await invoke(tim, method, args)


async def test_huge_bodies_raise_short_errors_or_are_read(
    answers: tuple[AnswerServer, TimClient],
) -> None:
    server, tim = answers
    # 5 MB of HTML: not the envelope; the message holds a short excerpt only.
    server.body(b"<html>" + b"x" * 5_000_000 + b"</html>")
    exc = await call_expecting(tim, "get_attr", errors.TimTransportError)
    assert len(str(exc)) < 500
    # A 5 MB envelope with a huge unknown field: accepted.
    server.json({**ATTR_OK, "Junk": "j" * 5_000_000})
    assert await tim.group_attr.get_group_attr(GID) == {"k": "v"}
    # A 5 MB page whose very last pair is malformed: named precisely, message short.
    items = [{"Key": f"k{i}", "Value": "v" * 60, "Seq": i + 1} for i in range(50_000)]
    items[-1]["Seq"] = "x"
    server.json({**PULL_OK, "ExtensionList": items})
    exc = await call_expecting(tim, "group_pull", errors.TimTransportError)
    assert "$.ExtensionList[49999].Seq" in str(exc) and len(str(exc)) < 500


async def test_an_endless_body_is_cut_off_not_buffered(
    answers: tuple[AnswerServer, TimClient],
) -> None:
    """A body that never ends (a broken proxy) is cut off at ``MAX_ANSWER_BYTES`` instead of
    being buffered until the timeout (~100 MB/s on loopback)."""
    server, tim = answers
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b'{"ActionStatus": "OK", "ErrorCode": 0, "Junk": "' + b"x" * 65536
        try:
            while True:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            return response

    server.answer = endless
    exc = await call_expecting(tim, "get_attr", errors.TimTransportError)
    assert "larger than" in str(exc) and len(str(exc)) < 500
    assert not isinstance(exc, errors.TimTimeoutError)
    # The excerpt is the answer's start (kept while reading), never the whole body joined.
    assert isinstance(exc, errors.TimTransportError)
    assert (
        exc.body_excerpt == ('{"ActionStatus": "OK", "ErrorCode": 0, "Junk": "' + "x" * 200)[:200]
    )
    # A declared length over the limit is refused before reading anything.
    server.answer = lambda request: web.Response(
        body=b"{" * 10, headers={"Content-Length": str(64 * 2**20)}
    )
    exc = await call_expecting(tim, "get_attr", errors.TimTransportError)
    assert "larger than" in str(exc)


async def test_a_trickling_body_ends_at_the_timeout(
    answers: tuple[AnswerServer, TimClient],
) -> None:
    server, tim = answers

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while True:
                await response.write(b" ")
                await asyncio.sleep(0.05)
        except (ConnectionError, RuntimeError):
            return response

    server.answer = trickle
    loop = asyncio.get_running_loop()
    start = loop.time()
    await call_expecting(tim, "get_attr", errors.TimTimeoutError)
    # The body never ends: the 2 s timeout ended the call (not an early error; generous slack
    # for a busy machine; call_expecting's 10 s guard fails a hang).
    assert 2.0 * 0.95 <= loop.time() - start < 9
