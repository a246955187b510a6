"""Models (tim_async.models) and the wire converter (tim_async._wire)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import pickle
import tracemalloc
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tim_async import _wire
from tim_async.endpoints.group_attr import _GetAnswer
from tim_async.endpoints.group_counter import _Counter, _CountersAnswer, _KeysRequest
from tim_async.endpoints.msg_ext import MsgExt, _GetRequest, _GroupSetRequest, _SetAnswer
from tim_async.errors import TimError, TimTransportError, TimValidationError
from tim_async.models import (
    CounterMode,
    ExtensionItem,
    ExtensionList,
    ExtensionPage,
    SetKeyResult,
)
from tim_async.paging import (
    KeyValuesAnswer,
    _decode_fast,
    decode_key_values,
    decode_pull,
    decode_rows,
)

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("field", "wire"),
    [
        ("group_id", "GroupId"),
        ("msg_seq", "MsgSeq"),
        ("msg_key", "MsgKey"),
        ("start_seq", "StartSeq"),
        ("operate_type", "OperateType"),
        ("group_attr_ary", "GroupAttrAry"),
        ("group_counter_keys", "GroupCounterKeys"),
        ("complete_flag", "CompleteFlag"),
        ("from_account", "From_Account"),
        ("to_account", "To_Account"),
        ("key", "Key"),
    ],
)
def test_wire_names(field: str, wire: str) -> None:
    assert _wire.wire_name(field) == wire


def test_models_are_frozen_and_slotted() -> None:
    for cls in (ExtensionItem, ExtensionPage, ExtensionList, SetKeyResult):
        assert "__slots__" in cls.__dict__
        assert attrs.has(cls)
    item = ExtensionItem("k", "v", 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        item.value = "w"  # type: ignore[misc]
    assert hash(item) == hash(ExtensionItem("k", "v", 1))


def test_counter_mode_wire_values() -> None:
    assert [m.value for m in CounterMode] == ["Set", "Increase", "Decrease"]
    assert CounterMode("Increase") is CounterMode.INCREASE
    assert CounterMode.DECREASE == "Decrease"


# --------------------------------------------------------------------------- ExtensionList


def test_extension_list_protocols() -> None:
    items = [ExtensionItem("a", "1", 1), ExtensionItem("b", "2", 1), ExtensionItem("c", "3", 2)]
    ext = ExtensionList(items, latest_seq=2, clear_seq=0)
    assert type(ext.items) is tuple
    assert len(ext) == 3
    assert list(ext) == items
    assert ext.as_dict() == {"a": "1", "b": "2", "c": "3"}
    assert "b" in ext
    assert "z" not in ext
    assert ["b"] not in ext  # unhashable: not a key, no TypeError
    assert 1 not in ext


@pytest.mark.parametrize(
    ("items", "clear", "message"),
    [
        ([ExtensionItem("a", "1", 1), ExtensionItem("a", "2", 2)], 0, "duplicate key 'a'"),
        ([ExtensionItem("a", "1", 2), ExtensionItem("b", "2", 1)], 0, "sorted by seq"),
        ([ExtensionItem("a", "1", 3)], 3, "seq 3 <= clear_seq 3"),
    ],
)
def test_extension_list_invariants(items: list[ExtensionItem], clear: int, message: str) -> None:
    with pytest.raises(TimValidationError, match=message):
        ExtensionList(items, latest_seq=5, clear_seq=clear)


def test_from_pages_merges_and_clears() -> None:
    pages = [
        ExtensionPage([ExtensionItem("a", "1", 1), ExtensionItem("b", "2", 2)], False, 4, 0),
        ExtensionPage([ExtensionItem("a", "9", 4), ExtensionItem("c", "3", 4)], True, 6, 1),
    ]
    merged = ExtensionList.from_pages(pages)
    assert [(i.key, i.value, i.seq) for i in merged] == [
        ("b", "2", 2),
        ("a", "9", 4),
        ("c", "3", 4),
    ]
    assert (merged.latest_seq, merged.clear_seq) == (6, 1)
    assert ExtensionList.from_pages([]) == ExtensionList((), 0, 0)


def test_extension_page_converts_items_to_tuple() -> None:
    source = [ExtensionItem("a", "1", 1)]
    page = ExtensionPage(source, True, 1, 0)
    source.append(ExtensionItem("b", "2", 2))
    assert page.items == (ExtensionItem("a", "1", 1),)


# --------------------------------------------------------------------------- SetKeyResult


@pytest.mark.parametrize(
    "raw",
    [
        {"ErrorCode": 0, "ErrorInfo": "", "Extension": {"Key": "k", "Value": "v", "Seq": 3}},
        {"Key": "k", "Value": "v", "Seq": 3},
        {"Key": "k", "Value": "v", "Seq": 3, "ErrorCode": 0, "Unknown": [1]},
    ],
)
def test_set_key_result_shapes(raw: dict[str, Any]) -> None:
    assert _wire.structure(raw, SetKeyResult, api="x") == SetKeyResult("k", "v", 3)


def test_set_key_result_error_nested() -> None:
    raw = {"ErrorCode": 23001, "ErrorInfo": "stale", "Extension": {"Key": "k", "Seq": 8}}
    result = _wire.structure(raw, SetKeyResult, api="x")
    assert result == SetKeyResult("k", "", 8, 23001, "stale")
    assert not result.ok


# --------------------------------------------------------------------------- strict decoding


def _page(**item: Any) -> dict[str, Any]:
    base = {"Key": "k", "Value": "v", "Seq": 1} | item
    return {"CompleteFlag": 1, "LatestSeq": 1, "ClearSeq": 0, "ExtensionList": [base]}


@pytest.mark.parametrize(
    ("page", "path"),
    [
        (_page(Seq="5"), "$.ExtensionList[0].Seq"),
        (_page(Seq=5.7), "$.ExtensionList[0].Seq"),
        (_page(Seq=5.0), "$.ExtensionList[0].Seq"),
        (_page(Seq=True), "$.ExtensionList[0].Seq"),
        (_page(Seq=None), "$.ExtensionList[0].Seq"),
        (_page(Value=5), "$.ExtensionList[0].Value"),
        (_page(Key=None), "$.ExtensionList[0].Key"),
        (_page(Key=["k"]), "$.ExtensionList[0].Key"),
        ({"CompleteFlag": "false", "LatestSeq": 1, "ClearSeq": 0}, "$.CompleteFlag"),
        ({"CompleteFlag": False, "LatestSeq": 1, "ClearSeq": 0}, "$.CompleteFlag"),
        ({"CompleteFlag": 1, "ClearSeq": 0}, "$.LatestSeq"),
        ({"LatestSeq": 1, "ClearSeq": 0}, "$.CompleteFlag"),
        ({"CompleteFlag": 1, "LatestSeq": 1}, "$.ClearSeq"),
        (
            {"CompleteFlag": 1, "LatestSeq": 1, "ClearSeq": 0, "ExtensionList": "k"},
            "$.ExtensionList",
        ),
        (
            {"CompleteFlag": 1, "LatestSeq": 1, "ClearSeq": 0, "ExtensionList": [7]},
            "$.ExtensionList[0]",
        ),
        ([], "$"),
        (None, "$"),
    ],
)
def test_malformed_answers_raise_transport_error(page: Any, path: str) -> None:
    with pytest.raises(TimTransportError) as info:
        decode_key_values(page, api="svc/cmd")
    message = str(info.value)
    assert message.startswith("svc/cmd: malformed answer: ")
    assert f"{path}:" in message
    assert info.value.api == "svc/cmd"
    assert isinstance(info.value, TimError)


def test_missing_field_message() -> None:
    with pytest.raises(TimTransportError, match=r"\$\.ExtensionList\[0\]\.Seq: required field"):
        decode_key_values(
            {
                "CompleteFlag": 1,
                "LatestSeq": 1,
                "ClearSeq": 0,
                "ExtensionList": [{"Key": "k", "Value": ""}],
            },
            api="a",
        )


def test_many_errors_are_summarised() -> None:
    page = {
        "CompleteFlag": 1,
        "LatestSeq": 1,
        "ClearSeq": 0,
        "ExtensionList": [{"Key": 1, "Value": 2, "Seq": "3"}] * 3,
    }
    with pytest.raises(TimTransportError) as info:
        decode_key_values(page, api="a")
    assert "and 6 more" in str(info.value)


def test_unknown_fields_are_ignored() -> None:
    page = _page(Future="x") | {"NewField": {"a": 1}, "ActionStatus": "OK", "ErrorCode": 0}
    decoded = decode_key_values(page, api="a")
    assert decoded == KeyValuesAnswer(1, 1, 0, (ExtensionItem("k", "v", 1),))


def test_strict_copy_forbids_extra_keys_in_nested_models() -> None:
    # The hook factory takes the converter as an argument, so a copy's settings apply to
    # nested models too (a factory closing over the original converter would ignore them).
    strict = _wire.converter.copy(forbid_extra_keys=True)
    clean = _page()
    assert _wire.structure(clean, KeyValuesAnswer, api="a", conv=strict).complete_flag == 1
    with pytest.raises(TimTransportError, match=r"\$\.ExtensionList\[0\]: unexpected fields"):
        _wire.structure(_page(Extra=1), KeyValuesAnswer, api="a", conv=strict)
    # ... while the package's converter ignores them.
    assert _wire.structure(_page(Extra=1), KeyValuesAnswer, api="a").complete_flag == 1


def test_other_answers_decode_strictly() -> None:
    decoded = _wire.structure(
        {"GroupCounter": [{"Key": "a", "Value": -3}], "Other": 1}, _CountersAnswer, api="a"
    )
    assert decoded == _CountersAnswer(group_counter=(_Counter("a", -3),))
    with pytest.raises(TimTransportError, match=r"\$\.GroupAttrAry\[0\]\.value"):
        _wire.structure({"GroupAttrAry": [{"key": "a", "value": None}]}, _GetAnswer, api="a")
    with pytest.raises(TimTransportError, match=r"\$\.ExtensionList\[0\]: Extension"):
        _wire.structure({"ExtensionList": [{"Extension": "x"}]}, _SetAnswer, api="a")


# --------------------------------------------------------------------------- requests


def test_request_encoding_omits_defaults_and_uses_lists() -> None:
    body = _wire.unstructure(_GetRequest(to_account="u", msg_key="mk"))
    assert body == {"To_Account": "u", "MsgKey": "mk"}
    body = _wire.unstructure(
        _GetRequest(from_account="s", to_account="u", msg_key="mk", start_seq=3)
    )
    assert body == {"From_Account": "s", "To_Account": "u", "MsgKey": "mk", "StartSeq": 3}
    body = _wire.unstructure(
        _GroupSetRequest(
            group_id="g", msg_seq=1, operate_type=1, extension_list=(ExtensionItem("a", "", 0),)
        )
    )
    assert body == {
        "GroupId": "g",
        "MsgSeq": 1,
        "OperateType": 1,
        "ExtensionList": [{"Key": "a", "Value": "", "Seq": 0}],
    }
    assert type(body["ExtensionList"]) is list
    assert _wire.unstructure(_KeysRequest(group_id="g", group_counter_keys=("a",))) == {
        "GroupId": "g",
        "GroupCounterKeys": ["a"],
    }


# --------------------------------------------------------------------------- properties

ITEMS = st.lists(
    st.builds(
        ExtensionItem,
        key=st.text(min_size=1, max_size=10),
        value=st.text(max_size=20),
        seq=st.integers(0, 2**63 - 1),
    ),
    max_size=30,
)


@settings(max_examples=200)
@given(ITEMS, st.booleans(), st.integers(0, 2**40), st.integers(0, 2**40))
def test_pull_answer_round_trip(
    items: list[ExtensionItem], complete: bool, latest: int, clear: int
) -> None:
    wire = {
        "CompleteFlag": int(complete),
        "LatestSeq": latest,
        "ClearSeq": clear,
        "ExtensionList": [_wire.unstructure(item) for item in items],
    }
    decoded = decode_key_values(orjson.loads(orjson.dumps(wire)), api="a")
    assert decoded == KeyValuesAnswer(int(complete), latest, clear, tuple(items))


NOT_INT = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=200)
@given(NOT_INT, st.sampled_from(["Seq", "LatestSeq", "ClearSeq", "CompleteFlag"]))
def test_non_integers_never_decode_as_integers(bad: Any, field: str) -> None:
    page = _page()
    if field == "Seq":
        page["ExtensionList"][0]["Seq"] = bad
    else:
        page[field] = bad
    with pytest.raises(TimTransportError) as info:
        decode_key_values(page, api="a")
    assert field in str(info.value)


@settings(max_examples=100)
@given(st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), st.none()))
def test_non_strings_never_decode_as_strings(bad: Any) -> None:
    with pytest.raises(TimTransportError, match=r"\$\.ExtensionList\[0\]\.Value"):
        decode_key_values(_page(Value=bad), api="a")


JSONISH = st.one_of(
    st.integers(-3, 3),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, width=16),
    st.lists(st.integers(), max_size=1),
)
WIRE_ITEM = st.one_of(
    st.fixed_dictionaries(
        {"Key": st.text(max_size=3), "Value": st.text(max_size=3), "Seq": st.integers(0, 9)}
    ),
    st.dictionaries(st.sampled_from(["Key", "Value", "Seq", "Extra"]), JSONISH, max_size=4),
    JSONISH,
)
WIRE_ANSWER = st.one_of(
    st.fixed_dictionaries(
        {
            "CompleteFlag": st.sampled_from([0, 1, 0, 1, 2, -1]),
            "LatestSeq": st.integers(0, 9),
            "ClearSeq": st.integers(0, 9),
        },
        optional={"ExtensionList": st.lists(WIRE_ITEM, max_size=4), "ErrorCode": JSONISH},
    ),
    st.dictionaries(
        st.sampled_from(["CompleteFlag", "LatestSeq", "ClearSeq", "ExtensionList"]),
        st.one_of(JSONISH, st.lists(WIRE_ITEM, max_size=2)),
        max_size=4,
    ),
    JSONISH,
)


@settings(max_examples=400)
@given(WIRE_ANSWER)
def test_decode_key_values_agrees_with_the_converter(answer: Any) -> None:
    # decode_key_values may take a hand-written hot path; it must give exactly what the
    # converter gives, and fail (TimTransportError) exactly when the converter fails.
    try:
        expected: KeyValuesAnswer | None = _wire.converter.structure(answer, KeyValuesAnswer)
    except Exception:
        expected = None
    if expected is not None and expected.complete_flag not in (0, 1):
        expected = None
    if expected is None:
        with pytest.raises(TimTransportError):
            decode_key_values(answer, api="a")
    else:
        decoded = decode_key_values(answer, api="a")
        assert decoded == expected
        assert all(type(item) is ExtensionItem for item in decoded.extension_list)
        # ... and a JSON answer the converter takes is never left to the converter.
        assert _decode_fast(answer) is not None


ENVELOPE = st.one_of(
    st.just({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}),
    st.fixed_dictionaries(
        {}, optional={"ActionStatus": JSONISH, "ErrorCode": st.one_of(st.just(0), JSONISH)}
    ),
)


def _json_path(raw: bytes) -> Any:
    """What the session and the walk make of ``raw`` without the decode hook: the walk's
    :data:`Decoded`, or None where the session or :func:`decode_rows` raises."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if (
        not isinstance(parsed, dict)
        or "ActionStatus" not in parsed
        or type(parsed.get("ErrorCode")) is not int
        or parsed["ErrorCode"] != 0
    ):
        return None
    try:
        return decode_rows(parsed, api="a")
    except TimTransportError:
        return None


@settings(max_examples=500)
@given(WIRE_ANSWER, ENVELOPE)
def test_decode_pull_agrees_with_the_json_path(answer: Any, envelope: dict[str, Any]) -> None:
    # The session's decode hook (msgspec, one pass over the bytes) must give exactly what the
    # JSON path gives (orjson, the envelope check, decode_rows), and decline (None) exactly
    # where the JSON path raises: then the session's own path raises the error.
    body = {**envelope, **answer} if isinstance(answer, dict) else answer
    try:
        raw = orjson.dumps(body)
    except orjson.JSONEncodeError:  # a lone surrogate in a generated string
        return
    assert decode_pull(raw) == _json_path(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # JSON that orjson reads as something else than an int: left to the JSON path.
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":18446744073709551616,'
        b'"ClearSeq":0}',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0,'
        b'"ExtensionList":[{"Key":"k","Value":"v","Seq":9223372036854775808}]}',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1e2,"ClearSeq":0}',
        # a later duplicate field wins, in both
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":2,"CompleteFlag":1,"LatestSeq":1,'
        b'"ClearSeq":0,"ExtensionList":[{"Key":"a","Key":"b","Value":"v","Seq":1}]}',
        b'{"ActionStatus":"OK","ErrorCode":0,"ErrorCode":70169,"CompleteFlag":1,"LatestSeq":1,'
        b'"ClearSeq":0}',
        # not JSON, or not one JSON value
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0}x',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0,'
        b'"ExtensionList":[{"Key":"\\ud800","Value":"v","Seq":1}]}',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0,'
        b'"ExtensionList":[{"Key":"\xff","Value":"v","Seq":1}]}',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0,'
        b'"ExtensionList":null}',
        b'{"ActionStatus":null,"ErrorCode":0,"CompleteFlag":0,"LatestSeq":-1,"ClearSeq":-5}',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":2,"LatestSeq":1,"ClearSeq":0}',
        # a pair field of the wrong type, a pair that is not an object, a field missing
        *(
            b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0,'
            b'"ExtensionList":[{"Key":"a","Value":"v","Seq":1},' + pair + b"]}"
            for pair in (
                b'{"Key":"k","Value":1,"Seq":1}',
                b'{"Key":null,"Value":"v","Seq":1}',
                b'{"Key":"k","Value":"v","Seq":"1"}',
                b'{"Key":"k","Value":"v","Seq":true}',
                b'{"Key":"k","Value":"v","Seq":1.5}',
                b'{"Key":"k","Value":"v"}',
                b'["k","v",1]',
                b'"k"',
            )
        ),
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0,'
        b'"ExtensionList":{"Key":"k","Value":"v","Seq":1}}',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":true,"LatestSeq":1,"ClearSeq":0}',
        b'{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"ClearSeq":0}',
        b'{"ErrorCode":0,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0}',
        b'{"ActionStatus":"OK","CompleteFlag":1,"LatestSeq":1,"ClearSeq":0}',
        b'{"ActionStatus":"OK","ErrorCode":false,"CompleteFlag":1,"LatestSeq":1,"ClearSeq":0}',
    ],
)
def test_decode_pull_agrees_with_the_json_path_on_edge_bytes(raw: bytes) -> None:
    # Where the hook declines, the session takes the JSON path: the outcome is the same.
    fast = decode_pull(raw)
    expected = _json_path(raw)
    assert (fast if fast is not None else expected) == expected
    if expected is None:
        assert fast is None


# --------------------------------------------------------------------------- lazy items


class _PageCaller:
    """Answers every pull with a fresh copy of one parsed JSON page."""

    def __init__(self, page: dict[str, Any]) -> None:
        self.raw = orjson.dumps(page)

    def operation(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def call(
        self, api: str, body: dict[str, Any], *, idempotent: bool = True, decode: Any = None
    ) -> Any:
        # As the session does: the decode hook first, the JSON when it declines.
        if decode is not None and (decoded := decode(self.raw)) is not None:
            return decoded
        answer: dict[str, Any] = orjson.loads(self.raw)
        return answer


def _pull_page(rows: list[tuple[str, str, int]], *, clear: int = 0) -> dict[str, Any]:
    return {
        "ActionStatus": "OK",
        "ErrorCode": 0,
        "CompleteFlag": 1,
        "LatestSeq": max((seq for _, _, seq in rows), default=0),
        "ClearSeq": clear,
        "ExtensionList": [{"Key": k, "Value": v, "Seq": s} for k, v, s in rows],
    }


def _pull(page: dict[str, Any], times: int = 1) -> list[ExtensionList]:
    ext = MsgExt(_PageCaller(page))  # type: ignore[arg-type]
    results: list[ExtensionList] = []

    async def run() -> None:
        # Not returned from the coroutine: Python 3.11's asyncio.run can repr the main
        # task's result on the way out, which reads every item.
        results.extend([await ext.group_get_key_values("g", 1) for _ in range(times)])

    asyncio.run(run())
    return results


def test_pulled_list_builds_its_items_once_on_first_read() -> None:
    rows = [("a", "1", 2), ("b", "2", 2), ("c", "3", 5)]
    (pulled,) = _pull(_pull_page(rows))
    eager = ExtensionList([ExtensionItem(*row) for row in rows], latest_seq=5, clear_seq=0)
    assert pulled._rows is not None  # nothing built yet
    assert len(pulled) == 3
    assert pulled.as_dict() == {"a": "1", "b": "2", "c": "3"}
    assert "b" in pulled and "z" not in pulled and [] not in pulled
    assert pulled._rows is not None  # len, as_dict and `in` need no items
    items = pulled.items
    assert type(items) is tuple and all(type(item) is ExtensionItem for item in items)
    assert items == eager.items
    assert pulled.items is items  # built once, then a plain attribute
    assert pulled._rows is None  # the rows are dropped once the items exist
    assert list(pulled) == list(eager)
    assert len(pulled) == 3 and pulled.as_dict() == eager.as_dict() and "c" in pulled


def test_pulled_list_is_indistinguishable_from_one_built_from_items() -> None:
    rows = [("a", "1", 2), ("b", "2", 2), ("c", "3", 5)]
    eager = ExtensionList([ExtensionItem(*row) for row in rows], latest_seq=5, clear_seq=0)
    for probe in (
        lambda ext: ext == eager,
        lambda ext: hash(ext) == hash(eager),
        lambda ext: repr(ext) == repr(eager),
        lambda ext: pickle.loads(pickle.dumps(ext)) == eager,
        lambda ext: attrs.evolve(ext, latest_seq=5) == eager,
        lambda ext: attrs.asdict(ext) == attrs.asdict(eager),
        lambda ext: (
            [f.name for f in attrs.fields(type(ext))] == ["items", "latest_seq", "clear_seq"]
        ),
    ):
        (pulled,) = _pull(_pull_page(rows))  # a fresh, unread list for each probe
        assert probe(pulled)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pulled.items = ()  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no attribute 'itemz'"):
        pulled.itemz  # type: ignore[attr-defined]  # noqa: B018


def test_pages_of_a_walk_build_their_items_on_first_read() -> None:
    rows = [("a", "1", 1), ("b", "2", 3)]
    ext = MsgExt(_PageCaller(_pull_page(rows)))  # type: ignore[arg-type]

    pages: list[ExtensionPage] = []

    async def run() -> None:
        pages.extend([page async for page in ext.iter_group_key_values("g", 1)])

    asyncio.run(run())
    (page,) = pages
    assert page._rows is not None and len(page._columns()[0]) == 2
    assert page.items == (ExtensionItem("a", "1", 1), ExtensionItem("b", "2", 3))
    assert page._rows is None
    assert page == ExtensionPage(list(page.items), True, 3, 0)
    assert ExtensionList.from_pages([page]) == ExtensionList(page.items, 3, 0)


def _held_bytes(make: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        gc.collect()
        held: int = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return held


def test_lazy_rows_hold_less_memory_than_the_items_they_replace() -> None:
    rows = [(f"key-{i}", f"value-{i}", 1000 + i // 20) for i in range(200)]
    page = _pull_page(rows)

    def eager() -> list[ExtensionList]:
        lists = _pull(page, 20)
        for pulled in lists:
            assert len(pulled.items) == 200  # read: items built, rows dropped
        return lists

    lazy = _held_bytes(lambda: _pull(page, 20))
    built = _held_bytes(eager)
    assert lazy < built
    # Once read, a list holds what an eagerly built one holds, plus its two empty cache slots.
    raw = orjson.dumps(page)

    def constructed() -> list[ExtensionList]:
        # Fresh strings and ints for each list, as pulls have, from the decoder the pulls use
        # (tracemalloc counts the bytes asked for, and decoders ask for an int differently).
        lists = []
        for _ in range(20):
            decoded = decode_pull(raw)
            assert decoded is not None
            keys, values, seqs = decoded[3]
            items = [ExtensionItem(*pair) for pair in zip(keys, values, seqs, strict=True)]
            lists.append(ExtensionList(items, decoded[1], 0))
        return lists

    reference = _held_bytes(constructed)
    assert built <= reference + 20 * 64
