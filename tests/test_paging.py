"""The StartSeq / CompleteFlag walk (tim_async.paging) through MsgExt, with scripted pages and a
hypothesis property against an in-process model of the server."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tim_async.endpoints.msg_ext import MsgExt
from tim_async.errors import TimPagingError, TimTransportError
from tim_async.models import ExtensionItem, ExtensionList, ExtensionPage

GROUP_API = "openim_msg_ext_http_svc/group_get_key_values"
C2C_API = "openim_msg_ext_http_svc/get_key_values"

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class FakeCaller:
    """Records every call (a deep copy of the body as sent) and answers through ``handler``."""

    def __init__(self, handler: Handler, *, max_calls: int = 10_000) -> None:
        self.handler = handler
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self.bodies: list[dict[str, Any]] = []  # the objects themselves
        self.max_calls = max_calls

    def operation(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def call(
        self, api: str, body: dict[str, Any], *, idempotent: bool = True, decode: Any = None
    ) -> dict[str, Any]:
        if len(self.calls) >= self.max_calls:
            raise AssertionError(f"more than {self.max_calls} calls: the walk does not stop")
        self.calls.append((api, copy.deepcopy(body), idempotent))
        self.bodies.append(body)
        return self.handler(api, body)


def answer(
    items: list[tuple[str, str, int]], *, complete: int, latest: int = 0, clear: int = 0
) -> dict[str, Any]:
    return {
        "ActionStatus": "OK",
        "ErrorCode": 0,
        "ErrorInfo": "",
        "CompleteFlag": complete,
        "LatestSeq": latest or max((s for _, _, s in items), default=0),
        "ClearSeq": clear,
        "ExtensionList": [{"Key": k, "Value": v, "Seq": s} for k, v, s in items],
    }


def scripted(*pages: dict[str, Any]) -> Handler:
    """Answer the n-th call with the n-th page (the last one repeats)."""
    state = {"n": 0}

    def handler(api: str, body: dict[str, Any]) -> dict[str, Any]:
        index = min(state["n"], len(pages) - 1)
        state["n"] += 1
        return copy.deepcopy(pages[index])

    return handler


class ModelServer:
    """A simple model of one message's extension store.

    ``set`` stamps all its keys with one new message-wide seq; ``delete`` removes keys;
    ``clear`` sets ClearSeq to a new seq and, unless ``keep_cleared``, removes every pair (with
    ``keep_cleared`` the stale pairs stay stored and are still returned by pulls, as a server
    may do: the client must drop them). Pulls return up to ``page_size`` pairs with
    ``Seq >= StartSeq`` sorted by seq (ties in the order they were written)."""

    def __init__(self, page_size: int, *, keep_cleared: bool = False) -> None:
        self.page_size = page_size
        self.keep_cleared = keep_cleared
        self.seq = 0
        self.clear_seq = 0
        self.pairs: dict[str, tuple[str, int]] = {}

    def set(self, keys: list[str]) -> None:
        self.seq += 1
        for key in keys:
            self.pairs.pop(key, None)
            self.pairs[key] = (f"{key}@{self.seq}", self.seq)

    def delete(self, keys: list[str]) -> None:
        self.seq += 1
        for key in keys:
            self.pairs.pop(key, None)

    def clear(self) -> None:
        self.seq += 1
        self.clear_seq = self.seq
        if not self.keep_cleared:
            self.pairs.clear()

    def listing(self) -> list[tuple[str, str, int]]:
        rows = [(key, value, seq) for key, (value, seq) in self.pairs.items()]
        rows.sort(key=lambda row: row[2])
        return rows

    def handle(self, api: str, body: dict[str, Any]) -> dict[str, Any]:
        assert api in (GROUP_API, C2C_API)
        start = body.get("StartSeq", 0)
        rows = [row for row in self.listing() if row[2] >= start]
        page = rows[: self.page_size]
        return answer(
            page,
            complete=int(len(rows) <= self.page_size),
            latest=self.seq,
            clear=self.clear_seq,
        )


def progress_impossible(rows: list[tuple[str, str, int]], page_size: int) -> bool:
    """True when some group of pairs sharing one seq is at least a page long and more pairs
    follow (in that group or after it): the server can never move past it."""
    sizes = Counter(seq for _, _, seq in rows)
    for seq, size in sizes.items():
        if size >= page_size and sum(1 for row in rows if row[2] >= seq) > page_size:
            return True
    return False


async def collect(pages_iter: Any) -> list[ExtensionPage]:
    async with aclosing(pages_iter) as pages:
        return [page async for page in pages]


# --------------------------------------------------------------------------- scripted pages


async def test_single_page_complete() -> None:
    caller = FakeCaller(scripted(answer([("a", "1", 1), ("b", "2", 1), ("c", "3", 2)], complete=1)))
    result = await MsgExt(caller).group_get_key_values("g", 7)
    assert [(i.key, i.value, i.seq) for i in result] == [
        ("a", "1", 1),
        ("b", "2", 1),
        ("c", "3", 2),
    ]
    assert (result.latest_seq, result.clear_seq) == (2, 0)
    assert caller.calls == [(GROUP_API, {"GroupId": "g", "MsgSeq": 7}, True)]


async def test_same_seq_group_cut_by_page_end_is_reread_and_deduplicated() -> None:
    # Page size 3; a and b share seq 2, c and d share seq 3; pages end inside both groups.
    caller = FakeCaller(
        scripted(
            answer([("x", "0", 1), ("y", "0", 1), ("a", "1", 2)], complete=0, latest=4),
            answer([("a", "1", 2), ("b", "2", 2), ("c", "3", 3)], complete=0, latest=4),
            answer([("c", "3", 3), ("d", "4", 3), ("e", "5", 4)], complete=1, latest=4),
        )
    )
    pages = await collect(MsgExt(caller).iter_group_key_values("g", 1))
    assert [body.get("StartSeq") for _, body, _ in caller.calls] == [None, 2, 3]
    # Each page holds only what is new to the walk: the overlap is removed.
    assert [[i.key for i in p.items] for p in pages] == [["x", "y", "a"], ["b", "c"], ["d", "e"]]
    merged = ExtensionList.from_pages(pages)
    assert list(merged.as_dict()) == ["x", "y", "a", "b", "c", "d", "e"]
    assert [i.seq for i in merged] == [1, 1, 2, 2, 3, 3, 4]
    assert [p.complete for p in pages] == [False, False, True]
    assert [p.latest_seq for p in pages] == [4, 4, 4]


async def test_start_seq_is_the_highest_seq_seen_and_first_request_uses_caller_start() -> None:
    caller = FakeCaller(
        scripted(
            answer([("a", "1", 5), ("b", "2", 6)], complete=0),
            answer([("b", "2", 6), ("c", "3", 9)], complete=1),
        )
    )
    result = await MsgExt(caller).get_key_values("u1", "mk", start_seq=5)
    assert [body["StartSeq"] for _, body, _ in caller.calls] == [5, 6]
    assert all(api == C2C_API for api, _, _ in caller.calls)
    assert result.as_dict() == {"a": "1", "b": "2", "c": "3"}


async def test_same_page_again_raises_paging_error_after_two_calls() -> None:
    # 3 keys share seq 4 and the page size is 3: the server returns the same page forever.
    stuck = answer([("a", "1", 4), ("b", "2", 4), ("c", "3", 4)], complete=0, latest=5)
    caller = FakeCaller(scripted(stuck), max_calls=50)
    with pytest.raises(TimPagingError) as info:
        await MsgExt(caller).group_get_key_values("g", 1)
    assert len(caller.calls) == 2
    message = str(info.value)
    assert "StartSeq=4" in message
    assert "3 pair(s)" in message
    assert GROUP_API in message


async def test_stuck_walk_yields_the_new_page_then_raises() -> None:
    stuck = answer([("a", "1", 4), ("b", "2", 4)], complete=0)
    caller = FakeCaller(scripted(stuck), max_calls=50)
    seen: list[ExtensionPage] = []
    with pytest.raises(TimPagingError):
        async for page in MsgExt(caller).iter_group_key_values("g", 1):
            seen.append(page)
    assert [[i.key for i in p.items] for p in seen] == [["a", "b"]]
    assert len(caller.calls) == 2


async def test_empty_incomplete_page_raises_at_once() -> None:
    caller = FakeCaller(scripted(answer([], complete=0)), max_calls=50)
    with pytest.raises(TimPagingError, match="StartSeq=0"):
        await MsgExt(caller).group_get_key_values("g", 1)
    assert len(caller.calls) == 1


async def test_server_ignoring_start_seq_raises_instead_of_looping() -> None:
    first = answer([("a", "1", 1), ("b", "2", 2)], complete=0)
    caller = FakeCaller(scripted(first), max_calls=50)
    with pytest.raises(TimPagingError, match="StartSeq=2"):
        await MsgExt(caller).get_key_values("u", "mk")
    assert len(caller.calls) == 2


async def test_empty_complete_page_is_an_empty_list() -> None:
    caller = FakeCaller(scripted(answer([], complete=1, latest=9, clear=9)))
    result = await MsgExt(caller).group_get_key_values("g", 1)
    assert len(result) == 0
    assert list(result) == []
    assert (result.latest_seq, result.clear_seq) == (9, 9)


async def test_final_clear_seq_is_applied_to_earlier_pages() -> None:
    # A clear (seq 4) happens between the two pages: pairs at or below 4 must go.
    caller = FakeCaller(
        scripted(
            answer([("a", "1", 1), ("b", "2", 2), ("c", "3", 3)], complete=0, latest=3),
            answer([("z", "9", 5)], complete=1, latest=5, clear=4),
        )
    )
    pages = await collect(MsgExt(caller).iter_group_key_values("g", 1))
    assert [p.clear_seq for p in pages] == [0, 4]
    result = ExtensionList.from_pages(pages)
    assert result.as_dict() == {"z": "9"}
    assert result.clear_seq == 4
    assert result.latest_seq == 5
    direct = await MsgExt(
        FakeCaller(
            scripted(
                answer([("a", "1", 1), ("b", "2", 2), ("c", "3", 3)], complete=0, latest=3),
                answer([("z", "9", 5)], complete=1, latest=5, clear=4),
            )
        )
    ).group_get_key_values("g", 1)
    assert direct == result


async def test_items_at_or_below_clear_seq_on_the_page_are_dropped() -> None:
    caller = FakeCaller(
        scripted(answer([("old", "x", 2), ("edge", "y", 3), ("new", "z", 4)], complete=1, clear=3))
    )
    pages = await collect(MsgExt(caller).iter_group_key_values("g", 1))
    assert [i.key for i in pages[0].items] == ["new"]
    assert (await MsgExt(FakeCaller(caller.handler)).group_get_key_values("g", 1)).as_dict() == {
        "new": "z"
    }


async def test_key_rewritten_during_the_walk_keeps_the_highest_seq() -> None:
    # Between the pages, "a" is set again (seq 5); the server lists it at its new place.
    caller = FakeCaller(
        scripted(
            answer([("a", "old", 1), ("b", "2", 2)], complete=0),
            answer([("b", "2", 2), ("c", "3", 3), ("a", "new", 5)], complete=1),
        )
    )
    pages = await collect(MsgExt(caller).iter_group_key_values("g", 1))
    assert [[(i.key, i.value) for i in p.items] for p in pages] == [
        [("a", "old"), ("b", "2")],
        [("c", "3"), ("a", "new")],
    ]
    result = ExtensionList.from_pages(pages)
    assert [(i.key, i.value, i.seq) for i in result] == [
        ("b", "2", 2),
        ("c", "3", 3),
        ("a", "new", 5),
    ]


async def test_duplicate_key_inside_one_page_keeps_the_highest_seq() -> None:
    caller = FakeCaller(
        scripted(answer([("a", "v1", 1), ("b", "x", 2), ("a", "v2", 3)], complete=1))
    )
    result = await MsgExt(caller).group_get_key_values("g", 1)
    assert [(i.key, i.value, i.seq) for i in result] == [("b", "x", 2), ("a", "v2", 3)]


async def test_lower_seq_copy_of_a_known_key_is_ignored() -> None:
    caller = FakeCaller(
        scripted(
            answer([("a", "new", 3), ("b", "1", 3)], complete=0),
            answer([("a", "stale", 1), ("b", "1", 3), ("c", "2", 4)], complete=1),
        )
    )
    result = await MsgExt(caller).group_get_key_values("g", 1)
    assert result.as_dict() == {"a": "new", "b": "1", "c": "2"}


async def test_early_break_stops_calling() -> None:
    model = ModelServer(page_size=2)
    for i in range(10):
        model.set([f"k{i}"])
    caller = FakeCaller(model.handle)
    async with aclosing(MsgExt(caller).iter_group_key_values("g", 1)) as pages:
        async for page in pages:
            assert [i.key for i in page.items] == ["k0", "k1"]
            break
    assert len(caller.calls) == 1


async def test_pages_are_fresh_immutable_objects() -> None:
    model = ModelServer(page_size=3)
    for i in range(7):
        model.set([f"k{i}"])
    pages = await collect(MsgExt(FakeCaller(model.handle)).iter_group_key_values("g", 1))
    assert len(pages) == 3
    assert len({id(p) for p in pages}) == 3
    assert [len(p.items) for p in pages] == [3, 2, 2]  # overlap of one pair removed
    assert all(type(p.items) is tuple for p in pages)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pages[0].complete = True  # type: ignore[misc]
    assert [i.key for i in pages[0].items] == ["k0", "k1", "k2"]


async def test_request_body_is_rebuilt_for_every_page() -> None:
    model = ModelServer(page_size=2)
    for i in range(6):
        model.set([f"k{i}"])

    def vandal(api: str, body: dict[str, Any]) -> dict[str, Any]:
        result = model.handle(api, body)
        body.clear()  # a caller that consumes the body must not break the next page
        body["GroupId"] = "tampered"
        return result

    caller = FakeCaller(vandal)
    result = await MsgExt(caller).group_get_key_values("g", 42)
    assert len(result) == 6
    assert len({id(body) for body in caller.bodies}) == len(caller.bodies)
    for _, body, _ in caller.calls:
        assert body["GroupId"] == "g"
        assert body["MsgSeq"] == 42
    # StartSeq is inclusive: each page re-reads the last pair of the previous one.
    assert [body.get("StartSeq") for _, body, _ in caller.calls] == [None, 2, 3, 4, 5]


async def test_each_iteration_starts_a_new_walk() -> None:
    model = ModelServer(page_size=2)
    for i in range(5):
        model.set([f"k{i}"])
    ext = MsgExt(FakeCaller(model.handle))
    first = await ext.group_get_key_values("g", 1)
    second = await ext.group_get_key_values("g", 1)
    assert first == second
    assert len(first) == 5


async def test_malformed_page_raises_transport_error_naming_the_field() -> None:
    bad = answer([("a", "1", 1)], complete=0)
    bad["ExtensionList"][0]["Seq"] = "1"
    caller = FakeCaller(scripted(bad))
    with pytest.raises(TimTransportError) as info:
        await MsgExt(caller).group_get_key_values("g", 1)
    assert "$.ExtensionList[0].Seq" in str(info.value)
    assert info.value.api == GROUP_API


async def test_malformed_pair_on_a_later_page_raises_from_that_call() -> None:
    # Strictness is not deferred by the lazily built items: the walk yields the good first
    # page, and the call that brings the bad pair raises before anything of it is yielded.
    good = answer([(f"k{i}", "v", 1 + i) for i in range(50)], complete=0)
    bad = answer([(f"k{i}", "v", 50 + i) for i in range(50)], complete=1)
    bad["ExtensionList"][49]["Value"] = None
    caller = FakeCaller(scripted(good, bad))
    pages: list[ExtensionPage] = []
    with pytest.raises(TimTransportError) as info:
        async with aclosing(MsgExt(caller).iter_group_key_values("g", 1)) as it:
            async for page in it:
                pages.append(page)
    assert "$.ExtensionList[49].Value" in str(info.value)
    assert len(caller.calls) == 2
    assert len(pages) == 1 and len(pages[0].items) == 50


@pytest.mark.parametrize("flag", [2, -1, True, "1", None])
async def test_complete_flag_must_be_0_or_1(flag: Any) -> None:
    bad = answer([("a", "1", 1)], complete=1)
    bad["CompleteFlag"] = flag
    with pytest.raises(TimTransportError, match="CompleteFlag"):
        await MsgExt(FakeCaller(scripted(bad))).group_get_key_values("g", 1)


async def test_missing_extension_list_means_no_pairs() -> None:
    page = answer([], complete=1, latest=3)
    del page["ExtensionList"]
    result = await MsgExt(FakeCaller(scripted(page))).group_get_key_values("g", 1)
    assert len(result) == 0
    assert result.latest_seq == 3


async def test_walk_over_more_than_300_pairs_in_same_seq_groups() -> None:
    model = ModelServer(page_size=200)
    for batch in range(25):  # 25 set calls of 20 keys: 500 pairs in groups of 20
        model.set([f"k{batch}-{i}" for i in range(20)])
    caller = FakeCaller(model.handle)
    result = await MsgExt(caller).group_get_key_values("g", 1)
    assert len(result) == 500
    assert [(i.key, i.value, i.seq) for i in result] == model.listing()
    assert len(caller.calls) == 3


# --------------------------------------------------------------------------- property


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ModelServer, int, bool]:
    """A model server after a random history, a start_seq and a page size."""
    server = ModelServer(200, keep_cleared=draw(st.booleans()))
    keyspace = draw(st.sampled_from([6, 40, 300]))  # small: many overwrites
    n_ops = draw(st.one_of(st.integers(0, 8), st.integers(10, 60)))
    # Mostly sets; deletes and (rarer) clears so that histories keep pairs to page through.
    kinds = draw(st.lists(st.sampled_from("ssssssssssddc"), min_size=n_ops, max_size=n_ops))
    for kind in kinds:
        if kind == "c":
            server.clear()
            continue
        largest = 20 if kind == "s" else 5  # 20 pairs: the per-call maximum of a set call
        size = draw(st.one_of(st.integers(1, 3), st.integers(1, largest)))
        offset = draw(st.integers(0, keyspace - 1))
        keys = [f"k{(offset + i) % keyspace}" for i in range(min(size, keyspace))]
        if kind == "s":
            server.set(keys)
        else:
            server.delete(keys)
    start_seq = draw(
        st.sampled_from([0, 0, None]).flatmap(
            lambda s: st.just(0) if s == 0 else st.integers(0, server.seq + 2)
        )
    )
    rows = [row for row in server.listing() if row[2] >= start_seq]
    largest_group = max(Counter(seq for _, _, seq in rows).values(), default=1)
    # Page sizes 1..200; often below the number of stored pairs so that walks span pages,
    # and often above the largest same-seq group so that they can get through.
    server.page_size = draw(
        st.one_of(
            st.integers(1, 200),
            st.integers(1, max(1, len(rows))),
            st.integers(
                min(largest_group + 1, 200), max(largest_group + 1, min(len(rows) // 2, 200))
            ),
        )
    )
    group = draw(st.booleans())
    return server, start_seq, group


async def _walk(
    server: ModelServer, start_seq: int, group: bool
) -> tuple[FakeCaller, list[ExtensionPage], BaseException | None]:
    caller = FakeCaller(server.handle, max_calls=2_000)
    ext = MsgExt(caller)
    pages_iter = (
        ext.iter_group_key_values("g", 9, start_seq=start_seq)
        if group
        else ext.iter_key_values("u", "mk", from_account="s", start_seq=start_seq)
    )
    pages: list[ExtensionPage] = []
    error: BaseException | None = None
    try:
        async with aclosing(pages_iter) as it:
            async for page in it:
                pages.append(page)
    except TimPagingError as exc:
        error = exc
    return caller, pages, error


async def _pull(
    server: ModelServer, start_seq: int, group: bool
) -> tuple[FakeCaller, ExtensionList | None, BaseException | None]:
    """The same walk through ``group_get_key_values`` / ``get_key_values`` (one coroutine,
    ``paging.pull_key_values``, not the pages' iterator)."""
    caller = FakeCaller(server.handle, max_calls=2_000)
    ext = MsgExt(caller)
    try:
        if group:
            return caller, await ext.group_get_key_values("g", 9, start_seq=start_seq), None
        result = await ext.get_key_values("u", "mk", from_account="s", start_seq=start_seq)
        return caller, result, None
    except TimPagingError as exc:
        return caller, None, exc


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_walk_matches_model_server(scenario: tuple[ModelServer, int, bool]) -> None:
    server, start_seq, group = scenario
    walked: list[tuple[FakeCaller, list[ExtensionPage], BaseException | None]] = []
    pulled: list[tuple[FakeCaller, ExtensionList | None, BaseException | None]] = []

    async def walk() -> None:  # returns nothing: asyncio.run may repr a result (reads items)
        walked.append(await _walk(server, start_seq, group))
        pulled.append(await _pull(server, start_seq, group))

    asyncio.run(walk())
    ((caller, pages, error),) = walked
    # Merged before anything reads the pages' items: from_pages works on their rows.
    merged = ExtensionList.from_pages(pages)
    # The one-call pull asks for the same pages and gives the same merge (or the same error).
    ((pull_caller, pull_result, pull_error),) = pulled
    assert pull_caller.calls == caller.calls
    assert type(pull_error) is type(error)
    if error is None:
        assert pull_result is not None
        assert pull_result == merged
        assert (pull_result.latest_seq, pull_result.clear_seq) == (
            merged.latest_seq,
            merged.clear_seq,
        )

    rows = [row for row in server.listing() if row[2] >= start_seq]
    stuck = progress_impossible(rows, server.page_size)
    event(f"stuck={stuck}")
    event(f"pages={'1' if len(pages) <= 1 else '2-3' if len(pages) <= 3 else '4+'}")
    event(f"cleared pairs kept={server.keep_cleared and server.clear_seq > 0}")
    # Bounded: every page but the last brings a new (key, seq) pair.
    assert len(caller.calls) <= len(rows) + 2

    # Requests: fixed fields unchanged, StartSeq starts at start_seq (absent when 0) and
    # never goes back.
    cursors = [body.get("StartSeq", 0) for _, body, _ in caller.calls]
    assert cursors[0] == start_seq
    assert cursors == sorted(cursors)
    for _, body, idempotent in caller.calls:
        assert idempotent
        assert ("StartSeq" in body) == (body.get("StartSeq", 0) != 0)
        if group:
            assert (body["GroupId"], body["MsgSeq"]) == ("g", 9)
        else:
            assert (body["To_Account"], body["MsgKey"], body["From_Account"]) == ("u", "mk", "s")

    # No pair is yielded twice.
    yielded = [(item.key, item.seq) for page in pages for item in page.items]
    assert len(yielded) == len(set(yielded))

    if stuck:
        assert isinstance(error, TimPagingError)
        assert not any(page.complete for page in pages)
        return
    assert error is None
    assert pages[-1].complete
    assert not any(page.complete for page in pages[:-1])
    result = merged
    expected = [ExtensionItem(k, v, s) for k, v, s in rows if s > server.clear_seq]
    assert list(result) == expected
    assert result == ExtensionList.from_pages(pages)  # again, from the pages' items
    assert result.latest_seq == server.seq
    assert result.clear_seq == server.clear_seq


def test_progress_oracle_examples() -> None:
    # The oracle itself, on hand-made cases.
    rows = [("a", "", 1), ("b", "", 1), ("c", "", 2)]
    assert not progress_impossible(rows, 3)  # one page
    # Page size 2: the second pull (StartSeq=1) returns a, b again and never reaches c.
    assert progress_impossible(rows, 2)
    assert progress_impossible(rows, 1)
    # Page size 1 re-reads the last pair forever (StartSeq is inclusive) ...
    assert progress_impossible([("a", "", 1), ("b", "", 2)], 1)
    # ... size 2 moves on one pair per page.
    assert not progress_impossible([("a", "", 1), ("b", "", 2), ("c", "", 3)], 2)
    assert progress_impossible([("a", "", 1), ("b", "", 1), ("c", "", 1)], 2)
    assert not progress_impossible([("a", "", 1), ("b", "", 1)], 2)


# --------------------------------------------------------------------------- one-page walks

PAGE_ROWS = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.text(max_size=2), st.integers(0, 6)), max_size=12
)


def _reference(rows: list[tuple[str, str, int]], clear: int) -> list[tuple[str, str, int]]:
    """What one complete page must give: each key's highest seq (the first of equal copies),
    above ``clear``, sorted by seq, ties in the order the kept copies came."""
    best: dict[str, tuple[str, str, int]] = {}
    for key, value, seq in rows:
        known = best.get(key)
        if known is None or seq > known[2]:
            best.pop(key, None)
            best[key] = (key, value, seq)
    return sorted((row for row in best.values() if row[2] > clear), key=lambda row: row[2])


@settings(max_examples=300, deadline=None)
@given(PAGE_ROWS, st.integers(-1, 7), st.booleans())
def test_one_complete_page_gives_the_reference_merge(
    rows: list[tuple[str, str, int]], clear: int, sort_first: bool
) -> None:
    # Both ways through the walk's first page: the fast one (unique keys already in seq order:
    # no merge, no sort) and the general one (duplicates or out of order).
    if sort_first:
        rows = sorted(rows, key=lambda row: row[2])
    page = answer(rows, complete=1, latest=9, clear=clear)
    got: list[ExtensionList] = []

    async def pull() -> None:  # returns nothing: asyncio.run may repr a result (reads items)
        got.append(await MsgExt(FakeCaller(scripted(page))).group_get_key_values("g", 1))

    asyncio.run(pull())
    (result,) = got
    expected = _reference(rows, max(clear, 0))
    # First what needs no items (len, as_dict, in), then the items.
    assert len(result) == len(expected)
    assert result.as_dict() == {key: value for key, value, _ in expected}
    assert all(key in result for key, _, _ in expected)
    assert "z" not in result
    assert [(i.key, i.value, i.seq) for i in result] == expected
    assert result == ExtensionList(
        [ExtensionItem(*row) for row in expected], latest_seq=9, clear_seq=max(clear, 0)
    )
