"""Message extensions (``openim_msg_ext_http_svc``): custom key-value pairs on a message.

Limits (checked before sending): at most 20 pairs per set call, key at most 100 bytes, value at
most 1000 bytes (UTF-8); a message holds at most 300 pairs (checked by the server). Needs a paid
edition and the console switch (else :class:`~tim_async.errors.TimPremiumRequiredError`, 10008),
and a message sent with ``SupportMessageExtension: 1``.
"""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs

from tim_async import _wire
from tim_async._validate import (
    UINT32_MAX,
    UINT64_MAX,
    check_int,
    check_key_list,
    check_str,
    check_str_mapping,
    utf8_size,
)
from tim_async.endpoints import bulk as _bulk
from tim_async.endpoints.bulk import PullResult, PullStats, Target
from tim_async.errors import TimTypeError, TimValidationError
from tim_async.models import ExtensionItem, ExtensionList, ExtensionPage, SetKeyResult
from tim_async.paging import pull_key_values, walk_key_values

if TYPE_CHECKING:
    from tim_async.caller import Caller

__all__ = ["MsgExt", "Operation", "SetValues"]

SERVICE: Final = "openim_msg_ext_http_svc"
API_GROUP_GET: Final = f"{SERVICE}/group_get_key_values"
API_GET: Final = f"{SERVICE}/get_key_values"
API_GROUP_SET: Final = f"{SERVICE}/group_set_key_values"
API_SET: Final = f"{SERVICE}/set_key_values"

MAX_PAIRS_PER_SET: Final = 20
KEY_MAX_BYTES: Final = 100
VALUE_MAX_BYTES: Final = 1000

#: ``operation`` of the set commands: a name or the wire ``OperateType`` (1 set, 2 delete,
#: 3 clear).
Operation: TypeAlias = Literal["set", "delete", "clear", 1, 2, 3]
#: ``values`` of the set commands: ``{key: value}`` or :class:`ExtensionItem` objects for
#: "set"; keys, a mapping (its keys) or :class:`ExtensionItem` objects for "delete"; ``None``
#: for "clear".
SetValues: TypeAlias = Mapping[str, str] | Iterable[ExtensionItem] | Iterable[str] | None

_OPERATIONS: Final[Mapping[str, int]] = {"set": 1, "delete": 2, "clear": 3}
_OPERATION_NAMES: Final[Mapping[int, str]] = {1: "set", 2: "delete", 3: "clear"}


# --------------------------------------------------------------------------- wire models


@attrs.frozen(kw_only=True)
class _GroupGetRequest:
    group_id: str
    msg_seq: int
    start_seq: int = 0


@attrs.frozen(kw_only=True)
class _GetRequest:
    from_account: str | None = None
    to_account: str
    msg_key: str
    start_seq: int = 0


@attrs.frozen(kw_only=True)
class _GroupSetRequest:
    group_id: str
    msg_seq: int
    operate_type: int
    extension_list: tuple[ExtensionItem, ...] | None = None


@attrs.frozen(kw_only=True)
class _SetRequest:
    from_account: str | None = None
    to_account: str
    msg_key: str
    operate_type: int
    extension_list: tuple[ExtensionItem, ...] | None = None


@attrs.frozen
class _SetAnswer:
    #: Absent means no per-key results (e.g. after a clear).
    extension_list: tuple[SetKeyResult, ...] = ()


# --------------------------------------------------------------------------- input checks


def _group_target(group_id: Any, msg_seq: Any) -> tuple[str, int]:
    return check_str("group_id", group_id), check_int("msg_seq", msg_seq, low=0, high=UINT32_MAX)


def _c2c_target(to_account: Any, msg_key: Any, from_account: Any) -> tuple[str, str, str | None]:
    to = check_str("to_account", to_account)
    key = check_str("msg_key", msg_key)
    sender = None if from_account is None else check_str("from_account", from_account)
    return to, key, sender


def _start_seq(start_seq: Any) -> int:
    return check_int("start_seq", start_seq, low=0, high=UINT64_MAX)


def _operate_type(operation: Any) -> int:
    if isinstance(operation, str):
        code = _OPERATIONS.get(operation.lower())
        if code is None:
            raise TimValidationError(
                "operation", f"expected 'set', 'delete' or 'clear', got {operation!r}"
            )
        return code
    if type(operation) is bool or not isinstance(operation, int):
        raise TimTypeError(
            "operation", f"expected str or int OperateType, got {type(operation).__name__}"
        )
    if operation not in _OPERATION_NAMES:
        raise TimValidationError(
            "operation", f"OperateType must be 1 (set), 2 (delete) or 3 (clear), got {operation}"
        )
    return int(operation)


def _check_item(item: ExtensionItem, *, with_value: bool) -> ExtensionItem:
    field = f"values[{item.key!r}]" if isinstance(item.key, str) else "values"
    check_str("values", item.key, max_bytes=KEY_MAX_BYTES)
    check_int(f"{field}.seq", item.seq, low=0, high=UINT64_MAX)
    if not with_value:
        return ExtensionItem(item.key, "", item.seq)
    if not isinstance(item.value, str):
        raise TimTypeError(field, f"value must be str, got {type(item.value).__name__}")
    size = utf8_size(field, item.value)
    if size > VALUE_MAX_BYTES:
        raise TimValidationError(
            field, f"value is {size} bytes, limit {VALUE_MAX_BYTES} bytes (UTF-8)"
        )
    return item


def _extension_items(values: Any, operate_type: int) -> tuple[ExtensionItem, ...] | None:
    """The request's ``ExtensionList`` for ``operate_type``, validated."""
    name = _OPERATION_NAMES[operate_type]
    per = f"per {name} call"
    if operate_type == 3:
        if values is None:
            return None
        if isinstance(values, str) or not isinstance(values, Iterable):
            raise TimTypeError("values", f"must be None for 'clear', got {type(values).__name__}")
        if any(True for _ in values):
            raise TimValidationError("values", "must be None (or empty) for 'clear'")
        return None
    if values is None:
        raise TimValidationError("values", f"required for '{name}'")
    if isinstance(values, Mapping):
        if operate_type == 1:
            pairs = check_str_mapping(
                "values",
                values,
                max_items=MAX_PAIRS_PER_SET,
                key_max_bytes=KEY_MAX_BYTES,
                value_max_bytes=VALUE_MAX_BYTES,
                per=per,
            )
            return tuple(ExtensionItem(key, value, 0) for key, value in pairs)
        keys = check_key_list(
            "values",
            values.keys(),
            max_items=MAX_PAIRS_PER_SET,
            key_max_bytes=KEY_MAX_BYTES,
            per=per,
        )
        return tuple(ExtensionItem(key, "", 0) for key in keys)
    if isinstance(values, str | bytes | bytearray) or not isinstance(values, Iterable):
        raise TimTypeError(
            "values",
            f"expected a mapping or an iterable of keys / ExtensionItem, "
            f"got {type(values).__name__}",
        )
    entries = tuple(values)
    if not entries:
        raise TimValidationError(
            "values", f"give at least one {'pair' if operate_type == 1 else 'key'}"
        )
    if all(isinstance(entry, ExtensionItem) for entry in entries):
        check_key_list(
            "values",
            [entry.key for entry in entries],
            max_items=MAX_PAIRS_PER_SET,
            key_max_bytes=KEY_MAX_BYTES,
            per=per,
            noun="pair",
        )
        return tuple(_check_item(entry, with_value=operate_type == 1) for entry in entries)
    if operate_type == 1:
        raise TimTypeError(
            "values", "for 'set' give a mapping of str to str or ExtensionItem objects"
        )
    keys = check_key_list(
        "values", entries, max_items=MAX_PAIRS_PER_SET, key_max_bytes=KEY_MAX_BYTES, per=per
    )
    return tuple(ExtensionItem(key, "", 0) for key in keys)


def _body_maker(request: _GroupGetRequest | _GetRequest) -> Callable[[int], dict[str, Any]]:
    """``make_body(cursor)`` for :func:`walk_key_values`: a fresh wire body of ``request`` with
    ``start_seq=cursor``. The body of the usual first page (cursor 0, ``StartSeq`` left out)
    is encoded once and copied."""
    first = _wire.unstructure(request)  # start_seq is 0 here

    def make_body(cursor: int) -> dict[str, Any]:
        if cursor == 0:
            return dict(first)
        return _wire.unstructure(attrs.evolve(request, start_seq=cursor))

    return make_body


def _group_pull(
    group_id: str, msg_seq: int, start_seq: int
) -> tuple[Callable[[int], dict[str, Any]], int]:
    """The checked arguments of a group message pull as the walk's ``(make_body, start_seq)``."""
    group, seq = _group_target(group_id, msg_seq)
    first = _start_seq(start_seq)
    return _body_maker(_GroupGetRequest(group_id=group, msg_seq=seq)), first


def _c2c_pull(
    to_account: str, msg_key: str, from_account: str | None, start_seq: int
) -> tuple[Callable[[int], dict[str, Any]], int]:
    """The checked arguments of a one-to-one message pull, as :func:`_group_pull`."""
    to, key, sender = _c2c_target(to_account, msg_key, from_account)
    first = _start_seq(start_seq)
    return _body_maker(_GetRequest(from_account=sender, to_account=to, msg_key=key)), first


# --------------------------------------------------------------------------- namespace


class MsgExt:
    """Message extension commands: ``tim.msg_ext``."""

    __slots__ = ("_caller",)

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    # ---------------------------------------------------------------- group messages

    async def group_get_key_values(
        self, group_id: str, msg_seq: int, *, start_seq: int = 0
    ) -> ExtensionList:
        """All extension pairs of a group message, every page read and merged.

        ``msg_seq`` is the message's ``MsgSeq`` (unsigned 32-bit). ``start_seq`` (inclusive)
        reads only pairs with ``seq >= start_seq``. The result has unique keys, sorted by
        ``seq``, with cleared pairs (``seq <= clear_seq``) dropped.

        The client's ``timeout`` bounds the whole pull, every page and retry included.
        Raises :class:`~tim_async.errors.TimPagingError` when the server cannot page past a
        group of pairs sharing one ``seq``; :class:`~tim_async.errors.TimNotFoundError` (23004)
        when the message does not exist."""
        with self._caller.operation():
            return await self._pull_group(group_id, msg_seq, start_seq)

    def _pull_group(
        self, group_id: str, msg_seq: int, start_seq: int, on_page: Callable[[], None] | None = None
    ) -> Awaitable[ExtensionList]:
        """:meth:`group_get_key_values` without its ``operation()`` block (for ``pull_many``,
        which counts the pages with ``on_page``)."""
        make_body, first = _group_pull(group_id, msg_seq, start_seq)
        return pull_key_values(self._caller, API_GROUP_GET, make_body, first, on_page)

    def iter_group_key_values(
        self, group_id: str, msg_seq: int, *, start_seq: int = 0
    ) -> AsyncIterator[ExtensionPage]:
        """Pages of a group message's extension pairs, as an async iterator.

        Arguments are checked at once (before iterating). Each :class:`ExtensionPage` holds the
        pairs of one answer that are new to the walk; merge them with
        :meth:`ExtensionList.from_pages` (which applies the final ``clear_seq``). Breaking out
        early is safe: no connection is held between pages. Each call starts a new walk from
        ``start_seq``."""
        make_body, first = _group_pull(group_id, msg_seq, start_seq)
        return walk_key_values(self._caller, API_GROUP_GET, make_body, first)

    async def group_set_key_values(
        self,
        group_id: str,
        msg_seq: int,
        values: SetValues = None,
        *,
        operation: Operation | str | int = "set",
    ) -> list[SetKeyResult]:
        """Set, delete or clear extension pairs of a group message.

        * ``operation="set"`` (1): ``values`` is ``{key: value}`` (sent with ``Seq`` 0: admin
          writes are not version-checked) or :class:`ExtensionItem` objects (sent with their
          ``seq``, for version-checked writes).
        * ``"delete"`` (2): ``values`` is the keys to delete (an iterable of str, a mapping's
          keys, or :class:`ExtensionItem` objects).
        * ``"clear"`` (3): removes every pair; ``values`` must be ``None``.

        At most 20 pairs per call, keys unique, key at most 100 bytes, value at most 1000
        bytes (UTF-8). Returns the per-key results (:class:`SetKeyResult`; a key can fail alone,
        see ``error_code``)."""
        group, seq = _group_target(group_id, msg_seq)
        operate_type = _operate_type(operation)
        items = _extension_items(values, operate_type)
        request = _GroupSetRequest(
            group_id=group, msg_seq=seq, operate_type=operate_type, extension_list=items
        )
        return await self._set(API_GROUP_SET, request)

    # ---------------------------------------------------------------- one-to-one messages

    async def get_key_values(
        self,
        to_account: str,
        msg_key: str,
        *,
        from_account: str | None = None,
        start_seq: int = 0,
    ) -> ExtensionList:
        """All extension pairs of a one-to-one message, every page read and merged.

        ``msg_key`` is the message's ``MsgKey``; ``from_account`` (optional) is the sender.
        Otherwise as :meth:`group_get_key_values`."""
        with self._caller.operation():
            return await self._pull_c2c(to_account, msg_key, from_account, start_seq)

    def _pull_c2c(
        self,
        to_account: str,
        msg_key: str,
        from_account: str | None,
        start_seq: int,
        on_page: Callable[[], None] | None = None,
    ) -> Awaitable[ExtensionList]:
        """:meth:`get_key_values` without its ``operation()`` block (as :meth:`_pull_group`)."""
        make_body, first = _c2c_pull(to_account, msg_key, from_account, start_seq)
        return pull_key_values(self._caller, API_GET, make_body, first, on_page)

    def iter_key_values(
        self,
        to_account: str,
        msg_key: str,
        *,
        from_account: str | None = None,
        start_seq: int = 0,
    ) -> AsyncIterator[ExtensionPage]:
        """Pages of a one-to-one message's extension pairs, as an async iterator.

        As :meth:`iter_group_key_values`."""
        make_body, first = _c2c_pull(to_account, msg_key, from_account, start_seq)
        return walk_key_values(self._caller, API_GET, make_body, first)

    async def set_key_values(
        self,
        to_account: str,
        msg_key: str,
        values: SetValues = None,
        *,
        from_account: str | None = None,
        operation: Operation | str | int = "set",
    ) -> list[SetKeyResult]:
        """Set, delete or clear extension pairs of a one-to-one message.

        ``values`` and ``operation`` as in :meth:`group_set_key_values`; ``from_account``
        (optional) is the message's sender."""
        to, key, sender = _c2c_target(to_account, msg_key, from_account)
        operate_type = _operate_type(operation)
        items = _extension_items(values, operate_type)
        request = _SetRequest(
            from_account=sender,
            to_account=to,
            msg_key=key,
            operate_type=operate_type,
            extension_list=items,
        )
        return await self._set(API_SET, request)

    # ---------------------------------------------------------------- many messages

    def pull_many(
        self,
        targets: Iterable[Target] | AsyncIterable[Target],
        *,
        concurrency: int = _bulk.DEFAULT_CONCURRENCY,
        start_seq: int = 0,
        stats: PullStats | None = None,
    ) -> AsyncGenerator[PullResult, None]:
        """Pull the extensions of many messages concurrently; yields a
        :class:`~tim_async.endpoints.bulk.PullResult` per target, in completion order.

        ``targets`` (:class:`GroupMessage` / :class:`C2CMessage`, any iterable or async
        iterable) is read lazily; ``concurrency`` targets per REST command are pulled at once.
        A target that fails with a TimError gives a result with ``error``; ``stats`` (a
        :class:`PullStats`) is updated as the run goes. See :mod:`tim_async.endpoints.bulk`."""
        return _bulk.pull_many(
            self,
            self._caller,
            targets,
            **_bulk.check_options(
                targets, concurrency=concurrency, start_seq=_start_seq(start_seq), stats=stats
            ),
        )

    async def _set(self, api: str, request: _GroupSetRequest | _SetRequest) -> list[SetKeyResult]:
        answer = await self._caller.call(api, _wire.unstructure(request))
        return list(_wire.structure(answer, _SetAnswer, api=api).extension_list)
