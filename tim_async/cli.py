"""The ``tim-async`` command line (also ``python -m tim_async``).

Commands::

    tim-async demo                                   the whole SDK against the embedded emulator
    tim-async ext get --group G --msg-seq N          extensions of a group message (JSON)
    tim-async ext get --to A --msg-key K [--from B]  extensions of a one-to-one message (JSON)
    tim-async ext pull-bulk [TARGETS]                many targets, one JSON line per target
    tim-async attr get --group G                     group custom attributes (JSON)
    tim-async counter get --group G [KEY ...]        group counters (JSON)
    tim-async counter update --group G --mode M K=V  set / increase / decrease counters (JSON)

Connection settings come from flags or the environment (``TIM_SDKAPPID``, ``TIM_IDENTIFIER``,
``TIM_SECRET_KEY`` or ``TIM_USERSIG``, ``TIM_REGION``, ``TIM_BASE_URL``); a flag wins over its
variable. The secret key and the UserSig are never printed.

Exit codes: 0 success; 1 the server or the network failed (for ``pull-bulk``: at least one
target failed; for ``demo``: a check failed); 2 bad input (flags, credentials, an unreadable or
malformed targets file); 130 interrupted (Ctrl-C).

``ext pull-bulk`` and malformed lines: a targets *file* (a regular file, named or redirected to
stdin) is checked completely before the first call, so a malformed line stops the run with
exit 2 and nothing is pulled. A *stream* (a pipe or a terminal) cannot be checked ahead without
holding it in memory: the run stops reading at the malformed line, the targets before it are
finished and written, and the exit code is 2. Either way stderr names the line number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import os
import random
import re
import shutil
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TextIO

import orjson

from tim_async._validate import INT64_MAX, INT64_MIN, UINT32_MAX
from tim_async.errors import (
    TimAPIError,
    TimConfigError,
    TimError,
    TimTransportError,
    TimTypeError,
    TimValidationError,
)
from tim_async.models import CounterMode, ExtensionList, ExtensionPage
from tim_async.regions import Region

if TYPE_CHECKING:
    from tim_async.client import TimClient
    from tim_async.testing import FakeTimServer

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BulkCounters",
    "C2CTarget",
    "GroupTarget",
    "MalformedTargetError",
    "UsageError",
    "build_parser",
    "main",
    "parse_target_line",
    "pull_bulk",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

PROG: Final = "tim-async"
#: longest accepted line of a targets file (a longer one is malformed; memory stays bounded)
MAX_LINE_BYTES: Final = 64 * 1024
DEFAULT_CONCURRENCY: Final = 64
MAX_CONCURRENCY: Final = 10_000
#: most HTTP connections a bulk pull opens (well below the usual limit of 1024 open files)
MAX_CONNECTIONS: Final = 256
DEFAULT_RATE_LIMIT: Final = 200

ENV_SDKAPPID: Final = "TIM_SDKAPPID"
ENV_IDENTIFIER: Final = "TIM_IDENTIFIER"
ENV_SECRET_KEY: Final = "TIM_SECRET_KEY"
ENV_USERSIG: Final = "TIM_USERSIG"
ENV_REGION: Final = "TIM_REGION"
ENV_BASE_URL: Final = "TIM_BASE_URL"


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr, exit code 2."""


class MalformedTargetError(UsageError):
    """A line of a targets file that is not a target; names the source and the line number."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source} line {line}: {problem}")


# =========================================================================== targets


@dataclasses.dataclass(frozen=True, slots=True)
class GroupTarget:
    """A group message: ``group`` and its ``msg_seq``; ``line`` is its input line (0: none)."""

    group: str
    msg_seq: int
    line: int = 0

    def describe(self) -> dict[str, Any]:
        """The target's fields as they appear in an output line."""
        out: dict[str, Any] = {"group": self.group, "msg_seq": self.msg_seq}
        if self.line:
            out["line"] = self.line
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class C2CTarget:
    """A one-to-one message: the recipient ``to``, its ``msg_key`` and optionally the sender."""

    to: str
    msg_key: str
    from_account: str | None = None
    line: int = 0

    def describe(self) -> dict[str, Any]:
        """The target's fields as they appear in an output line."""
        out: dict[str, Any] = {"to": self.to, "msg_key": self.msg_key}
        if self.from_account is not None:
            out["from"] = self.from_account
        if self.line:
            out["line"] = self.line
        return out


Target = GroupTarget | C2CTarget

#: what :func:`parse_target_line` returns for a line that holds no target
SKIP: Final = None
_HEADER_NAMES: Final = frozenset(
    {"group", "group_id", "msg_seq", "to", "to_account", "msg_key", "from", "from_account"}
)
_NUMBER_RE: Final = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
_FORMATS: Final = "a JSON object or a CSV row 'group,msg_seq' or 'to,msg_key[,from]'"


def _show(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _msg_seq(value: Any, source: str, line: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if type(value) is not int or not 0 <= value <= UINT32_MAX:
        raise MalformedTargetError(
            source, line, f"msg_seq must be an integer in 0..{UINT32_MAX}, got {_show(str(value))}"
        )
    return value


def _name(obj: Mapping[str, Any], key: str, source: str, line: int, *, optional: bool) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        got = "nothing" if value is None else _clip(orjson.dumps(value).decode())
        raise MalformedTargetError(source, line, f"{key!r} must be a non-empty string, got {got}")
    return value


def _json_target(text: str, source: str, line: int) -> Target:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedTargetError(source, line, f"invalid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MalformedTargetError(source, line, "a JSON target must be an object")
    if "group" in obj and "to" in obj:
        raise MalformedTargetError(source, line, "give either 'group' or 'to', not both")
    if "group" in obj:
        if "msg_seq" not in obj:
            raise MalformedTargetError(source, line, "a group target needs 'msg_seq'")
        group = _name(obj, "group", source, line, optional=False)
        return GroupTarget(group, _msg_seq(obj["msg_seq"], source, line), line)
    if "to" in obj:
        to = _name(obj, "to", source, line, optional=False)
        key = _name(obj, "msg_key", source, line, optional=False)
        sender = _name(obj, "from", source, line, optional=True)
        return C2CTarget(to, key, sender, line)
    raise MalformedTargetError(
        source, line, "a JSON target needs 'group' and 'msg_seq', or 'to' and 'msg_key'"
    )


def _csv_target(text: str, source: str, line: int, *, header_allowed: bool) -> Target | None:
    try:
        fields = [f.strip() for f in next(csv.reader([text], strict=True))]
    except (csv.Error, StopIteration) as exc:
        raise MalformedTargetError(source, line, f"invalid CSV ({exc})") from None
    lowered = [f.lower() for f in fields]
    if lowered[0] in _HEADER_NAMES and all(f in _HEADER_NAMES for f in lowered):
        if header_allowed:
            return SKIP
        raise MalformedTargetError(source, line, "a header row is only allowed as the first line")
    if len(fields) not in (2, 3):
        raise MalformedTargetError(
            source, line, f"expected {_FORMATS}; got {len(fields)} field(s): {_show(text)}"
        )
    first, second = fields[0], fields[1]
    if not first or not second:
        raise MalformedTargetError(source, line, f"empty field in {_show(text)}")
    if len(fields) == 2 and _NUMBER_RE.fullmatch(second):
        return GroupTarget(first, _msg_seq(second, source, line), line)
    sender = fields[2] if len(fields) == 3 and fields[2] else None
    return C2CTarget(first, second, sender, line)


def parse_target_line(
    raw: bytes | str, line: int, *, source: str = "input", header_allowed: bool = False
) -> Target | None:
    """Parse one line of a targets file; ``None`` for a line without a target (blank, a
    ``#`` comment, or a CSV header when ``header_allowed``).

    A line is a JSON object (``{"group": "G", "msg_seq": 5}`` or ``{"to": "A", "msg_key": "K",
    "from": "B"}``; other keys are ignored, so error lines of an earlier run can be fed back) or
    a CSV row: two fields whose second is a number are ``group,msg_seq``, otherwise the row is
    ``to,msg_key[,from]``. Raises :class:`MalformedTargetError` naming ``source`` and ``line``.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedTargetError(source, line, "not valid UTF-8") from None
    else:
        text = raw
    text = text.lstrip("\ufeff").strip()
    if not text or text.startswith("#"):
        return SKIP
    if text.startswith("{"):
        return _json_target(text, source, line)
    if text.startswith("["):
        raise MalformedTargetError(source, line, "a JSON target must be an object")
    return _csv_target(text, source, line, header_allowed=header_allowed)


class TargetSource:
    """Reads targets lazily, one line at a time, from a file or a stream (never all at once).

    A regular file is read with plain reads; a pipe or terminal through an asyncio pipe reader,
    so waiting for input never blocks the calls in flight. After a malformed line, ``error``
    holds it and :meth:`next` returns ``None`` (the run stops taking targets).
    """

    def __init__(self, name: str, stream: BinaryIO, *, shared_fd: int | None = None) -> None:
        self.name = name
        self._stream = stream
        # stdin is read through a duplicate descriptor; the original shares its file status
        # flags, so the blocking mode set for the pipe reader is restored on it at the end.
        self._shared_fd = shared_fd
        self.regular = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
        self.total: int | None = None
        self.error: MalformedTargetError | None = None
        self.read_error: UsageError | None = None
        self._line = 0
        self._seen_content = False
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._stopped = False

    @classmethod
    def open(cls, path: str | None) -> TargetSource:
        """Open ``path`` (``None`` or ``"-"``: stdin); :class:`UsageError` when unreadable."""
        if path is None or path == "-":
            try:
                stdin_fd = sys.stdin.fileno()
                fd = os.dup(stdin_fd)
            except (OSError, ValueError, AttributeError):
                raise UsageError("cannot read targets from stdin: it is closed") from None
            return cls("stdin", os.fdopen(fd, "rb"), shared_fd=stdin_fd)
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by aclose()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(os.fstat(stream.fileno()).st_mode):
            stream.close()
            raise UsageError(f"cannot read {path}: it is a directory")
        return cls(path, stream)

    def validate(self) -> int:
        """Check every line of a regular file before any call (streaming: constant memory);
        set and return ``total``. Raises :class:`MalformedTargetError` or :class:`UsageError`."""
        if not self.regular:
            raise RuntimeError("only a regular file can be validated ahead")
        stream = self._stream
        start = stream.tell()
        count = 0
        header_allowed = True
        try:
            for number, raw in enumerate(self._lines_sync(), start=1):
                target = parse_target_line(
                    raw, number, source=self.name, header_allowed=header_allowed
                )
                if raw.strip() and not raw.lstrip().startswith(b"#"):
                    header_allowed = False
                if target is not None:
                    count += 1
        except OSError as exc:
            raise UsageError(f"cannot read {self.name}: {exc.strerror or exc}") from None
        stream.seek(start)
        self.total = count
        return count

    def _lines_sync(self) -> Iterator[bytes]:
        number = 0
        while True:
            raw = self._stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise MalformedTargetError(
                    self.name, number, f"line is longer than {MAX_LINE_BYTES} bytes"
                )
            yield raw

    async def _readline(self) -> bytes:
        if self.regular:
            raw = self._stream.readline(MAX_LINE_BYTES + 1)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise ValueError("line too long")
            return raw
        if self._reader is None:
            loop = asyncio.get_running_loop()
            self._reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
            protocol = asyncio.StreamReaderProtocol(self._reader)
            transport, _ = await loop.connect_read_pipe(lambda: protocol, self._stream)
            self._transport = transport
        return await self._reader.readline()

    def stop(self) -> None:
        """Take no more targets (the run finishes what is in flight)."""
        self._stopped = True

    async def next(self) -> Target | None:
        """The next target, or ``None`` at the end of the input, after :meth:`stop`, or after
        a malformed line (then ``error`` is set). Callers must not call it concurrently."""
        while not self._stopped:
            number = self._line + 1
            try:
                raw = await self._readline()
            except ValueError:
                self.error = MalformedTargetError(
                    self.name, number, f"line is longer than {MAX_LINE_BYTES} bytes"
                )
                break
            except OSError as exc:
                self.read_error = UsageError(f"cannot read {self.name}: {exc.strerror or exc}")
                break
            if not raw:
                break
            self._line = number
            try:
                target = parse_target_line(
                    raw, number, source=self.name, header_allowed=not self._seen_content
                )
            except MalformedTargetError as exc:
                self.error = exc
                break
            stripped = raw.strip()
            if stripped and not stripped.startswith(b"#"):
                self._seen_content = True
            if target is not None:
                return target
        self._stopped = True
        return None

    async def aclose(self) -> None:
        """Close the input (and restore blocking mode on a shared stdin descriptor)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()  # closes the stream too
            await asyncio.sleep(0)
            if self._shared_fd is not None:
                with contextlib.suppress(OSError):
                    os.set_blocking(self._shared_fd, True)
        with contextlib.suppress(OSError):
            self._stream.close()


# =========================================================================== progress


@dataclasses.dataclass
class BulkCounters:
    """What a bulk pull has done so far (read by the progress line and the summaries)."""

    done: int = 0
    ok: int = 0
    failed: int = 0
    #: pages read so far (answers received, failed targets' partial walks included)
    pages: int = 0
    items: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return max(end - self.started, 1e-9)


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A one-line progress display (done/total, bar, calls/s, ETA) redrawn a few times a second
    on a terminal. Disabled (nothing is written) when ``stream`` is not a terminal.

    ``calls`` returns the answers received so far; the rate shown is over the last 3 s."""

    def __init__(
        self,
        stream: TextIO,
        counters: BulkCounters,
        *,
        total: int | None,
        calls: Callable[[], int],
        label: str = "pulled",
        limit: int | None = None,
        enabled: bool | None = None,
        interval: float = 0.2,
    ) -> None:
        self._stream = stream
        self._counters = counters
        self.total = total
        self._calls = calls
        self._label = label
        self._limit = limit
        self._interval = interval
        self.enabled = _isatty(stream) if enabled is None else enabled
        self._task: asyncio.Task[None] | None = None
        self._samples: list[tuple[float, int]] = []
        self._drawn = False

    def render(self, width: int) -> str:
        """The progress line, at most ``width - 1`` columns: ``[bar] done/total pct
        rate/limit calls/s ETA``; the bar shrinks (or goes) on a narrow terminal."""
        c = self._counters
        now = time.monotonic()
        calls = self._calls()
        self._samples.append((now, calls))
        while len(self._samples) > 2 and now - self._samples[0][0] > 3.0:
            self._samples.pop(0)
        t0, calls0 = self._samples[0]
        rate = (calls - calls0) / (now - t0) if now - t0 > 0.05 else 0.0
        limit = f"/{self._limit}" if self._limit else ""
        parts: list[str] = []
        if self.total:
            fraction = min(c.done / self.total, 1.0)
            parts.append(f"{c.done:,}/{self.total:,} {fraction:4.0%}")
        else:
            parts.append(f"{self._label} {c.done:,}")
        parts.append(f"{rate:.1f}{limit} calls/s")
        if self.total and c.done:
            per_target = c.elapsed / c.done
            parts.append(f"ETA {_clock((self.total - c.done) * per_target)}")
        if c.failed:
            parts.append(f"failed {c.failed:,}")
        text = "  ".join(parts)
        room = width - 1 - len(text) - 3
        if self.total and room >= 6:
            bar_width = min(24, room)
            filled = int(min(c.done / self.total, 1.0) * bar_width)
            text = "[" + "#" * filled + "." * (bar_width - filled) + "] " + text
        return text[: max(width - 1, 10)]

    def draw(self) -> None:
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        with contextlib.suppress(OSError, ValueError):
            self._stream.write("\r\x1b[K" + self.render(width))
            self._stream.flush()
            self._drawn = True

    async def _run(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop redrawing and erase the line."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.clear()

    def clear(self) -> None:
        if self._drawn:
            with contextlib.suppress(OSError, ValueError):
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            self._drawn = False


# =========================================================================== bulk engine

#: called for each finished target with its list (and the pages walked) or its error
ResultSink = Callable[[Target, ExtensionList | None, int, BaseException | None], None]


async def pull_one(
    tim: TimClient, target: Target, on_page: Callable[[], None] | None = None
) -> tuple[ExtensionList, int]:
    """Pull every page of one target's extensions; return the merged list and the page count.
    ``on_page`` is called as each page arrives (live progress)."""
    if isinstance(target, GroupTarget):
        pages_iter = tim.msg_ext.iter_group_key_values(target.group, target.msg_seq)
    else:
        pages_iter = tim.msg_ext.iter_key_values(
            target.to, target.msg_key, from_account=target.from_account
        )
    pages: list[ExtensionPage] = []
    async for page in pages_iter:
        pages.append(page)
        if on_page is not None:
            on_page()
    return ExtensionList.from_pages(pages), len(pages)


async def pull_bulk(
    tim: TimClient,
    next_target: Callable[[], Awaitable[Target | None]],
    sink: ResultSink,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    counters: BulkCounters | None = None,
) -> BulkCounters:
    """Pull targets concurrently through ``concurrency`` workers.

    Workers take targets one at a time from ``next_target`` (which returns ``None`` when there
    are no more), so only ``concurrency`` targets are ever held; no task is created per target.
    The client's limiter keeps the rate. Each finished target goes to ``sink`` at once (in
    completion order); a failed target is passed with its exception and the run continues.
    """
    counters = counters if counters is not None else BulkCounters()
    take = asyncio.Lock()

    def page_done() -> None:
        counters.pages += 1

    async def worker() -> None:
        while True:
            async with take:
                target = await next_target()
            if target is None:
                return
            try:
                extensions, pages = await pull_one(tim, target, page_done)
            except Exception as exc:
                counters.done += 1
                counters.failed += 1
                sink(target, None, 0, exc)
                continue
            counters.done += 1
            counters.ok += 1
            counters.items += len(extensions)
            sink(target, extensions, pages, None)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    finally:
        counters.finished = time.monotonic()
    return counters


def extension_record(target: Target, extensions: ExtensionList) -> dict[str, Any]:
    """The JSON object written for a target pulled successfully."""
    record = target.describe()
    record["items"] = [{"key": i.key, "value": i.value, "seq": i.seq} for i in extensions.items]
    record["latest_seq"] = extensions.latest_seq
    record["clear_seq"] = extensions.clear_seq
    return record


def error_record(error: BaseException) -> dict[str, Any]:
    """``{"code", "type", "message"}`` for a failure (``code`` is the server's ErrorCode, or
    ``None`` when there was no usable answer)."""
    code = error.code if isinstance(error, TimAPIError) else None
    record: dict[str, Any] = {"code": code, "type": type(error).__name__, "message": str(error)}
    if isinstance(error, TimTransportError) and error.status is not None:
        record["http_status"] = error.status
    return record


# =========================================================================== configuration


def _rate_limit(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'none', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _counter_pair(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"value of {key!r} must be an integer, got {value!r}"
        ) from None
    if not INT64_MIN <= number <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"value of {key!r} must be a signed 64-bit integer")
    return key, number


def _mode(text: str) -> CounterMode:
    for member in CounterMode:
        if text.lower() == member.value.lower():
            return member
    raise argparse.ArgumentTypeError(f"expected Set, Increase or Decrease, got {text!r}")


def client_options(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``TimClient`` keyword arguments from flags, then the environment.

    Raises :class:`UsageError` for a missing or bad setting. The secret key and the UserSig
    are never part of a message."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def setting(attr: str, var: str) -> str | None:
        value = getattr(args, attr, None)
        if value is None:
            value = env.get(var) or None
        return value

    sdkappid_text = setting("sdkappid", ENV_SDKAPPID)
    sdkappid: int | None = None
    if sdkappid_text is None:
        problems.append(f"no SDKAppID: set {ENV_SDKAPPID} or pass --sdkappid")
    else:
        try:
            sdkappid = int(sdkappid_text.strip())
        except ValueError:
            problems.append(f"SDKAppID must be a positive integer, got {sdkappid_text!r}")
        else:
            if not 0 < sdkappid <= UINT32_MAX:
                problems.append(f"SDKAppID must be a positive 32-bit integer, got {sdkappid}")

    # Credentials: flags win over the environment as a pair, so a --usersig flag is not
    # mixed up with a TIM_SECRET_KEY left in the environment.
    flag_key = getattr(args, "secret_key", None)
    flag_sig = getattr(args, "usersig", None)
    if flag_key is not None or flag_sig is not None:
        secret_key, usersig, origin = flag_key, flag_sig, "--secret-key and --usersig"
    else:
        secret_key = env.get(ENV_SECRET_KEY) or None
        usersig = env.get(ENV_USERSIG) or None
        origin = f"{ENV_SECRET_KEY} and {ENV_USERSIG}"
    if secret_key is None and usersig is None:
        problems.append(
            f"no credentials: set {ENV_SECRET_KEY} (recommended) or {ENV_USERSIG}, "
            "or pass --secret-key / --usersig"
        )
    elif secret_key is not None and usersig is not None:
        problems.append(f"give only one of {origin}")
    elif secret_key is not None and not secret_key.strip():
        problems.append("the secret key is empty")

    identifier = setting("identifier", ENV_IDENTIFIER) or "administrator"
    region_text = setting("region", ENV_REGION)
    region: Region | None = None
    if region_text is not None:
        try:
            region = Region.parse(region_text)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
    base_url = setting("base_url", ENV_BASE_URL)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        problems.append(f"base URL must start with http:// or https://, got {base_url!r}")
    if problems:
        raise UsageError("; ".join(problems))

    options: dict[str, Any] = {
        "sdkappid": sdkappid,
        "identifier": identifier,
        "secret_key": secret_key,
        "usersig": usersig,
        "base_url": base_url,
        "rate_limit": getattr(args, "rate_limit", DEFAULT_RATE_LIMIT),
        "timeout": getattr(args, "timeout", 10.0),
        "max_retries": getattr(args, "max_retries", 3),
    }
    if region is not None:
        options["region"] = region
    return options


def new_client(options: Mapping[str, Any]) -> TimClient:
    """A :class:`TimClient` from :func:`client_options` (its errors become :class:`UsageError`)."""
    from tim_async.client import TimClient  # imported late: bad input exits without aiohttp

    try:
        return TimClient(**options)
    except TimConfigError as exc:
        raise UsageError(str(exc)) from None


def make_client(args: argparse.Namespace) -> TimClient:
    """A :class:`TimClient` configured from ``args`` and the environment."""
    return new_client(client_options(args))


# =========================================================================== output


def _write_json(obj: Any, stream: BinaryIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout.buffer
    out.write(orjson.dumps(obj) + b"\n")
    out.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _err(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()


def _target_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Target:
    group, to = args.group, args.to
    if (group is None) == (to is None):
        parser.error("give either --group with --msg-seq, or --to with --msg-key")
    if group is not None:
        if args.msg_seq is None:
            parser.error("--group needs --msg-seq")
        if args.msg_key is not None or args.from_account is not None:
            parser.error("--msg-key and --from go with --to, not with --group")
        return GroupTarget(group, args.msg_seq)
    if args.msg_key is None:
        parser.error("--to needs --msg-key")
    if args.msg_seq is not None:
        parser.error("--msg-seq goes with --group, not with --to")
    return C2CTarget(to, args.msg_key, args.from_account)


async def cmd_ext_get(args: argparse.Namespace) -> int:
    """``ext get``: one message's extensions as one JSON object."""
    target: Target = args.target
    async with make_client(args) as tim:
        extensions, _ = await pull_one(tim, target)
    _write_json(extension_record(target, extensions))
    return EXIT_OK


async def cmd_attr_get(args: argparse.Namespace) -> int:
    """``attr get``: a group's custom attributes."""
    async with make_client(args) as tim:
        attrs = await tim.group_attr.get_group_attr(args.group)
    _write_json({"group": args.group, "attrs": attrs})
    return EXIT_OK


async def cmd_counter_get(args: argparse.Namespace) -> int:
    """``counter get``: a group's counters (all, or the keys given)."""
    keys: list[str] | None = args.keys or None
    async with make_client(args) as tim:
        counters = await tim.group_counter.get_group_counter(args.group, keys)
    _write_json({"group": args.group, "counters": counters})
    return EXIT_OK


async def cmd_counter_update(args: argparse.Namespace) -> int:
    """``counter update``: set, increase or decrease counters; prints their latest values."""
    counters: dict[str, int] = {}
    for key, value in args.pairs:
        if key in counters:
            raise UsageError(f"counter {key!r} is given twice")
        counters[key] = value
    async with make_client(args) as tim:
        latest = await tim.group_counter.update_group_counter(args.group, counters, mode=args.mode)
    _write_json({"group": args.group, "mode": args.mode.value, "counters": latest})
    return EXIT_OK


async def cmd_pull_bulk(args: argparse.Namespace) -> int:
    """``ext pull-bulk``: stream one JSON line per target; see the module docstring."""
    options = client_options(args)  # credentials are checked before the input is touched
    source = TargetSource.open(args.targets)
    try:
        if source.regular:
            source.validate()  # a malformed file stops here, before any call
        rate, timeout = options["rate_limit"], options["timeout"]
        if rate is not None and args.concurrency / rate > timeout / 2:
            _err(
                f"warning: --concurrency {args.concurrency} queues up to "
                f"{args.concurrency / rate:.1f} s of calls behind the rate limit of {rate}/s; "
                f"calls waiting longer than --timeout {timeout:g} s fail"
            )
        if source.name == "stdin" and _isatty(sys.stdin):
            _err("reading targets from the terminal, one per line; end with Ctrl-D")
        # One connection per worker (each has one call in flight): waiting for a pooled
        # connection has a long tail in aiohttp when workers outnumber connections.
        tim = new_client({**options, "connections": min(args.concurrency, MAX_CONNECTIONS)})
        try:
            return await _pull_bulk_to_stdout(tim, source, args)
        finally:
            await tim.close()
    finally:
        await source.aclose()


async def _pull_bulk_to_stdout(
    tim: TimClient, source: TargetSource, args: argparse.Namespace
) -> int:
    out = sys.stdout.buffer
    broken = False

    def sink(
        target: Target, extensions: ExtensionList | None, pages: int, error: BaseException | None
    ) -> None:
        nonlocal broken
        if broken:
            return
        if extensions is not None:
            record = extension_record(target, extensions)
        else:
            assert error is not None
            record = target.describe()
            record["error"] = error_record(error)
        try:
            out.write(orjson.dumps(record) + b"\n")
            out.flush()  # every line: a reader sees results as they complete
        except (BrokenPipeError, ValueError):
            broken = True
            source.stop()

    counters = BulkCounters()
    progress = Progress(
        sys.stderr,
        counters,
        total=source.total,
        calls=lambda: counters.pages,
        label="pulled",
        limit=tim.rate_limit,
    )
    progress.start()
    try:
        await pull_bulk(tim, source.next, sink, concurrency=args.concurrency, counters=counters)
    finally:
        await progress.stop()
    if broken:
        # The reader went away (e.g. `| head`): stop quietly, as other Unix tools do.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    if source.error is not None:
        raise source.error
    if source.read_error is not None:
        raise source.read_error
    if not args.quiet:
        rate = tim.stats.attempts / counters.elapsed
        _err(
            f"{counters.done:,} target(s): {counters.ok:,} ok, {counters.failed:,} failed; "
            f"{tim.stats.attempts:,} calls in {counters.elapsed:.1f} s ({rate:.1f} calls/s), "
            f"{tim.stats.retries:,} retried"
        )
    return EXIT_FAILED if counters.failed else EXIT_OK


# =========================================================================== demo


@dataclasses.dataclass
class _Checks:
    """The demo's checks, printed as they pass or fail."""

    out: TextIO
    passed: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        mark = "ok  " if ok else "FAIL"
        line = f"  [{mark}] {name}"
        if detail:
            line += f"  ({detail})"
        self.out.write(line + "\n")
        self.out.flush()
        return ok


def _same_as_emulator(
    extensions: ExtensionList, visible: Mapping[str, tuple[str, int]], latest: int, clear: int
) -> bool:
    pulled = {item.key: (item.value, item.seq) for item in extensions.items}
    return (
        pulled == dict(visible)
        and len(pulled) == len(extensions.items)
        and extensions.latest_seq == latest
        and extensions.clear_seq == clear
    )


def _group_matches(server: FakeTimServer, gid: str, seq: int, extensions: ExtensionList) -> bool:
    meta = server.group_extension_meta(gid, seq)
    return _same_as_emulator(
        extensions, server.group_extensions(gid, seq), meta.latest_seq, meta.clear_seq
    )


def _busiest_second(times: Sequence[float]) -> int:
    """The most arrivals in any sliding one-second window (``times`` sorted)."""
    best = 0
    lo = 0
    for hi, now in enumerate(times):
        while times[lo] <= now - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def _demo_endpoints(tim: TimClient, server: FakeTimServer, checks: _Checks) -> None:
    """Drive every endpoint method once (and ``tim.call``), checking against the emulator."""
    from tim_async.errors import TimNotFoundError

    gid = server.create_group("@TGS#DEMOSHOWCASE")
    big = server.send_group_msg(gid)
    server.put_group_extensions(gid, big, {f"key{i:03d}": f"value {i}" for i in range(260)})
    alice, bob = "alice", "bob"
    c2c = server.send_c2c_msg(alice, bob)
    server.put_c2c_extensions(alice, bob, c2c, {f"emoji{i:03d}": str(i) for i in range(230)})
    server.set_group_attrs(gid, {"topic": "release party", "owner": alice})
    server.set_group_counters(gid, {"likes": 10, "views": 1000})

    out = checks.out
    out.write("message extensions (openim_msg_ext_http_svc)\n")
    results = await tim.msg_ext.group_set_key_values(
        gid, big, {"reaction:thumbsup": "alice,bob", "pinned": "1"}
    )
    checks.check(
        "msg_ext.group_set_key_values (set 2 keys)",
        all(r.ok for r in results)
        and server.group_extensions(gid, big).get("pinned", ("", 0))[0] == "1",
    )
    await tim.msg_ext.group_set_key_values(gid, big, ["key000", "key001"], operation="delete")
    checks.check(
        "msg_ext.group_set_key_values (delete 2 keys)",
        "key000" not in server.group_extensions(gid, big),
    )
    pages = [page async for page in tim.msg_ext.iter_group_key_values(gid, big)]
    merged = ExtensionList.from_pages(pages)
    checks.check(
        "msg_ext.iter_group_key_values",
        len(pages) >= 2 and _group_matches(server, gid, big, merged),
        f"{len(pages)} pages, {len(merged)} keys",
    )
    whole = await tim.msg_ext.group_get_key_values(gid, big)
    checks.check(
        "msg_ext.group_get_key_values",
        _group_matches(server, gid, big, whole),
        f"{len(whole)} keys, latest_seq {whole.latest_seq}",
    )
    results = await tim.msg_ext.set_key_values(bob, c2c, {"read": "yes"}, from_account=alice)
    checks.check(
        "msg_ext.set_key_values",
        all(r.ok for r in results) and server.c2c_extensions(alice, bob, c2c)["read"][0] == "yes",
    )
    c2c_pages = [p async for p in tim.msg_ext.iter_key_values(bob, c2c, from_account=alice)]
    c2c_merged = ExtensionList.from_pages(c2c_pages)
    meta = server.c2c_extension_meta(alice, bob, c2c)
    checks.check(
        "msg_ext.iter_key_values",
        len(c2c_pages) >= 2
        and _same_as_emulator(
            c2c_merged, server.c2c_extensions(alice, bob, c2c), meta.latest_seq, meta.clear_seq
        ),
        f"{len(c2c_pages)} pages, {len(c2c_merged)} keys",
    )
    await tim.msg_ext.set_key_values(bob, c2c, None, from_account=alice, operation="clear")
    cleared = await tim.msg_ext.get_key_values(bob, c2c, from_account=alice)
    meta = server.c2c_extension_meta(alice, bob, c2c)
    checks.check(
        "msg_ext.get_key_values (after a clear)",
        len(cleared) == 0 and cleared.clear_seq == meta.clear_seq > 0,
        f"clear_seq {cleared.clear_seq}",
    )
    try:
        await tim.msg_ext.group_get_key_values(gid, big + 1000)
        missing_ok = False
    except TimNotFoundError as exc:
        missing_ok = exc.code == 23004
    checks.check("missing message raises TimNotFoundError 23004", missing_ok)

    out.write("group attributes\n")
    attrs = await tim.group_attr.get_group_attr(gid)
    checks.check("group_attr.get_group_attr", attrs == server.group_attrs(gid), f"{attrs}")
    await tim.group_attr.modify_group_attr(gid, {"topic": "after party", "lang": "en"})
    checks.check(
        "group_attr.modify_group_attr",
        server.group_attrs(gid) == {"topic": "after party", "owner": alice, "lang": "en"},
    )
    await tim.group_attr.set_group_attr(gid, {"topic": "archive", "lang": "en"})
    checks.check(
        "group_attr.set_group_attr", server.group_attrs(gid) == {"topic": "archive", "lang": "en"}
    )
    await tim.group_attr.delete_group_attr(gid, ["lang"])
    checks.check("group_attr.delete_group_attr", server.group_attrs(gid) == {"topic": "archive"})
    await tim.group_attr.clear_group_attr(gid)
    after = await tim.group_attr.get_group_attr(gid)
    checks.check("group_attr.clear_group_attr", after == {} == server.group_attrs(gid))

    out.write("group counters\n")
    counters = await tim.group_counter.get_group_counter(gid)
    checks.check(
        "group_counter.get_group_counter", counters == server.group_counters(gid), f"{counters}"
    )
    latest = await tim.group_counter.update_group_counter(gid, {"likes": 5}, mode="Increase")
    checks.check(
        "group_counter.update_group_counter (Increase)",
        latest == {"likes": 15} and server.group_counters(gid)["likes"] == 15,
    )
    latest = await tim.group_counter.update_group_counter(
        gid, {"views": 1}, mode=CounterMode.DECREASE
    )
    checks.check("group_counter.update_group_counter (Decrease)", latest == {"views": 999})
    latest = await tim.group_counter.update_group_counter(gid, {"shares": 3})
    checks.check(
        "group_counter.update_group_counter (Set)", server.group_counters(gid)["shares"] == 3
    )
    await tim.group_counter.delete_group_counter(gid, ["views"])
    counters = await tim.group_counter.get_group_counter(gid, ["likes", "shares"])
    checks.check(
        "group_counter.delete_group_counter",
        "views" not in server.group_counters(gid) and counters == {"likes": 15, "shares": 3},
    )

    out.write("any REST command\n")
    raw = await tim.call(
        "openim_msg_ext_http_svc/group_get_key_values", {"GroupId": gid, "MsgSeq": big}
    )
    checks.check(
        "tim.call (raw first page)",
        raw.get("CompleteFlag") == 0 and len(raw.get("ExtensionList", [])) == server.page_size,
        f"{len(raw.get('ExtensionList', []))} pairs, CompleteFlag {raw.get('CompleteFlag')}",
    )


def _seed_bulk(server: FakeTimServer, messages: int, seed: int) -> tuple[str, list[int]]:
    """One group with ``messages`` messages: mostly 1-40 pairs, every 50th with more than 200
    (two pages), some cleared and written again, some with deleted keys."""
    rng = random.Random(seed)
    gid = server.create_group("@TGS#DEMOBULK")
    seqs: list[int] = []
    for i in range(messages):
        seq = server.send_group_msg(gid)
        seqs.append(seq)
        count = rng.randint(201, 300) if i % 50 == 7 else rng.randint(1, 40)
        server.put_group_extensions(gid, seq, {f"key{j:03d}": f"v{seq}.{j}" for j in range(count)})
        if i % 97 == 3:
            server.clear_group_extensions(gid, seq)
            server.put_group_extensions(gid, seq, {f"new{j}": f"n{seq}.{j}" for j in range(5)})
        elif i % 31 == 5:
            server.delete_group_extensions(gid, seq, ["key000"])
    return gid, seqs


async def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: start the emulator in-process and drive the whole SDK against it."""
    from tim_async.client import TimClient
    from tim_async.testing import FakeTimServer, Fault

    out = sys.stdout
    rate = DEFAULT_RATE_LIMIT
    api = "openim_msg_ext_http_svc/group_get_key_values"
    checks = _Checks(out)
    wall = time.monotonic()
    async with FakeTimServer(rate_limit=rate, page_size=200, seed=args.seed) as server:
        out.write(
            f"tim_async demo: embedded emulator at {server.base_url} "
            f"(SDKAppID {server.sdkappid}, {rate} calls/s per command enforced)\n\n"
        )
        async with TimClient(
            server.sdkappid,
            server.admin,
            secret_key=server.secret_key,
            base_url=server.base_url,
            rate_limit=rate,
        ) as tim:
            try:
                await _demo_endpoints(tim, server, checks)
            except Exception as exc:  # report it as a failed check and go on to the bulk pull
                checks.check("endpoint walk-through", False, f"{type(exc).__name__}: {exc}")

            gid, seqs = _seed_bulk(server, args.messages, args.seed)
            injected = [Fault.http(502), Fault.code(10002)] * 4
            server.faults.script(api, _demo_fault_script(len(seqs), injected))
            server.clear_log()
            attempts0, calls0 = tim.stats.attempts, tim.stats.calls
            retries0 = tim.stats.retries
            reasons0 = dict(tim.stats.retried_by_reason)
            out.write(
                f"bulk pull: {len(seqs):,} group messages, {args.concurrency} workers, "
                f"limit {rate} calls/s, {len(injected)} faults injected\n"
            )
            out.flush()

            numbers = iter(seqs)
            mismatched: list[int] = []
            failures: list[str] = []
            multi_page = 0

            async def next_target() -> Target | None:
                seq = next(numbers, None)
                return None if seq is None else GroupTarget(gid, seq)

            def sink(
                target: Target,
                extensions: ExtensionList | None,
                pages: int,
                error: BaseException | None,
            ) -> None:
                nonlocal multi_page
                assert isinstance(target, GroupTarget)
                if extensions is None:
                    failures.append(f"MsgSeq {target.msg_seq}: {error}")
                    return
                multi_page += pages > 1
                if not _group_matches(server, gid, target.msg_seq, extensions):
                    mismatched.append(target.msg_seq)

            counters = BulkCounters()
            progress = Progress(
                sys.stderr,
                counters,
                total=len(seqs),
                calls=lambda: counters.pages,
                limit=rate,
            )
            progress.start()
            try:
                await pull_bulk(
                    tim, next_target, sink, concurrency=args.concurrency, counters=counters
                )
            finally:
                await progress.stop()

            attempts = tim.stats.attempts - attempts0
            calls = tim.stats.calls - calls0
            retries = tim.stats.retries - retries0
            reasons = {
                reason: count - reasons0.get(reason, 0)
                for reason, count in tim.stats.retried_by_reason.items()
                if count - reasons0.get(reason, 0)
            }
            total_calls = tim.stats.attempts

        logged = server.requests_for(api)
        delivered: dict[str, int] = {}
        for entry in logged:
            if entry.fault is not None:
                reason = (
                    f"HTTP {int(entry.fault.arg or 0)}"
                    if entry.fault.kind == "http"
                    else f"ErrorCode {int(entry.fault.arg or 0)}"
                )
                delivered[reason] = delivered.get(reason, 0) + 1
        admitted = sorted(r.time for r in logged if r.fault is None and r.error_code != 60007)
        rejected = sum(1 for r in logged if r.error_code == 60007)
        busiest = _busiest_second(admitted)

    checks.check(
        "every message pulled",
        counters.done == len(seqs) and not failures,
        f"{counters.ok:,} ok, {counters.failed:,} failed"
        + (f"; first: {failures[0]}" if failures else ""),
    )
    checks.check(
        "every pulled list equals the emulator's state",
        not mismatched and counters.ok == len(seqs),
        f"{len(mismatched)} mismatched" if mismatched else f"{counters.ok:,} lists compared",
    )
    checks.check(
        "injected faults were retried and recovered",
        reasons == delivered and sum(delivered.values()) == len(injected) and not failures,
        ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items())) or "none",
    )
    checks.check(
        f"emulator never saw more than {rate} calls in one second",
        busiest <= rate and rejected == 0,
        f"busiest second: {busiest}, rejected with 60007: {rejected}",
    )

    elapsed = counters.elapsed
    achieved = attempts / elapsed
    floor = counters.pages / rate
    reasons_text = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "none"
    out.write(
        "\nsummary\n"
        f"  calls made       {attempts:,} requests in the bulk pull ({calls:,} calls, "
        f"{retries} retries); {total_calls:,} in the whole demo\n"
        f"  pages walked     {counters.pages:,} ({multi_page} messages with more than "
        f"200 pairs took 2+ pages)\n"
        f"  items pulled     {counters.items:,}\n"
        f"  bulk time        {elapsed:.1f} s (floor at {rate}/s: {floor:.1f} s)\n"
        f"  achieved rate    {achieved:.1f} calls/s against a limit of {rate}/s "
        f"({achieved / rate:.1%})\n"
        f"  errors retried   {retries} ({reasons_text})\n"
        f"  wall time        {time.monotonic() - wall:.1f} s\n"
    )
    if checks.failed:
        out.write(
            f"result: {len(checks.failed)} of {checks.passed + len(checks.failed)} checks "
            f"FAILED: {', '.join(checks.failed)}\n"
        )
        out.flush()
        return EXIT_FAILED
    out.write(f"result: all {checks.passed} checks passed\n")
    out.flush()
    return EXIT_OK


def _demo_fault_script(calls: int, faults: Sequence[Any]) -> list[Any]:
    """``faults`` spread evenly over the first ``calls`` requests (``None`` = answer normally)."""
    script: list[Any] = []
    gap = max(calls // (len(faults) + 1), 1)
    for fault in faults:
        script.extend([None] * gap)
        script.append(fault)
    return script


# =========================================================================== parser


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Connection flags. Defaults are SUPPRESS so that a flag given before the command is not
    overwritten by the subcommand's unset copy."""
    group = parser.add_argument_group(
        "connection (flags win over environment variables)",
    )
    s = argparse.SUPPRESS
    group.add_argument(
        "--sdkappid", default=s, metavar="ID", help=f"the app's SDKAppID [env {ENV_SDKAPPID}]"
    )
    group.add_argument(
        "--identifier",
        default=s,
        metavar="ADMIN",
        help=f"App admin account [env {ENV_IDENTIFIER}; default administrator]",
    )
    group.add_argument(
        "--secret-key",
        default=s,
        metavar="KEY",
        help=f"app secret key; prefer the environment variable {ENV_SECRET_KEY}: "
        "a flag is visible to other users in `ps`",
    )
    group.add_argument(
        "--usersig",
        default=s,
        metavar="SIG",
        help=f"a ready-made admin UserSig instead of the key [env {ENV_USERSIG}]",
    )
    regions = ", ".join(r.name.lower() for r in Region)
    group.add_argument(
        "--region",
        default=s,
        help=f"data centre: {regions} [env {ENV_REGION}; default china]",
    )
    group.add_argument(
        "--base-url",
        default=s,
        metavar="URL",
        help=f"override the region's address, e.g. an emulator [env {ENV_BASE_URL}]",
    )
    group.add_argument(
        "--rate-limit",
        default=s,
        type=_rate_limit,
        metavar="N",
        help=f"calls/s per REST command, or 'none' [default {DEFAULT_RATE_LIMIT}]",
    )
    group.add_argument(
        "--timeout",
        default=s,
        type=_positive_float,
        metavar="SECONDS",
        help="limit for each whole call, retries included [default 10]",
    )
    group.add_argument(
        "--max-retries",
        default=s,
        type=_int_range(0, 100),
        metavar="N",
        help="retries of a failed call [default 3]",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tim-async`` (every command and subcommand has ``--help``)."""
    from tim_async import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tencent Cloud Chat server-side REST API from the command line (tim_async).",
        epilog="Exit codes: 0 ok, 1 a call or a target failed, 2 bad input, 130 interrupted. "
        "Run `tim-async demo` to see the SDK work against its embedded emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_connection_options(parser)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the whole SDK against the embedded emulator (no credentials, no network)",
        description="Start the emulator on 127.0.0.1, seed groups, messages with extensions, "
        "attributes and counters, call every endpoint, then pull the extensions of many "
        "messages concurrently at the full rate (200 calls/s per command) with a few injected "
        "faults, and print a summary. Exit 0 when every check passes, 1 otherwise.",
    )
    demo.add_argument(
        "--messages",
        type=_int_range(100, 20_000),
        default=3000,
        metavar="N",
        help="messages in the bulk pull [default 3000, about 16 s at 200 calls/s]",
    )
    demo.add_argument(
        "--concurrency",
        type=_int_range(1, MAX_CONCURRENCY),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"workers of the bulk pull [default {DEFAULT_CONCURRENCY}]",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    demo.set_defaults(handler=cmd_demo)

    ext = commands.add_parser(
        "ext",
        help="message extensions",
        description="Message extensions (openim_msg_ext_http_svc).",
    )
    ext_commands = ext.add_subparsers(title="commands", dest="ext_command", metavar="COMMAND")
    ext_get = ext_commands.add_parser(
        "get",
        help="all extensions of one message, as JSON",
        description="Pull every page of one message's extensions and print one JSON object: "
        "the target, items [{key, value, seq}] sorted by seq, latest_seq and clear_seq.",
    )
    ext_get.add_argument("--group", metavar="GROUP_ID", help="group of a group message")
    ext_get.add_argument(
        "--msg-seq", type=_int_range(0, UINT32_MAX), metavar="N", help="MsgSeq (group message)"
    )
    ext_get.add_argument("--to", metavar="ACCOUNT", help="recipient of a one-to-one message")
    ext_get.add_argument("--msg-key", metavar="KEY", help="MsgKey (one-to-one message)")
    ext_get.add_argument(
        "--from", dest="from_account", metavar="ACCOUNT", help="sender (one-to-one, optional)"
    )
    _add_connection_options(ext_get)
    ext_get.set_defaults(handler=cmd_ext_get, _parser=ext_get)

    bulk = ext_commands.add_parser(
        "pull-bulk",
        help="pull many messages' extensions concurrently, one JSON line per target",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Read targets (a file, or stdin when TARGETS is omitted or '-'), one per line:
  {"group": "G", "msg_seq": 5}            or CSV  G,5
  {"to": "A", "msg_key": "K", "from": "B"} or CSV  A,K[,B]
A first line naming the columns (group,msg_seq / to,msg_key,from) is skipped, so
are blank lines and lines starting with '#'; other JSON keys are ignored.

Targets are pulled concurrently at the rate limit by a fixed pool of workers that
read the input as they go (memory stays bounded), and one JSON line per target is
written to stdout as it completes (not in input order): the target, its input
"line", then items/latest_seq/clear_seq, or "error": {code, type, message}. A
failed target does not stop the run. Progress goes to stderr when it is a terminal.

A malformed line is bad input (exit 2, the message names the line): a file is
checked completely before the first call; a stream (pipe) stops at that line.
Exit codes: 0 all targets pulled, 1 some target failed, 2 bad input, 130 Ctrl-C.""",
    )
    bulk.add_argument(
        "targets", nargs="?", default=None, metavar="TARGETS", help="targets file [stdin]"
    )
    bulk.add_argument(
        "--concurrency",
        type=_int_range(1, MAX_CONCURRENCY),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"targets in flight at once [default {DEFAULT_CONCURRENCY}]",
    )
    bulk.add_argument(
        "-q", "--quiet", action="store_true", help="no summary line on stderr at the end"
    )
    _add_connection_options(bulk)
    bulk.set_defaults(handler=cmd_pull_bulk)

    attr = commands.add_parser(
        "attr", help="group custom attributes", description="Group custom attributes."
    )
    attr_commands = attr.add_subparsers(title="commands", dest="attr_command", metavar="COMMAND")
    attr_get = attr_commands.add_parser(
        "get",
        help="a group's attributes, as JSON",
        description='Print {"group": G, "attrs": {key: value}}.',
    )
    attr_get.add_argument("--group", required=True, metavar="GROUP_ID")
    _add_connection_options(attr_get)
    attr_get.set_defaults(handler=cmd_attr_get)

    counter = commands.add_parser(
        "counter", help="group counters", description="Group counters (signed 64-bit integers)."
    )
    counter_commands = counter.add_subparsers(
        title="commands", dest="counter_command", metavar="COMMAND"
    )
    counter_get = counter_commands.add_parser(
        "get",
        help="a group's counters, as JSON",
        description='Print {"group": G, "counters": {key: value}}: all counters, or the '
        "KEYs given (at most 20).",
    )
    counter_get.add_argument("--group", required=True, metavar="GROUP_ID")
    counter_get.add_argument("keys", nargs="*", metavar="KEY", help="counters to read [all]")
    _add_connection_options(counter_get)
    counter_get.set_defaults(handler=cmd_counter_get)

    counter_update = counter_commands.add_parser(
        "update",
        help="set, increase or decrease counters",
        description='Apply KEY=VALUE pairs (at most 20) and print {"group", "mode", '
        '"counters": latest values}. Increase/Decrease are never resent after a timeout: '
        "if the outcome is unknown the command fails (exit 1) rather than risk counting twice.",
    )
    counter_update.add_argument("--group", required=True, metavar="GROUP_ID")
    counter_update.add_argument(
        "--mode",
        required=True,
        type=_mode,
        metavar="MODE",
        help="Set, Increase or Decrease",
    )
    counter_update.add_argument(
        "pairs", nargs="+", type=_counter_pair, metavar="KEY=VALUE", help="counters to apply"
    )
    _add_connection_options(counter_update)
    counter_update.set_defaults(handler=cmd_counter_update)

    parser.set_defaults(
        _groups={"ext": ext, "attr": attr, "counter": counter},
    )
    return parser


def _dispatch(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> Callable[[argparse.Namespace], Coroutine[Any, Any, int]]:
    handler = getattr(args, "handler", None)
    if handler is None:
        group = args._groups.get(args.command) if args.command else None
        (group or parser).print_help(sys.stderr)
        raise SystemExit(EXIT_USAGE)
    if handler is cmd_ext_get:
        args.target = _target_from_args(args, args._parser)
    result: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = handler
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        handler = _dispatch(parser, args)
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except (UsageError, TimValidationError, TimTypeError) as exc:
        # TimValidationError / TimTypeError: the SDK refused an argument before sending.
        _err(f"error: {exc}")
        return EXIT_USAGE
    except TimError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
