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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import attrs

from tim_async import _wire
from tim_async.errors import TimPagingError, TimTransportError
from tim_async.models import (
    _ITEM_SLOT_SETTERS,
    ExtensionItem,
    ExtensionList,
    ExtensionPage,
    _seq_of,
    _trusted_list,
)

if TYPE_CHECKING:
    from tim_async.caller import Caller

__all__ = ["KeyValuesAnswer", "collect_extension_list", "decode_key_values", "walk_key_values"]


@attrs.frozen
class KeyValuesAnswer:
    """Wire shape of a ``get_key_values`` / ``group_get_key_values`` answer (internal)."""

    complete_flag: int
    latest_seq: int
    clear_seq: int
    #: Absent means no pairs (an empty list may be left out of the answer).
    extension_list: tuple[ExtensionItem, ...] = ()


def decode_key_values(answer: Any, *, api: str) -> KeyValuesAnswer:
    """Decode one pull answer; raises :class:`~tim_async.errors.TimTransportError` when it is
    malformed (including a ``CompleteFlag`` other than 0 or 1)."""
    decoded = _decode_fast(answer)
    if decoded is None:
        decoded = _wire.structure(answer, KeyValuesAnswer, api=api)
    if decoded.complete_flag not in (0, 1):
        raise TimTransportError(
            f"malformed answer: $.CompleteFlag: expected 0 or 1, got {decoded.complete_flag}",
            api=api,
        )
    return decoded


_COMPLETE, _LATEST, _CLEAR, _LIST = _wire.field_wire_names(KeyValuesAnswer)
_KEY, _VALUE, _SEQ = _wire.field_wire_names(ExtensionItem)


def _decode_fast(answer: Any) -> KeyValuesAnswer | None:
    """The hot path of :func:`decode_key_values`: a well-formed answer decoded by hand, to the
    same result as the converter, about three times faster on a page of 200 pairs. Returns
    None for anything else, which the converter then decodes or describes."""
    if type(answer) is not dict or _ITEM_SLOT_SETTERS is None:
        return None
    try:
        complete = answer[_COMPLETE]
        latest = answer[_LATEST]
        clear = answer[_CLEAR]
        if type(complete) is not int or type(latest) is not int or type(clear) is not int:
            return None
        wire_items = answer.get(_LIST, _ABSENT)
        if wire_items is _ABSENT:
            return KeyValuesAnswer(complete, latest, clear)
        if type(wire_items) is not list:
            return None
        new = object.__new__
        cls = ExtensionItem
        set_key, set_value, set_seq = _ITEM_SLOT_SETTERS
        items: list[ExtensionItem] = []
        append = items.append
        for wire in wire_items:
            # orjson gives dicts, lists, str, int, float, bool, None: anything but a dict
            # raises TypeError here.
            key = wire[_KEY]
            value = wire[_VALUE]
            seq = wire[_SEQ]
            if type(key) is not str or type(value) is not str or type(seq) is not int:
                return None
            item = new(cls)
            set_key(item, key)
            set_value(item, value)
            set_seq(item, seq)
            append(item)
    except (KeyError, TypeError):
        return None
    return KeyValuesAnswer(complete, latest, clear, tuple(items))


_ABSENT: Any = object()


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

    Raises :class:`~tim_async.errors.TimPagingError` when a page with ``CompleteFlag = 0``
    brings nothing new."""
    cursor = start_seq
    seen: dict[str, int] = {}  # key -> highest seq seen
    clear_seq = 0
    while True:
        answer = await caller.call(api, make_body(cursor))
        page = decode_key_values(answer, api=api)
        clear_seq = max(clear_seq, page.clear_seq)
        fresh: dict[str, ExtensionItem] = {}
        progressed = False
        top = cursor
        for item in page.extension_list:
            key = item.key
            seq = item.seq
            known = seen.get(key)
            if known is None or seq > known:
                seen[key] = seq
                progressed = True
                if seq > clear_seq:
                    if known is not None:
                        fresh.pop(key, None)
                    fresh[key] = item
            if seq > top:
                top = seq
        complete = page.complete_flag == 1
        if not complete and not progressed:
            size = len(page.extension_list)
            raise TimPagingError(
                f"{api}: paging cannot progress at StartSeq={cursor}: a page of {size} "
                f"pair(s) with CompleteFlag=0 brought no new key and no higher Seq "
                f"(more pairs share Seq {cursor} than fit on one page, or the server ignores "
                f"StartSeq); {len(seen)} distinct key(s) read so far"
            )
        items = list(fresh.values())
        items.sort(key=_seq_of)
        yield ExtensionPage(
            items=tuple(items),
            complete=complete,
            latest_seq=page.latest_seq,
            clear_seq=page.clear_seq,
        )
        if complete:
            return
        cursor = top


async def collect_extension_list(pages: AsyncIterator[ExtensionPage]) -> ExtensionList:
    """Read every page of a walk (:func:`walk_key_values`) and merge them into one
    :class:`ExtensionList`."""
    collected = [page async for page in pages]
    if len(collected) == 1:
        # The usual case. A walk's page holds unique keys sorted by seq, all above
        # max(0, its ClearSeq): exactly what from_pages would return, without the merge.
        page = collected[0]
        return _trusted_list(page.items, max(0, page.latest_seq), max(0, page.clear_seq))
    return ExtensionList.from_pages(collected)
