"""Group counters (``group_open_http_svc``): signed 64-bit integers per group.

Limits (checked before sending): at most 20 counters per call, key at most 128 bytes, value a
signed 64-bit integer. Increase/Decrease on a missing key first create it at 0. Not supported for
Community groups; needs a paid edition (10059).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from tim_async import _wire
from tim_async._validate import INT64_MAX, INT64_MIN, check_int_mapping, check_key_list, check_str
from tim_async.errors import TimTypeError, TimValidationError
from tim_async.models import CounterMode

if TYPE_CHECKING:
    from tim_async.caller import Caller

__all__ = ["GroupCounter"]

API_GET: Final = "group_open_http_svc/get_group_counter"
API_UPDATE: Final = "group_open_http_svc/update_group_counter"
API_DELETE: Final = "group_open_http_svc/delete_group_counter"

MAX_COUNTERS: Final = 20
KEY_MAX_BYTES: Final = 128


@attrs.frozen
class _Counter:
    key: str
    value: int


@attrs.frozen(kw_only=True)
class _KeysRequest:
    group_id: str
    group_counter_keys: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class _UpdateRequest:
    group_id: str
    group_counter: tuple[_Counter, ...]
    mode: str


@attrs.frozen
class _CountersAnswer:
    #: Absent means no counters.
    group_counter: tuple[_Counter, ...] = ()


def _mode(mode: Any) -> CounterMode:
    if isinstance(mode, CounterMode):
        return mode
    if isinstance(mode, str):
        for member in CounterMode:
            if mode.lower() == member.value.lower():
                return member
        raise TimValidationError("mode", f"expected 'Set', 'Increase' or 'Decrease', got {mode!r}")
    raise TimTypeError("mode", f"expected CounterMode or str, got {type(mode).__name__}")


def _keys(keys: Any) -> tuple[str, ...] | None:
    if keys is None:
        return None
    return check_key_list(
        "keys", keys, max_items=MAX_COUNTERS, key_max_bytes=KEY_MAX_BYTES, per="per call"
    )


class GroupCounter:
    """Group counter commands: ``tim.group_counter``."""

    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def get_group_counter(
        self, group_id: str, keys: Iterable[str] | None = None
    ) -> dict[str, int]:
        """The group's counters as ``{key: value}``: all of them when ``keys`` is ``None``,
        else the given keys (1 to 20 unique keys, each at most 128 bytes)."""
        group = check_str("group_id", group_id)
        request = _KeysRequest(group_id=group, group_counter_keys=_keys(keys))
        answer = await self._caller.call(API_GET, _wire.unstructure(request))
        decoded = _wire.structure(answer, _CountersAnswer, api=API_GET)
        return {counter.key: counter.value for counter in decoded.group_counter}

    async def update_group_counter(
        self,
        group_id: str,
        counters: Mapping[str, int],
        *,
        mode: CounterMode | str = CounterMode.SET,
    ) -> dict[str, int]:
        """Set, increase or decrease counters; returns the updated counters' latest values.

        ``counters``: 1 to 20 entries, key at most 128 bytes, value a signed 64-bit int.
        ``mode``: a :class:`CounterMode` or its wire name ("Set", "Increase", "Decrease").
        Increase/Decrease are not idempotent: they are never resent once the request may have
        reached the server; an unknown outcome raises
        :class:`~tim_async.errors.TimOutcomeUnknownError`."""
        group = check_str("group_id", group_id)
        checked_mode = _mode(mode)
        pairs = check_int_mapping(
            "counters",
            counters,
            max_items=MAX_COUNTERS,
            key_max_bytes=KEY_MAX_BYTES,
            low=INT64_MIN,
            high=INT64_MAX,
            per="per call",
            noun="counter",
        )
        request = _UpdateRequest(
            group_id=group,
            group_counter=tuple(_Counter(key, value) for key, value in pairs),
            mode=checked_mode.value,
        )
        answer = await self._caller.call(
            API_UPDATE,
            _wire.unstructure(request),
            idempotent=checked_mode is CounterMode.SET,
        )
        decoded = _wire.structure(answer, _CountersAnswer, api=API_UPDATE)
        return {counter.key: counter.value for counter in decoded.group_counter}

    async def delete_group_counter(self, group_id: str, keys: Iterable[str] | None = None) -> None:
        """Delete the given counters (1 to 20 unique keys), or every counter of the group when
        ``keys`` is ``None``. An empty iterable is refused rather than read as "all"."""
        group = check_str("group_id", group_id)
        request = _KeysRequest(group_id=group, group_counter_keys=_keys(keys))
        await self._caller.call(API_DELETE, _wire.unstructure(request))
