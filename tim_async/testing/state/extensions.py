"""Message extensions: the key-value pairs of one message, with their seqs (spec section 3)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Final

import attrs

from .core import EmulatorError, nbytes

__all__ = [
    "EXT_KEY_MAX_BYTES",
    "EXT_MAX_PAIRS",
    "EXT_MAX_PER_CALL",
    "EXT_VALUE_MAX_BYTES",
    "ExtensionMeta",
    "Extensions",
]

EXT_MAX_PAIRS: Final = 300
EXT_MAX_PER_CALL: Final = 20
EXT_KEY_MAX_BYTES: Final = 100
EXT_VALUE_MAX_BYTES: Final = 1000


@attrs.frozen
class ExtensionMeta:
    """Bookkeeping of one message's extensions (for assertions in tests)."""

    latest_seq: int
    clear_seq: int
    #: pairs kept in storage, including pairs hidden by the last clear
    stored: int
    #: pairs with ``seq > clear_seq`` (what a client should end up with)
    visible: int


class Extensions:
    """The key-value pairs of one message.

    ``pairs`` maps key -> (value, seq). Every write takes a new message-wide seq (latest + 1) and
    re-inserts its keys at the end of the dict, so iteration order is always sorted by seq, and by
    request order within one seq. A clear only moves ``clear_seq``: the older pairs stay in storage
    (and are served by pulls unless ``serve_cleared`` is off) until a later write replaces or
    deletes them.
    """

    __slots__ = ("_snapshots", "clear_seq", "latest_seq", "pairs")

    def __init__(self) -> None:
        self.pairs: dict[str, tuple[str, int]] = {}
        self.latest_seq = 0
        self.clear_seq = 0
        # serve_cleared -> (seqs, wire items); rebuilt after each write
        self._snapshots: dict[bool, tuple[list[int], list[dict[str, Any]]]] = {}

    def visible(self) -> dict[str, tuple[str, int]]:
        clear = self.clear_seq
        return {k: v for k, v in self.pairs.items() if v[1] > clear}

    def visible_count(self) -> int:
        clear = self.clear_seq
        return sum(1 for _, seq in self.pairs.values() if seq > clear)

    def meta(self) -> ExtensionMeta:
        return ExtensionMeta(
            latest_seq=self.latest_seq,
            clear_seq=self.clear_seq,
            stored=len(self.pairs),
            visible=self.visible_count(),
        )

    # writes --------------------------------------------------------------------------------

    def set(self, items: Sequence[tuple[str, str]]) -> int:
        """Set (upsert) ``items`` under one new seq; return that seq."""
        if not items:
            raise EmulatorError(10004, "ExtensionList must hold at least one pair")
        if len(items) > EXT_MAX_PER_CALL:
            raise EmulatorError(
                10004,
                f"ExtensionList holds {len(items)} pairs; at most {EXT_MAX_PER_CALL} per call",
            )
        clear = self.clear_seq
        new_keys: set[str] = set()
        for i, (key, value) in enumerate(items):
            _check_ext_key(key, i)
            vlen = nbytes(value)
            if vlen > EXT_VALUE_MAX_BYTES:
                raise EmulatorError(
                    10004,
                    f"ExtensionList[{i}].Value is {vlen} bytes; at most {EXT_VALUE_MAX_BYTES}",
                )
            old = self.pairs.get(key)
            if old is None or old[1] <= clear:
                new_keys.add(key)
        if new_keys:
            total = self.visible_count() + len(new_keys)
            if total > EXT_MAX_PAIRS:
                raise EmulatorError(
                    10004,
                    f"the message would hold {total} extension pairs; "
                    f"at most {EXT_MAX_PAIRS} per message",
                )
        seq = self.latest_seq + 1
        pairs = self.pairs
        for key, value in items:
            pairs.pop(key, None)
            pairs[key] = (value, seq)
        self.latest_seq = seq
        self._snapshots.clear()
        return seq

    def delete(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` (missing keys are ignored) under one new seq; return that seq."""
        if not keys:
            raise EmulatorError(10004, "ExtensionList must hold at least one key to delete")
        if len(keys) > EXT_MAX_PER_CALL:
            raise EmulatorError(
                10004,
                f"ExtensionList holds {len(keys)} keys; at most {EXT_MAX_PER_CALL} per call",
            )
        for i, key in enumerate(keys):
            _check_ext_key(key, i)
        for key in keys:
            self.pairs.pop(key, None)
        self.latest_seq += 1
        self._snapshots.clear()
        return self.latest_seq

    def clear(self) -> int:
        """Clear all pairs: take a new seq ``s`` and set ``clear_seq = s``; return ``s``."""
        self.latest_seq += 1
        self.clear_seq = self.latest_seq
        self._snapshots.clear()
        return self.latest_seq

    # reads ---------------------------------------------------------------------------------

    def page(
        self, start_seq: int, page_size: int, *, serve_cleared: bool = True
    ) -> tuple[list[dict[str, Any]], bool]:
        """Items with ``Seq >= start_seq`` sorted by seq, at most ``page_size`` of them, and
        whether the page holds the last such item. The cut may fall inside a same-seq run."""
        snap = self._snapshots.get(serve_cleared)
        if snap is None:
            clear = self.clear_seq
            seqs: list[int] = []
            items: list[dict[str, Any]] = []
            for key, (value, seq) in self.pairs.items():
                if serve_cleared or seq > clear:
                    seqs.append(seq)
                    items.append({"Key": key, "Value": value, "Seq": seq})
            snap = (seqs, items)
            self._snapshots[serve_cleared] = snap
        seqs, items = snap
        start = bisect.bisect_left(seqs, start_seq)
        end = start + page_size
        return items[start:end], end >= len(items)


def _check_ext_key(key: str, index: int) -> None:
    if not key:
        raise EmulatorError(10004, f"ExtensionList[{index}].Key must not be empty")
    klen = nbytes(key)
    if klen > EXT_KEY_MAX_BYTES:
        raise EmulatorError(
            10004, f"ExtensionList[{index}].Key is {klen} bytes; at most {EXT_KEY_MAX_BYTES}"
        )
