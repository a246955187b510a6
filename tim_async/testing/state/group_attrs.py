"""Group custom attributes: their limits and writes (spec section 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from .core import EmulatorError, nbytes
from .groups import Group, GroupRegistry

__all__ = [
    "ATTR_KEY_MAX_BYTES",
    "ATTR_MAX_KEYS",
    "ATTR_TOTAL_MAX_BYTES",
    "ATTR_VALUE_MAX_BYTES",
    "GroupAttrStore",
]

ATTR_MAX_KEYS: Final = 16
ATTR_KEY_MAX_BYTES: Final = 32
ATTR_VALUE_MAX_BYTES: Final = 4000
ATTR_TOTAL_MAX_BYTES: Final = 16000


class GroupAttrStore(GroupRegistry):
    """The group attributes of a :class:`~tim_async.testing.state.TimState` (a part of it, not
    used alone: ``TimState.__init__`` sets the attributes declared here)."""

    attr_write_limit: int | None

    def _attr_group(self, group_id: str, now: float | None, *, clear: bool = False) -> Group:
        group = self.group(group_id)
        if clear and group.group_type == "Community":
            raise EmulatorError(10007, "clear_group_attr is not supported for Community groups")
        limit = self.attr_write_limit
        if now is not None and limit is not None:
            writes = group.attr_writes
            cutoff = now - 1.0
            while writes and writes[0] <= cutoff:
                writes.popleft()
            if len(writes) >= limit:
                raise EmulatorError(
                    10049,
                    f"more than {limit} attribute writes per second on group {group_id!r}",
                )
            writes.append(now)
        return group

    def _commit_attrs(
        self, group: Group, attrs: dict[str, str], option: str, changed: list[tuple[str, str]]
    ) -> None:
        """Store a group's new attributes. Every attribute write (``option`` "modify", "set",
        "delete" or "clear"; ``changed`` the pairs the request named) ends here, once all
        checks passed."""
        group.attrs = attrs

    def get_group_attrs(self, group_id: str) -> dict[str, str]:
        return dict(self.group(group_id).attrs)

    def modify_group_attrs(
        self, group_id: str, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> None:
        """Upsert ``items``. ``now`` (monotonic) enforces the write rate; None skips it."""
        group = self._attr_group(group_id, now)
        result = dict(group.attrs)
        result.update(items)
        _check_attrs(items, result)
        self._commit_attrs(group, result, "modify", list(items))

    def set_group_attrs(
        self, group_id: str, items: Sequence[tuple[str, str]], *, now: float | None = None
    ) -> None:
        """Replace all attributes with ``items``."""
        group = self._attr_group(group_id, now)
        result = dict(items)
        _check_attrs(items, result)
        self._commit_attrs(group, result, "set", list(items))

    def delete_group_attrs(
        self, group_id: str, keys: Sequence[str], *, now: float | None = None
    ) -> None:
        group = self._attr_group(group_id, now)
        for i, key in enumerate(keys):
            _check_attr_key(key, i)
            if key not in group.attrs:
                raise EmulatorError(
                    10050, f"GroupAttr[{i}].key {key!r} does not exist in group {group_id!r}"
                )
        gone = set(keys)
        result = {k: v for k, v in group.attrs.items() if k not in gone}
        self._commit_attrs(group, result, "delete", [(k, group.attrs[k]) for k in keys])

    def clear_group_attrs(self, group_id: str, *, now: float | None = None) -> None:
        group = self._attr_group(group_id, now, clear=True)
        self._commit_attrs(group, {}, "clear", list(group.attrs.items()))


def _check_attr_key(key: str, index: int) -> None:
    if not key:
        raise EmulatorError(10004, f"GroupAttr[{index}].key must not be empty")
    klen = nbytes(key)
    if klen > ATTR_KEY_MAX_BYTES:
        raise EmulatorError(
            10045, f"GroupAttr[{index}].key is {klen} bytes; at most {ATTR_KEY_MAX_BYTES}"
        )


def _check_attrs(items: Sequence[tuple[str, str]], result: Mapping[str, str]) -> None:
    if not items:
        raise EmulatorError(10004, "GroupAttr must hold at least one attribute")
    for i, (key, value) in enumerate(items):
        _check_attr_key(key, i)
        vlen = nbytes(value)
        if vlen > ATTR_VALUE_MAX_BYTES:
            raise EmulatorError(
                10046, f"GroupAttr[{i}].value is {vlen} bytes; at most {ATTR_VALUE_MAX_BYTES}"
            )
    if len(result) > ATTR_MAX_KEYS:
        raise EmulatorError(
            10047, f"the group would hold {len(result)} attributes; at most {ATTR_MAX_KEYS}"
        )
    total = sum(nbytes(v) for v in result.values())
    if total > ATTR_TOTAL_MAX_BYTES:
        raise EmulatorError(
            10048,
            f"the group's attribute values would total {total} bytes; "
            f"at most {ATTR_TOTAL_MAX_BYTES}",
        )
