"""Group counters: their limits and updates (spec section 5)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from .core import EmulatorError, nbytes
from .groups import Group, GroupRegistry

__all__ = [
    "COUNTER_KEY_MAX_BYTES",
    "COUNTER_MAX_KEYS",
    "INT64_MAX",
    "INT64_MIN",
    "GroupCounterStore",
]

COUNTER_MAX_KEYS: Final = 20
COUNTER_KEY_MAX_BYTES: Final = 128
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class GroupCounterStore(GroupRegistry):
    """The group counters of a :class:`~tim_async.testing.state.TimState` (a part of it)."""

    def _counter_group(self, group_id: str) -> Group:
        group = self.group(group_id)
        if group.group_type == "Community":
            raise EmulatorError(10007, "group counters are not supported for Community groups")
        return group

    def get_group_counters(
        self, group_id: str, keys: Sequence[str] | None = None
    ) -> list[tuple[str, int]]:
        """Counters in creation order; with ``keys``, those of them that exist, in that order."""
        group = self._counter_group(group_id)
        if keys is None:
            return list(group.counters.items())
        _check_counter_keys(keys, "GroupCounterKeys")
        counters = group.counters
        seen: set[str] = set()
        out: list[tuple[str, int]] = []
        for key in keys:
            if key in counters and key not in seen:
                seen.add(key)
                out.append((key, counters[key]))
        return out

    def update_group_counters(
        self, group_id: str, items: Sequence[tuple[str, int]], mode: str
    ) -> list[tuple[str, int]]:
        """Apply ``mode`` ("Set", "Increase", "Decrease") to each item, all or nothing; return
        the updated counters' latest values (each key once, in first-appearance order)."""
        if mode not in ("Set", "Increase", "Decrease"):
            raise EmulatorError(
                10004, f"Mode must be 'Set', 'Increase' or 'Decrease', got {mode!r}"
            )
        group = self._counter_group(group_id)
        if not items:
            raise EmulatorError(10004, "GroupCounter must hold at least one counter")
        _check_counter_keys([k for k, _ in items], "GroupCounter", key_field="Key")
        result = dict(group.counters)
        for i, (key, value) in enumerate(items):
            if not INT64_MIN <= value <= INT64_MAX:
                raise EmulatorError(
                    10004, f"GroupCounter[{i}].Value {value} is not a signed 64-bit integer"
                )
            if mode == "Set":
                new = value
            elif mode == "Increase":
                new = result.get(key, 0) + value
            else:
                new = result.get(key, 0) - value
            if not INT64_MIN <= new <= INT64_MAX:
                raise EmulatorError(
                    10004,
                    f"GroupCounter[{i}]: {mode} {value} on {key!r} overflows a signed "
                    "64-bit integer",
                )
            result[key] = new
        if len(result) > COUNTER_MAX_KEYS:
            raise EmulatorError(
                10063,
                f"group {group_id!r} would hold {len(result)} counters; "
                f"at most {COUNTER_MAX_KEYS} per group",
            )
        group.counters = result
        out: dict[str, int] = {}
        for key, _ in items:
            out[key] = result[key]
        return list(out.items())

    def delete_group_counters(self, group_id: str, keys: Sequence[str] | None = None) -> None:
        group = self._counter_group(group_id)
        if keys is None:
            group.counters = {}
            return
        _check_counter_keys(keys, "GroupCounterKeys")
        for key in keys:
            group.counters.pop(key, None)


def _check_counter_keys(keys: Iterable[str], field: str, key_field: str = "") -> None:
    keys = list(keys)
    if len(keys) > COUNTER_MAX_KEYS:
        raise EmulatorError(
            10063, f"{field} holds {len(keys)} keys; at most {COUNTER_MAX_KEYS} per call"
        )
    suffix = f".{key_field}" if key_field else ""
    for i, key in enumerate(keys):
        if not key:
            raise EmulatorError(10004, f"{field}[{i}]{suffix} must not be empty")
        klen = nbytes(key)
        if klen > COUNTER_KEY_MAX_BYTES:
            raise EmulatorError(
                10004, f"{field}[{i}]{suffix} is {klen} bytes; at most {COUNTER_KEY_MAX_BYTES}"
            )
