"""Group custom attributes: read on ``group_open_attr_http_svc``, writes on
``group_open_http_svc``.

Limits (checked before sending): key at most 32 bytes, value at most 4000 bytes, all values of
one write together at most 16000 bytes (UTF-8), at most 16 keys. The server also allows at most
16 keys and 16000 bytes per group, and at most 5 writes per second per group (10049, retried as
a rate limit). Wire names are lower-case ``key`` / ``value`` here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from tim_async import _wire
from tim_async._validate import check_key_list, check_str, check_str_mapping
from tim_async.errors import TimValidationError

if TYPE_CHECKING:
    from tim_async.caller import Caller

__all__ = ["GroupAttr"]

API_GET: Final = "group_open_attr_http_svc/get_group_attr"
API_MODIFY: Final = "group_open_http_svc/modify_group_attr"
API_SET: Final = "group_open_http_svc/set_group_attr"
API_DELETE: Final = "group_open_http_svc/delete_group_attr"
API_CLEAR: Final = "group_open_http_svc/clear_group_attr"

MAX_ATTRS: Final = 16
KEY_MAX_BYTES: Final = 32
VALUE_MAX_BYTES: Final = 4000
TOTAL_MAX_BYTES: Final = 16000


@attrs.frozen
class _Attr:
    key: str = attrs.field(metadata=_wire.wire_field("key"))
    value: str = attrs.field(metadata=_wire.wire_field("value"))


@attrs.frozen
class _AttrKey:
    key: str = attrs.field(metadata=_wire.wire_field("key"))


@attrs.frozen(kw_only=True)
class _GroupRequest:
    group_id: str


@attrs.frozen(kw_only=True)
class _AttrWriteRequest:
    group_id: str
    group_attr: tuple[_Attr, ...]


@attrs.frozen(kw_only=True)
class _AttrDeleteRequest:
    group_id: str
    group_attr: tuple[_AttrKey, ...]


@attrs.frozen
class _GetAnswer:
    #: Absent means no attributes.
    group_attr_ary: tuple[_Attr, ...] = ()


def _attrs(attrs_: Any, *, min_items: int) -> tuple[_Attr, ...]:
    pairs = check_str_mapping(
        "attrs",
        attrs_,
        max_items=MAX_ATTRS,
        key_max_bytes=KEY_MAX_BYTES,
        value_max_bytes=VALUE_MAX_BYTES,
        total_max_bytes=TOTAL_MAX_BYTES,
        per="per write",
        noun="attribute",
        min_items=min_items,
    )
    return tuple(_Attr(key, value) for key, value in pairs)


class GroupAttr:
    """Group custom attribute commands: ``tim.group_attr``."""

    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def get_group_attr(self, group_id: str) -> dict[str, str]:
        """All custom attributes of a group as ``{key: value}``.

        Raises :class:`~tim_async.errors.TimNotFoundError` (10010, 10015) for a missing group,
        :class:`~tim_async.errors.TimPermissionError` (10007) for a group type without
        attributes."""
        group = check_str("group_id", group_id)
        answer = await self._caller.call(API_GET, _wire.unstructure(_GroupRequest(group_id=group)))
        decoded = _wire.structure(answer, _GetAnswer, api=API_GET)
        return {attr.key: attr.value for attr in decoded.group_attr_ary}

    async def modify_group_attr(self, group_id: str, attrs: Mapping[str, str]) -> None:
        """Add or overwrite the given attributes; other attributes are kept.

        ``attrs``: 1 to 16 entries, key at most 32 bytes, value at most 4000 bytes, values
        together at most 16000 bytes (UTF-8)."""
        group = check_str("group_id", group_id)
        request = _AttrWriteRequest(group_id=group, group_attr=_attrs(attrs, min_items=1))
        await self._caller.call(API_MODIFY, _wire.unstructure(request))

    async def set_group_attr(self, group_id: str, attrs: Mapping[str, str]) -> None:
        """Replace all attributes of the group with ``attrs`` (1 to 16 entries, limits as
        :meth:`modify_group_attr`). An empty mapping is refused: the server rejects an empty
        ``GroupAttr``; use :meth:`clear_group_attr` to remove every attribute."""
        group = check_str("group_id", group_id)
        if isinstance(attrs, Mapping) and not attrs:
            raise TimValidationError(
                "attrs", "give at least one attribute (clear_group_attr removes them all)"
            )
        request = _AttrWriteRequest(group_id=group, group_attr=_attrs(attrs, min_items=1))
        await self._caller.call(API_SET, _wire.unstructure(request))

    async def delete_group_attr(self, group_id: str, keys: Iterable[str]) -> None:
        """Delete the given attribute keys (1 to 16 unique keys, each at most 32 bytes).

        Deleting a key that does not exist raises
        :class:`~tim_async.errors.TimNotFoundError` (10050)."""
        group = check_str("group_id", group_id)
        checked = check_key_list(
            "keys", keys, max_items=MAX_ATTRS, key_max_bytes=KEY_MAX_BYTES, per="per write"
        )
        request = _AttrDeleteRequest(
            group_id=group, group_attr=tuple(_AttrKey(key) for key in checked)
        )
        await self._caller.call(API_DELETE, _wire.unstructure(request))

    async def clear_group_attr(self, group_id: str) -> None:
        """Remove every attribute of the group (not supported for Community groups)."""
        group = check_str("group_id", group_id)
        await self._caller.call(API_CLEAR, _wire.unstructure(_GroupRequest(group_id=group)))
