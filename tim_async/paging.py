"""The StartSeq / CompleteFlag walk over message extensions, written once for both commands.

The server answers a pull with at most 200 pairs with ``Seq >= StartSeq``, sorted by ``Seq``;
several keys can share one ``Seq`` (one set call stamps all its keys with one ``Seq``). So the
walk asks again from the highest ``Seq`` seen so far (inclusive, which re-reads the rest of a
same-``Seq`` group cut by the page end), de-duplicates by key keeping the highest ``Seq``, and
stops at ``CompleteFlag = 1``.

If more pairs share one ``Seq`` than fit on a page, the server cannot move past them: the
same page comes back again. A page that brings nothing new (no new key, no higher ``Seq`` for a
known key) while ``CompleteFlag = 0`` therefore raises :class:`~tim_async.errors.TimPagingError`
instead of looping forever or silently skipping pairs.

Every answer is checked completely in the call that received it. The walk offers the session
:func:`decode_pull` (its ``decode`` hook), which reads the answer's bytes with msgspec: parsing
and type checks in one pass, in C. An answer it declines arrives as decoded JSON and goes
through :func:`decode_rows` (a hand-written fast path, else the cattrs converter, which names
the field that is wrong); a property test holds the two paths to the same results.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import AsyncIterator, Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Annotated, Any

import attrs
import msgspec
from msgspec import structs as msgspec_structs

from tim_async import _wire
from tim_async.errors import TimPagingError, TimTransportError
from tim_async.models import (
    ExtensionItem,
    ExtensionList,
    ExtensionPage,
    Rows,
    _build_items,
    _items_rows,
    _lazy_list,
    _lazy_page,
    _third,
    _transpose,
)

if TYPE_CHECKING:
    from tim_async.caller import Caller

__all__ = [
    "KeyValuesAnswer",
    "decode_key_values",
    "decode_pull",
    "pull_key_values",
    "walk_key_values",
]


@attrs.frozen
class KeyValuesAnswer:
    """Wire shape of a ``get_key_values`` / ``group_get_key_values`` answer (internal)."""

    complete_flag: int
    latest_seq: int
    clear_seq: int
    #: Absent means no pairs (an empty list may be left out of the answer).
    extension_list: tuple[ExtensionItem, ...] = ()


#: Internal: one checked pull answer: ``(complete, latest_seq, clear_seq, rows)``.
Decoded = tuple[bool, int, int, Rows]


def decode_key_values(answer: Any, *, api: str) -> KeyValuesAnswer:
    """Decode one pull answer into its wire model; raises
    :class:`~tim_async.errors.TimTransportError` when it is malformed (including a
    ``CompleteFlag`` other than 0 or 1). The walk uses :func:`decode_rows`, which checks the
    same and returns the same pairs as rows."""
    complete, latest, clear, rows = decode_rows(answer, api=api)
    return KeyValuesAnswer(int(complete), latest, clear, _build_items(rows))


def decode_rows(answer: Any, *, api: str) -> Decoded:
    """Check one pull answer completely and return it as :data:`Decoded`; raises
    :class:`~tim_async.errors.TimTransportError` naming the field when it is malformed
    (including a ``CompleteFlag`` other than 0 or 1)."""
    decoded = _decode_fast(answer)
    if decoded is None:
        # Anything the hand-written path does not take: the converter decodes it (to the same
        # result) or describes what is wrong.
        wire = _wire.structure(answer, KeyValuesAnswer, api=api)
        decoded = (
            wire.complete_flag == 1,
            wire.latest_seq,
            wire.clear_seq,
            _items_rows(wire.extension_list),
        )
        flag = wire.complete_flag
    else:
        flag = answer[_COMPLETE]
    if flag != 0 and flag != 1:
        raise TimTransportError(
            f"malformed answer: $.CompleteFlag: expected 0 or 1, got {flag}", api=api
        )
    return decoded


_COMPLETE, _LATEST, _CLEAR, _LIST = _wire.field_wire_names(KeyValuesAnswer)
_KEY, _VALUE, _SEQ = _wire.field_wire_names(ExtensionItem)
_get_key = itemgetter(_KEY)
_get_value = itemgetter(_VALUE)
_get_seq = itemgetter(_SEQ)
_EMPTY_ROWS: Rows = ((), (), ())


def _decode_fast(answer: Any) -> Decoded | None:
    """The hot path of :func:`decode_rows`: a well-formed answer checked and decoded in C-level
    passes over its columns (``map`` of ``itemgetter`` and of ``type``), to the same result as
    the converter. Returns None for anything else (a field missing, a wrong type, an answer
    orjson would not produce), which the converter then decodes or describes."""
    if type(answer) is not dict:
        return None
    complete = answer.get(_COMPLETE)
    latest = answer.get(_LATEST)
    clear = answer.get(_CLEAR)
    if type(complete) is not int or type(latest) is not int or type(clear) is not int:
        return None
    wire_items = answer.get(_LIST, _ABSENT)
    if wire_items is _ABSENT:
        return complete == 1, latest, clear, _EMPTY_ROWS
    if type(wire_items) is not list:
        return None
    try:
        # A pair that is not an object raises TypeError (orjson gives dicts, lists, str, int,
        # float, bool, None), a missing field KeyError.
        keys = tuple(map(_get_key, wire_items))
        values = tuple(map(_get_value, wire_items))
        seqs = tuple(map(_get_seq, wire_items))
    except (KeyError, TypeError):
        return None
    n = len(keys)
    # Exact types, as the converter's hooks check them (``type(x) is int`` refuses bool).
    if (
        list(map(type, keys)).count(str) != n
        or list(map(type, values)).count(str) != n
        or list(map(type, seqs)).count(int) != n
    ):
        return None
    return complete == 1, latest, clear, (keys, values, seqs)


_ABSENT: Any = object()


# --------------------------------------------------------------------------- decoding the bytes

#: JSON integers that ``orjson`` (the session's decoder) gives as ``int``, within what msgspec
#: can bound: anything outside is left to the JSON path, which decides as before.
_WireInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_WirePair = msgspec.defstruct(
    "_WirePair",
    [("key", str), ("value", str), ("seq", _WireInt)],
    rename=dict(zip(("key", "value", "seq"), (_KEY, _VALUE, _SEQ), strict=True)),
    gc=False,
)
_WireAnswer = msgspec.defstruct(
    "_WireAnswer",
    [
        ("action_status", Any),  # the session's envelope check: present, any value
        ("error_code", _WireInt),
        ("complete_flag", _WireInt),
        ("latest_seq", _WireInt),
        ("clear_seq", _WireInt),
        ("extension_list", tuple[_WirePair, ...], ()),  # type: ignore[valid-type]
    ],
    rename={
        "action_status": "ActionStatus",
        "error_code": "ErrorCode",
        "complete_flag": _COMPLETE,
        "latest_seq": _LATEST,
        "clear_seq": _CLEAR,
        "extension_list": _LIST,
    },
    gc=False,
)
_pull_decoder = msgspec.json.Decoder(_WireAnswer)
_astuple = msgspec_structs.astuple


def decode_pull(raw: bytes) -> Decoded | None:
    """The answer's bytes decoded and checked in one pass (msgspec, in C), for the session's
    ``decode`` hook: the :data:`Decoded` of a successful, well-formed pull answer (the envelope
    the session checks, ``ErrorCode`` 0, every field and pair of the right type,
    ``CompleteFlag`` 0 or 1), exactly what :func:`decode_rows` gives for the same answer. None
    for anything else (an error code, a malformed answer, JSON that orjson would read
    differently): the session then takes its usual path, which raises the error or hands the
    decoded JSON to :func:`decode_rows` to describe."""
    try:
        answer: Any = _pull_decoder.decode(raw)
    except msgspec.DecodeError:  # ValidationError included
        return None
    complete = answer.complete_flag
    if answer.error_code != 0 or (complete != 1 and complete != 0):
        return None
    pairs = answer.extension_list
    if not pairs:
        return complete == 1, answer.latest_seq, answer.clear_seq, _EMPTY_ROWS
    # One (key, value, seq) tuple per pair, transposed in C: faster than a pass per field.
    keys, values, seqs = zip(*map(_astuple, pairs), strict=True)
    return complete == 1, answer.latest_seq, answer.clear_seq, (keys, values, seqs)


def _is_sorted(seqs: tuple[int, ...]) -> bool:
    return list(seqs) == sorted(seqs)


class _Walk:
    """The state of one walk between its pages: the next ``StartSeq``, the highest ``Seq`` seen
    per key and the highest ``ClearSeq`` so far."""

    __slots__ = ("api", "clear_seq", "cursor", "seen")

    def __init__(self, api: str, start_seq: int) -> None:
        self.api = api
        self.cursor = start_seq
        self.seen: dict[str, int] | None = None  # key -> highest seq; None before the first pair
        self.clear_seq = 0

    def step(self, answer: Any) -> Decoded:
        """Take one answer (as :func:`decode_pull` gave it, or the decoded JSON, which is then
        checked with :func:`decode_rows`) and return it with only the pairs new to the walk;
        ``cursor`` moves to the next page's ``StartSeq``. Raises
        :class:`~tim_async.errors.TimPagingError` when a page with ``CompleteFlag = 0`` brings
        nothing new."""
        api = self.api
        if type(answer) is tuple:
            complete, latest, page_clear, rows = answer
        else:
            complete, latest, page_clear, rows = decode_rows(answer, api=api)
        if page_clear > self.clear_seq:
            self.clear_seq = page_clear
        clear_seq = self.clear_seq
        cursor = self.cursor
        seen = self.seen
        keys, values, seqs = rows
        size = len(keys)
        if seen is None and (size == 0 or (len(set(keys)) == size and _is_sorted(seqs))):
            # The usual first page: unique keys in seq order, all new to the walk. Only the
            # pairs at or below ClearSeq (a prefix, as the page is sorted) are dropped.
            progressed = size > 0
            top = seqs[-1] if size and seqs[-1] > cursor else cursor
            if size and seqs[0] <= clear_seq:
                cut = bisect_right(seqs, clear_seq)
                fresh = keys[cut:], values[cut:], seqs[cut:]
            else:
                fresh = rows
            if not complete and size:
                self.seen = dict(zip(keys, seqs, strict=True))
        else:
            if seen is None:
                seen = self.seen = {}
            fresh, progressed, top = _merge_page(seen, rows, clear_seq, cursor)
        if not complete and not progressed:
            raise TimPagingError(
                f"{api}: paging cannot progress at StartSeq={cursor}: a page of {size} "
                f"pair(s) with CompleteFlag=0 brought no new key and no higher Seq "
                f"(more pairs share Seq {cursor} than fit on one page, or the server ignores "
                f"StartSeq); {len(self.seen or ())} distinct key(s) read so far"
            )
        self.cursor = top
        return complete, latest, page_clear, fresh


async def walk_key_values(
    caller: Caller,
    api: str,
    make_body: Callable[[int], dict[str, Any]],
    start_seq: int,
) -> AsyncIterator[ExtensionPage]:
    """Walk all pages of one message's extensions.

    ``make_body(start_seq)`` builds a fresh request body for each page (the command's fields
    plus ``StartSeq``, left out when 0). Each yielded :class:`ExtensionPage` is a new immutable
    object holding only the pairs of that answer that are new to the walk (see
    :class:`ExtensionPage`). No connection is held between pages: ``caller.call`` returns a
    fully read answer before anything is yielded, so the consumer may ``break`` at any time.
    Every answer is checked completely when it arrives (a malformed one raises
    :class:`~tim_async.errors.TimTransportError` from the call that received it); the pages'
    :class:`ExtensionItem` objects are built when first read.

    Raises :class:`~tim_async.errors.TimPagingError` when a page with ``CompleteFlag = 0``
    brings nothing new."""
    walk = _Walk(api, start_seq)
    while True:
        answer = await caller.call(api, make_body(walk.cursor), decode=decode_pull)
        complete, latest, page_clear, fresh = walk.step(answer)
        yield _lazy_page(fresh, complete, latest, page_clear)
        if complete:
            return


async def pull_key_values(
    caller: Caller,
    api: str,
    make_body: Callable[[int], dict[str, Any]],
    start_seq: int,
    on_page: Callable[[], None] | None = None,
) -> ExtensionList:
    """The whole walk of :func:`walk_key_values` merged into one :class:`ExtensionList` (as
    :meth:`ExtensionList.from_pages` merges its pages), in one coroutine: no async generator
    between the caller and its pages. ``on_page()`` is called after each page is read."""
    walk = _Walk(api, start_seq)
    pages: list[ExtensionPage] = []
    while True:
        answer = await caller.call(api, make_body(walk.cursor), decode=decode_pull)
        complete, latest, clear, fresh = walk.step(answer)
        if on_page is not None:
            on_page()
        if complete and not pages:
            # The usual case: one page, whose pairs are unique, sorted by seq and all above
            # max(0, its ClearSeq): exactly what from_pages would return, without the merge.
            return _lazy_list(fresh, max(0, latest), max(0, clear))
        pages.append(_lazy_page(fresh, complete, latest, clear))
        if complete:
            return ExtensionList.from_pages(pages)


def _merge_page(
    seen: dict[str, int], rows: Rows, clear_seq: int, cursor: int
) -> tuple[Rows, bool, int]:
    """The general step of the walk: record ``rows`` in ``seen`` and return the pairs new to the
    walk (a key not seen before or a higher seq for a known one; above ``clear_seq``; one per
    key, the highest; sorted by seq, ties in server order), whether anything was new, and the
    highest seq seen (at least ``cursor``)."""
    fresh: dict[str, tuple[str, str, int]] = {}
    progressed = False
    top = cursor
    for key, value, seq in zip(*rows, strict=True):
        known = seen.get(key)
        if known is None or seq > known:
            seen[key] = seq
            progressed = True
            if seq > clear_seq:
                if known is not None:
                    fresh.pop(key, None)
                fresh[key] = (key, value, seq)
        if seq > top:
            top = seq
    triples = list(fresh.values())
    triples.sort(key=_third)
    return _transpose(triples), progressed, top
