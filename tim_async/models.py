"""Typed results of the tim_async endpoints.

All models are frozen, slotted attrs classes with snake_case fields; the PascalCase wire names
live in :mod:`tim_async._wire` only.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import attrs

from tim_async.errors import TimValidationError

__all__ = [
    "CounterMode",
    "ExtensionItem",
    "ExtensionList",
    "ExtensionPage",
    "SetKeyResult",
]


class CounterMode(enum.StrEnum):
    """How :meth:`GroupCounter.update_group_counter` applies the given values."""

    SET = "Set"
    """Overwrite the counters (last writer wins). Safe to resend."""
    INCREASE = "Increase"
    """Add the values (a missing counter starts at 0). Never resent automatically."""
    DECREASE = "Decrease"
    """Subtract the values (a missing counter starts at 0). Never resent automatically."""


@attrs.frozen
class ExtensionItem:
    """One message extension key-value pair and its version ``seq``.

    One set call stamps all of its keys with one new message-wide ``seq``, so several items can
    share a ``seq``."""

    key: str
    value: str
    seq: int


def _slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None]:
    """The setter of slot ``name`` of the slotted class ``cls`` (bypasses frozen attrs' hook)."""
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


def _slot_setters() -> tuple[Callable[[Any, Any], None], ...] | None:
    """Internal, for the decoding hot path: the slot setters of :class:`ExtensionItem`'s
    ``key``, ``value`` and ``seq``, or None when they must not be used.

    A frozen attrs class sets each field in ``__init__`` through ``object.__setattr__``;
    ``object.__new__(ExtensionItem)`` followed by these setters builds the same object about
    twice as fast, as long as the fields have no validator, converter or ``on_setattr`` hook
    (the caller checks the types)."""
    fields = attrs.fields(ExtensionItem)
    if [f.name for f in fields] != ["key", "value", "seq"] or any(
        f.validator is not None or f.converter is not None or f.on_setattr is not None
        for f in fields
    ):
        return None  # pragma: no cover - the model changed: use the constructor
    return tuple(_slot_setter(ExtensionItem, f.name) for f in fields)


#: Internal: ``(set_key, set_value, set_seq)`` (see :func:`_slot_setters`), or None.
_ITEM_SLOT_SETTERS = _slot_setters()

#: Internal: the pairs of a page or list as three parallel tuples ``(keys, values, seqs)``,
#: already type-checked (str, str, int). A decoded answer is kept in this form until its
#: :class:`ExtensionItem` objects are first asked for: three pointers per pair instead of one
#: object per pair, and no per-pair work for ``len()``, ``as_dict()`` or ``in``.
Rows = tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]


def _items_tuple(items: Iterable[ExtensionItem]) -> tuple[ExtensionItem, ...]:
    return items if type(items) is tuple else tuple(items)


def _build_items(rows: Rows) -> tuple[ExtensionItem, ...]:
    """The :class:`ExtensionItem` objects of ``rows`` (checked rows: no validation here)."""
    keys, values, seqs = rows
    if _ITEM_SLOT_SETTERS is None:  # pragma: no cover - the model changed
        return tuple(map(ExtensionItem, keys, values, seqs))
    new = object.__new__
    cls = ExtensionItem
    set_key, set_value, set_seq = _ITEM_SLOT_SETTERS
    items: list[ExtensionItem] = []
    append = items.append
    for key, value, seq in zip(keys, values, seqs, strict=True):
        item = new(cls)
        set_key(item, key)
        set_value(item, value)
        set_seq(item, seq)
        append(item)
    return tuple(items)


def _items_rows(items: tuple[ExtensionItem, ...]) -> Rows:
    return _transpose([(item.key, item.value, item.seq) for item in items])


class _LazyItems:
    """Mixin of :class:`ExtensionPage` and :class:`ExtensionList`: ``items`` built on first use.

    The walk creates these models with the answer's checked rows (:data:`Rows`) and without
    ``items``: the ``items`` slot stays empty until something reads it, and Python then calls
    ``__getattr__``, which builds the tuple of :class:`ExtensionItem`, stores it in the slot
    (later reads are plain attribute reads) and drops the rows. attrs' generated ``__eq__``,
    ``__hash__``, ``__repr__``, pickling and ``attrs.evolve`` read ``self.items`` too, so they
    see the same objects. Everything that can fail was checked when the answer arrived."""

    __slots__ = ()

    if not TYPE_CHECKING:  # mypy: no catch-all attributes on the public models

        def __getattr__(self, name: str) -> Any:
            if name == "items":
                rows = self._rows
                if rows is not None:
                    items = _build_items(rows)
                    object.__setattr__(self, "items", items)
                    object.__setattr__(self, "_rows", None)
                    return items
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _columns(self) -> Rows:
        """The pairs as :data:`Rows`, without building items."""
        rows: Rows | None = self._rows  # type: ignore[attr-defined]
        if rows is not None:
            return rows
        return _items_rows(self.items)  # type: ignore[attr-defined]


@attrs.frozen
class ExtensionPage(_LazyItems):
    """One page of a message extension pull, as yielded by ``iter_group_key_values`` /
    ``iter_key_values``.

    ``items`` holds the pairs of one server answer that bring something new to the walk: keys
    not seen on an earlier page, or a higher ``seq`` for a key seen before (consecutive pages
    overlap on the server, the overlap is removed), without pairs at or below the ``clear_seq``
    known so far. ``complete``, ``latest_seq`` and ``clear_seq`` are the answer's
    ``CompleteFlag``, ``LatestSeq`` and ``ClearSeq``. A later page can raise ``clear_seq``:
    :meth:`ExtensionList.from_pages` merges pages correctly."""

    items: tuple[ExtensionItem, ...] = attrs.field(converter=_items_tuple)
    complete: bool
    latest_seq: int
    clear_seq: int

    @functools.cached_property
    def _rows(self) -> Rows | None:
        """Internal: the checked rows of a page made by the walk until ``items`` is built
        (None for a page built from items)."""
        return None


@attrs.frozen
class ExtensionList(_LazyItems):
    """All extension pairs of one message: unique keys, sorted by ``seq`` (pairs sharing a
    ``seq`` stay in server order), none with ``seq <= clear_seq``.

    Supports ``len()``, iteration over :class:`ExtensionItem`, ``key in extensions`` and
    :meth:`as_dict`."""

    items: tuple[ExtensionItem, ...] = attrs.field(converter=_items_tuple)
    latest_seq: int
    clear_seq: int

    def __attrs_post_init__(self) -> None:
        keys: set[str] = set()
        previous: int | None = None
        for item in self.items:
            if item.key in keys:
                raise TimValidationError("items", f"duplicate key {item.key!r}")
            keys.add(item.key)
            if previous is not None and item.seq < previous:
                raise TimValidationError("items", "items must be sorted by seq")
            if item.seq <= self.clear_seq:
                raise TimValidationError(
                    "items",
                    f"key {item.key!r} has seq {item.seq} <= clear_seq {self.clear_seq}",
                )
            previous = item.seq

    @functools.cached_property
    def _rows(self) -> Rows | None:
        """Internal: the checked rows of a list made by the walk until ``items`` is built
        (None for a list built from items)."""
        return None

    @functools.cached_property
    def _keys(self) -> frozenset[str]:
        """Internal: the keys, for ``in`` (built on its first use)."""
        return frozenset(self._columns()[0])

    def __len__(self) -> int:
        rows = self._rows
        return len(self.items) if rows is None else len(rows[0])

    def __iter__(self) -> Iterator[ExtensionItem]:
        return iter(self.items)

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._keys
        except TypeError:  # unhashable: not a key
            return False

    def as_dict(self) -> dict[str, str]:
        """The pairs as ``{key: value}``, in ``seq`` order."""
        rows = self._rows
        if rows is not None:
            return dict(zip(rows[0], rows[1], strict=True))
        return {item.key: item.value for item in self.items}

    @classmethod
    def from_pages(cls, pages: Iterable[ExtensionPage]) -> ExtensionList:
        """Merge the pages of one walk: keep each key's highest ``seq``, then drop every pair at
        or below the highest ``clear_seq`` seen on any page. ``latest_seq`` is the highest
        ``LatestSeq`` seen."""
        merged: dict[str, tuple[str, int]] = {}
        clear_seq = 0
        latest_seq = 0
        for page in pages:
            clear_seq = max(clear_seq, page.clear_seq)
            latest_seq = max(latest_seq, page.latest_seq)
            keys, values, seqs = page._columns()
            for key, value, seq in zip(keys, values, seqs, strict=True):
                known = merged.get(key)
                if known is None:
                    merged[key] = (value, seq)
                elif seq > known[1]:
                    # Re-insert so that, within one seq, keys keep the server's order.
                    del merged[key]
                    merged[key] = (value, seq)
        visible = [(key, value, seq) for key, (value, seq) in merged.items() if seq > clear_seq]
        visible.sort(key=_third)
        if cls is ExtensionList:
            # Valid by construction (unique keys, sorted, above clear_seq): skip the checks.
            return _lazy_list(_transpose(visible), latest_seq, clear_seq)
        items = tuple(ExtensionItem(key, value, seq) for key, value, seq in visible)
        return cls(items=items, latest_seq=latest_seq, clear_seq=clear_seq)


_third = itemgetter(2)


def _transpose(triples: list[tuple[str, str, int]]) -> Rows:
    """Internal: ``(key, value, seq)`` triples as :data:`Rows`."""
    if not triples:
        return (), (), ()
    keys, values, seqs = zip(*triples, strict=True)
    return keys, values, seqs


_set_page_rows = _slot_setter(ExtensionPage, "_rows")
_set_page_complete = _slot_setter(ExtensionPage, "complete")
_set_page_latest = _slot_setter(ExtensionPage, "latest_seq")
_set_page_clear = _slot_setter(ExtensionPage, "clear_seq")
_set_list_rows = _slot_setter(ExtensionList, "_rows")
_set_list_latest = _slot_setter(ExtensionList, "latest_seq")
_set_list_clear = _slot_setter(ExtensionList, "clear_seq")


def _lazy_page(rows: Rows, complete: bool, latest_seq: int, clear_seq: int) -> ExtensionPage:
    """Internal: an :class:`ExtensionPage` of checked ``rows`` whose items are built on first
    use."""
    page: ExtensionPage = object.__new__(ExtensionPage)
    _set_page_rows(page, rows)
    _set_page_complete(page, complete)
    _set_page_latest(page, latest_seq)
    _set_page_clear(page, clear_seq)
    return page


def _lazy_list(rows: Rows, latest_seq: int, clear_seq: int) -> ExtensionList:
    """Internal: an :class:`ExtensionList` of checked ``rows`` whose invariants the caller
    guarantees (keys unique, sorted by seq, all above ``clear_seq``), built without
    re-checking them; its items are built on first use."""
    result: ExtensionList = object.__new__(ExtensionList)
    _set_list_rows(result, rows)
    _set_list_latest(result, latest_seq)
    _set_list_clear(result, clear_seq)
    return result


@attrs.frozen
class SetKeyResult:
    """The outcome of one key of a ``set_key_values`` / ``group_set_key_values`` call.

    ``error_code`` 0 means the key was written (or deleted); otherwise the key failed alone
    (e.g. 23001: the ``seq`` sent was stale) and ``value`` / ``seq`` hold what the server
    reported for it, typically the latest version. The server reports results in one of two
    shapes (objects with ``ErrorCode`` and ``Extension`` {Key, Value, Seq}, or flat
    {Key, Value, Seq}); both decode to this model."""

    key: str
    value: str = ""
    seq: int = 0
    error_code: int = 0
    error_info: str = ""

    @property
    def ok(self) -> bool:
        """True when this key was applied (``error_code == 0``)."""
        return self.error_code == 0

    @staticmethod
    def _wire_in(obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """Flatten the ``{ErrorCode, ErrorInfo, Extension: {Key, Value, Seq}}`` shape."""
        extension = obj.get("Extension")
        if extension is None:
            return obj
        if not isinstance(extension, Mapping):
            raise TypeError(f"Extension: expected an object, got {type(extension).__name__}")
        flat = dict(extension)
        for name in ("ErrorCode", "ErrorInfo"):
            if name in obj:
                flat[name] = obj[name]
        return flat
