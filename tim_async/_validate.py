"""Input checks shared by the endpoint modules.

Each check raises :class:`~tim_async.errors.TimTypeError` (wrong type) or
:class:`~tim_async.errors.TimValidationError` (documented limit broken) naming the field and the
limit, before anything is sent. Sizes are UTF-8 bytes, as the server counts them. Every check
returns fresh values (tuples, lists) so the caller's objects are never kept or mutated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tim_async.errors import TimTypeError, TimValidationError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "UINT32_MAX",
    "UINT64_MAX",
    "check_int",
    "check_int_mapping",
    "check_key_list",
    "check_str",
    "check_str_mapping",
    "plain_json",
    "utf8_size",
]

UINT32_MAX: Final = 2**32 - 1
UINT64_MAX: Final = 2**64 - 1
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return type(value).__name__


def utf8_size(field: str, text: str) -> int:
    """Size of ``text`` in UTF-8 bytes; refuses strings that cannot be encoded (lone
    surrogates), which the server could not store either."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise TimValidationError(
            field, f"not encodable as UTF-8 (lone surrogate at index {exc.start})"
        ) from None


def check_str(field: str, value: Any, *, max_bytes: int | None = None, empty: bool = False) -> str:
    """A ``str``, non-empty unless ``empty``, encodable as UTF-8, at most ``max_bytes`` UTF-8
    bytes."""
    if not isinstance(value, str):
        raise TimTypeError(field, f"expected str, got {_type_name(value)}")
    if not value and not empty:
        raise TimValidationError(field, "must not be empty")
    if max_bytes is not None or not value.isascii():
        size = utf8_size(field, value)  # refuses lone surrogates, which JSON cannot carry
        if max_bytes is not None and size > max_bytes:
            raise TimValidationError(field, f"is {size} bytes, limit {max_bytes} bytes (UTF-8)")
    return value


def check_int(field: str, value: Any, *, low: int, high: int) -> int:
    """An ``int`` (``bool`` refused) in ``low..high``."""
    if type(value) is bool or not isinstance(value, int):
        raise TimTypeError(field, f"expected int, got {_type_name(value)}")
    if not low <= value <= high:
        raise TimValidationError(field, f"must be in {low}..{high}, got {value}")
    return int(value)


def _check_key(field: str, key: Any, *, max_bytes: int, what: str = "key") -> str:
    if not isinstance(key, str):
        raise TimTypeError(field, f"{what} must be str, got {_type_name(key)} {_show(key)}")
    if not key:
        raise TimValidationError(field, f"{what} must not be empty")
    size = utf8_size(field, key)
    if size > max_bytes:
        raise TimValidationError(
            field, f"{what} {_show(key)} is {size} bytes, limit {max_bytes} bytes (UTF-8)"
        )
    return key


def _check_count(field: str, count: int, *, max_items: int, noun: str, per: str) -> None:
    if count == 0:
        raise TimValidationError(field, f"give at least one {noun}")
    if count > max_items:
        raise TimValidationError(field, f"at most {max_items} {noun}s {per}, got {count}")


def check_key_list(
    field: str,
    keys: Any,
    *,
    max_items: int,
    key_max_bytes: int,
    per: str,
    noun: str = "key",
) -> tuple[str, ...]:
    """A non-empty iterable of unique, non-empty ``str`` keys (a bare ``str`` is refused; a
    mapping gives its keys)."""
    if isinstance(keys, str | bytes | bytearray) or not isinstance(keys, Iterable):
        raise TimTypeError(field, f"expected an iterable of str, got {_type_name(keys)}")
    result = tuple(keys)
    _check_count(field, len(result), max_items=max_items, noun=noun, per=per)
    seen: set[str] = set()
    for key in result:
        _check_key(field, key, max_bytes=key_max_bytes)
        _refuse_repeat(field, seen, key)
    return result


def _refuse_repeat(field: str, seen: set[str], key: str) -> None:
    """Refuse ``key`` if it is in ``seen`` (keys already taken), else add it."""
    if key in seen:
        raise TimValidationError(field, f"duplicate key {_show(key)}")
    seen.add(key)


def check_str_mapping(
    field: str,
    values: Any,
    *,
    max_items: int,
    key_max_bytes: int,
    value_max_bytes: int,
    per: str,
    total_max_bytes: int | None = None,
    noun: str = "pair",
    min_items: int = 1,
) -> list[tuple[str, str]]:
    """A mapping of non-empty ``str`` keys to ``str`` values within the byte limits."""
    if not isinstance(values, Mapping):
        raise TimTypeError(field, f"expected a mapping of str to str, got {_type_name(values)}")
    pairs = list(values.items())
    if len(pairs) < min_items or len(pairs) > max_items:
        _check_count(field, len(pairs), max_items=max_items, noun=noun, per=per)
    total = 0
    unique = type(values) is dict  # a dict cannot repeat a key; another Mapping might
    seen: set[str] = set()
    for key, value in pairs:
        _check_key(field, key, max_bytes=key_max_bytes)
        if not unique:
            _refuse_repeat(field, seen, key)
        item_field = f"{field}[{_show(key)}]"
        if not isinstance(value, str):
            raise TimTypeError(item_field, f"value must be str, got {_type_name(value)}")
        size = utf8_size(item_field, value)
        if size > value_max_bytes:
            raise TimValidationError(
                item_field, f"value is {size} bytes, limit {value_max_bytes} bytes (UTF-8)"
            )
        total += size
    if total_max_bytes is not None and total > total_max_bytes:
        raise TimValidationError(
            field,
            f"values total {total} bytes, limit {total_max_bytes} bytes (UTF-8) {per}",
        )
    return pairs


def check_int_mapping(
    field: str,
    values: Any,
    *,
    max_items: int,
    key_max_bytes: int,
    low: int,
    high: int,
    per: str,
    noun: str,
) -> list[tuple[str, int]]:
    """A non-empty mapping of non-empty ``str`` keys to ``int`` values (``bool`` refused) in
    ``low..high``."""
    if not isinstance(values, Mapping):
        raise TimTypeError(field, f"expected a mapping of str to int, got {_type_name(values)}")
    pairs = list(values.items())
    _check_count(field, len(pairs), max_items=max_items, noun=noun, per=per)
    result = []
    unique = type(values) is dict  # a dict cannot repeat a key; another Mapping might
    seen: set[str] = set()
    for key, value in pairs:
        _check_key(field, key, max_bytes=key_max_bytes)
        if not unique:
            _refuse_repeat(field, seen, key)
        item_field = f"{field}[{_show(key)}]"
        if type(value) is bool or not isinstance(value, int):
            raise TimTypeError(item_field, f"value must be int, got {_type_name(value)}")
        if not low <= value <= high:
            raise TimValidationError(
                item_field, f"value {value} is outside the signed 64-bit range {low}..{high}"
            )
        result.append((key, int(value)))
    return result


def plain_json(body: Any, field: str = "body") -> dict[str, Any]:
    """``body`` (any mapping; ``None`` is ``{}``) as plain dicts and lists that orjson can
    serialise: nested mappings become dicts, tuples lists. Refuses NaN and infinity (JSON has
    no such numbers; orjson would send ``null``) and a mapping that repeats a key."""
    if body is None:
        return {}
    if type(body) is dict and _SCALARS.issuperset(map(type, body.values())):
        return dict(body)  # the usual body: a dict of plain scalars (keys unique already)
    if not isinstance(body, Mapping):
        raise TimTypeError(field, f"must be a mapping, got {_type_name(body)}")
    result = _plain(body, field, field)
    assert isinstance(result, dict)
    return result


#: Types whose values ``_plain`` returns unchanged (exact types: a subclass takes the long way).
_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _plain(value: Any, field: str, path: str) -> Any:
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TimValidationError(
                field, f"{path} is {value!r}: NaN and infinity cannot be sent as JSON"
            )
        return value
    if isinstance(value, Mapping):
        pairs = list(value.items())
        # Plain scalars as they are; the path (a repr per key) only for what may need it.
        out = {
            k: v if type(v) in _SCALARS else _plain(v, field, f"{path}[{_show(k)}]")
            for k, v in pairs
        }
        if len(out) != len(pairs):
            raise TimValidationError(field, f"the mapping at {path} repeats a key")
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, field, f"{path}[{i}]") for i, v in enumerate(value)]
    return value  # anything else: orjson serialises it or the session refuses it
