"""Bulk pulls: the extensions of many messages, concurrently, as results complete.

:meth:`MsgExt.pull_many <tim_async.endpoints.msg_ext.MsgExt.pull_many>` is the public entry; this
module holds its models and its engine.

How a run is organised:

* One *feeder* reads the targets (any iterable or async iterable) lazily. Before it takes the
  next target it waits for a permit: at most ``2 x concurrency`` targets are held at any time
  (being pulled, waiting for a worker, or finished but not yet taken by the consumer), so a
  generator of ten million targets keeps memory flat.
* Each REST command has its own queue and its own ``concurrency`` workers (group messages use
  ``group_get_key_values``, one-to-one messages ``get_key_values``, each with its own 200/s
  budget). A worker waiting for one command's rate limit never holds up a target of the other
  command; the read-ahead lets the feeder reach targets of the other command while the first
  command's workers wait.
* Every finished target becomes one :class:`PullResult` in a queue the consumer reads, in
  completion order. A :class:`~tim_async.errors.TimError` ends only its target (``error`` is
  set); any other exception is a bug: the run stops and the exception reaches the consumer.
* The workers live in a task group owned by the consuming generator: ``break`` (once the
  generator is closed or collected), ``aclose()``, an exception, or a cancellation of the
  consumer cancels them and waits for them, so no task, connection or request is left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs

from tim_async._validate import UINT32_MAX, check_int, check_str
from tim_async.errors import TimError, TimTypeError
from tim_async.models import ExtensionList

if TYPE_CHECKING:
    from tim_async.caller import Caller
    from tim_async.endpoints.msg_ext import MsgExt

__all__ = ["C2CMessage", "GroupMessage", "PullResult", "PullStats", "Target", "pull_many"]

#: the default and the largest ``concurrency`` of :func:`pull_many`
DEFAULT_CONCURRENCY: Final = 64
MAX_CONCURRENCY: Final = 10_000

_GROUP_API: Final = "openim_msg_ext_http_svc/group_get_key_values"
_C2C_API: Final = "openim_msg_ext_http_svc/get_key_values"


def _group_id(instance: Any, attribute: Any, value: Any) -> None:
    check_str("group_id", value)


def _msg_seq(instance: Any, attribute: Any, value: Any) -> None:
    check_int("msg_seq", value, low=0, high=UINT32_MAX)


def _account(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_str(attribute.name, value)


@attrs.frozen
class GroupMessage:
    """A group message whose extensions to pull: its group and its ``MsgSeq`` (unsigned
    32-bit). Checked at construction: :class:`~tim_async.errors.TimTypeError` or
    :class:`~tim_async.errors.TimValidationError` naming the field."""

    group_id: str = attrs.field(validator=_group_id)
    msg_seq: int = attrs.field(validator=_msg_seq)


@attrs.frozen
class C2CMessage:
    """A one-to-one message whose extensions to pull: the recipient, its ``MsgKey`` and
    optionally the sender. Checked at construction like :class:`GroupMessage`."""

    to_account: str = attrs.field(validator=_account)
    msg_key: str = attrs.field(validator=_account)
    from_account: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_account)
    )


#: what :func:`pull_many` takes
Target: TypeAlias = GroupMessage | C2CMessage


def _is_target(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, GroupMessage | C2CMessage):
        raise TimTypeError(
            "target", f"expected GroupMessage or C2CMessage, got {type(value).__name__}"
        )


def _is_error(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, TimError):
        raise TimTypeError("error", f"expected a TimError or None, got {type(value).__name__}")


@attrs.frozen
class PullResult:
    """One finished target of :func:`pull_many`.

    ``extensions`` is the merged :class:`~tim_async.models.ExtensionList` (``None`` when the
    target failed); ``error`` the :class:`~tim_async.errors.TimError` that ended the target
    after its retries (``None`` on success); ``pages`` the pages walked (also for a target that
    failed part-way)."""

    target: Target = attrs.field(validator=_is_target)
    extensions: ExtensionList | None
    error: TimError | None = attrs.field(validator=_is_error)
    pages: int

    @property
    def ok(self) -> bool:
        """True when the target was pulled completely."""
        return self.error is None


@attrs.define(slots=True, eq=False)
class PullStats:
    """What a run of :func:`pull_many` has done so far: plain counters, updated in place as the
    run goes, cheap to read from another task (for a progress display).

    ``calls`` counts the answers received per REST command (one per page; retries are not
    counted here, see the client's ``stats``). ``started`` and ``finished`` are
    :func:`time.monotonic` readings (``finished`` is None while the run goes on)."""

    done: int = 0
    failed: int = 0
    pages: int = 0
    pairs: int = 0
    in_flight: int = 0
    calls: dict[str, int] = attrs.field(factory=dict)
    started: float | None = None
    finished: float | None = None

    @property
    def ok(self) -> int:
        """Targets pulled completely."""
        return self.done - self.failed

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished); 0 before it started."""
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else time.monotonic()
        return max(end - self.started, 0.0)


class _End:
    """Put in the result queue when every target is finished."""


class _Failure:
    """Put in the result queue when the run stopped on an exception that is not a TimError."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_STOP: Final = object()  # tells a worker that its queue is finished


class _Run:
    """The feeder, the per-command workers and their queues of one :func:`pull_many` run."""

    def __init__(
        self,
        ext: MsgExt,
        caller: Caller,
        targets: Iterable[Target] | AsyncIterable[Target],
        concurrency: int,
        start_seq: int,
        stats: PullStats,
    ) -> None:
        self._ext = ext
        self._caller = caller
        self._targets = targets
        self._concurrency = concurrency
        self._start_seq = start_seq
        self.stats = stats
        #: permits for held targets; the consumer gives one back per result it takes
        self.held = asyncio.Semaphore(2 * concurrency)
        self.results: asyncio.Queue[PullResult | _End | _Failure] = asyncio.Queue()
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._group: asyncio.TaskGroup | None = None

    async def main(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await self._feed()
                for queue in self._queues.values():
                    for _ in range(self._concurrency):
                        queue.put_nowait(_STOP)
        except BaseExceptionGroup as eg:
            # A worker's error, or the feeder's own (the targets' iterator): the task group
            # wraps an error of its body too.
            first = eg.exceptions[0] if len(eg.exceptions) == 1 else eg
            self.results.put_nowait(_Failure(first))
            return
        finally:
            self.stats.finished = time.monotonic()
        self.results.put_nowait(_End())

    async def _feed(self) -> None:
        targets = self._targets
        if isinstance(targets, AsyncIterable):
            iterator = aiter(targets)
            try:
                while True:
                    await self.held.acquire()
                    try:
                        target = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    self._dispatch(target)
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
        else:
            sync: Iterator[Target] = iter(targets)
            while True:
                await self.held.acquire()
                try:
                    target = next(sync)
                except StopIteration:
                    return
                self._dispatch(target)

    def _dispatch(self, target: Any) -> None:
        if isinstance(target, GroupMessage):
            api = _GROUP_API
        elif isinstance(target, C2CMessage):
            api = _C2C_API
        else:
            raise TimTypeError(
                "targets", f"expected GroupMessage or C2CMessage items, got {type(target).__name__}"
            )
        queue = self._queues.get(api)
        if queue is None:
            queue = self._queues[api] = asyncio.Queue()
            assert self._group is not None
            for _ in range(self._concurrency):
                self._group.create_task(self._work(api, queue))
        queue.put_nowait(target)

    async def _work(self, api: str, queue: asyncio.Queue[Any]) -> None:
        while True:
            target = await queue.get()
            if target is _STOP:
                return
            self.results.put_nowait(await self._pull(api, target))

    async def _pull(self, api: str, target: Target) -> PullResult:
        stats = self.stats
        calls = stats.calls
        calls.setdefault(api, 0)
        pages = 0

        def counted() -> None:
            nonlocal pages
            pages += 1
            stats.pages += 1
            calls[api] += 1

        stats.in_flight += 1
        try:
            with self._caller.operation():
                if isinstance(target, GroupMessage):
                    extensions = await self._ext._pull_group(
                        target.group_id, target.msg_seq, self._start_seq, counted
                    )
                else:
                    extensions = await self._ext._pull_c2c(
                        target.to_account,
                        target.msg_key,
                        target.from_account,
                        self._start_seq,
                        counted,
                    )
        except TimError as exc:
            stats.done += 1
            stats.failed += 1
            return PullResult(target, None, exc, pages)
        finally:
            stats.in_flight -= 1
        stats.done += 1
        stats.pairs += len(extensions)
        return PullResult(target, extensions, None, pages)


async def pull_many(
    ext: MsgExt,
    caller: Caller,
    targets: Iterable[Target] | AsyncIterable[Target],
    *,
    concurrency: int,
    start_seq: int,
    stats: PullStats | None,
) -> AsyncGenerator[PullResult, None]:
    """The engine of :meth:`MsgExt.pull_many` (arguments already checked there)."""
    stats = stats if stats is not None else PullStats()
    stats.started = time.monotonic()
    stats.finished = None
    run = _Run(ext, caller, targets, concurrency, start_seq, stats)
    main = asyncio.get_running_loop().create_task(run.main())
    try:
        while True:
            item = await run.results.get()
            if isinstance(item, PullResult):
                run.held.release()
                yield item
            elif isinstance(item, _End):
                return
            else:
                raise item.exc
    finally:
        if not main.done():
            main.cancel()
            # wait for every worker to end (their calls are cancelled and their connections
            # given back); a cancellation of this wait still leaves main cancelled.
            await asyncio.wait([main])


def check_options(targets: Any, *, concurrency: Any, start_seq: int, stats: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`pull_many`, checked (raises before anything runs)."""
    if not isinstance(targets, Iterable | AsyncIterable):
        raise TimTypeError(
            "targets", f"expected an iterable or async iterable, got {type(targets).__name__}"
        )
    check_int("concurrency", concurrency, low=1, high=MAX_CONCURRENCY)
    if stats is not None and not isinstance(stats, PullStats):
        raise TimTypeError("stats", f"expected PullStats or None, got {type(stats).__name__}")
    return {"concurrency": concurrency, "start_seq": start_seq, "stats": stats}
