"""Targets of ``ext pull-bulk``: parsing a line, and reading a file or a stream lazily."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, Final

import orjson

from tim_async._validate import UINT32_MAX
from tim_async.cli.options import UsageError
from tim_async.endpoints.bulk import C2CMessage, GroupMessage

#: longest accepted line of a targets file (a longer one is malformed; memory stays bounded)
MAX_LINE_BYTES: Final = 64 * 1024


class MalformedTargetError(UsageError):
    """A line of a targets file that is not a target; names the source and the line number."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source} line {line}: {problem}")


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
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
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


def to_message(target: Target) -> GroupMessage | C2CMessage:
    """The library's model of ``target`` (raises TimValidationError / TimTypeError)."""
    if isinstance(target, GroupTarget):
        return GroupMessage(target.group, target.msg_seq)
    return C2CMessage(target.to, target.msg_key, from_account=target.from_account)


async def _read_in_thread(stream: BinaryIO) -> bytes:
    """One ``readline`` in a daemon thread (it never keeps the process alive at exit, even
    when it waits forever on a terminal nobody types into)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()

    def settle(raw: bytes | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            assert raw is not None
            future.set_result(raw)

    def run() -> None:
        try:
            raw = stream.readline(MAX_LINE_BYTES + 1)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, raw, None)

    threading.Thread(target=run, name="tim-async-stdin", daemon=True).start()
    raw = await future
    if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
        raise ValueError("line too long")
    return raw


class TargetSource:
    """Reads targets lazily, one line at a time, from a file or a stream (never all at once).

    A regular file is read with plain reads; a pipe or socket through an asyncio pipe reader,
    a terminal or another device that cannot be polled by a blocking read in a thread, so
    waiting for input never blocks the calls in flight. After a malformed line, ``error``
    holds it and :meth:`next` returns ``None`` (the run stops taking targets).
    """

    def __init__(self, name: str, stream: BinaryIO, *, shared_fd: int | None = None) -> None:
        self.name = name
        self._stream = stream
        # stdin is read through a duplicate descriptor; the original shares its file status
        # flags, so the blocking mode set for the pipe reader is restored on it at the end.
        self._shared_fd = shared_fd
        mode = os.fstat(stream.fileno()).st_mode
        self.regular = stat.S_ISREG(mode)
        # Only a pipe or a socket goes through an asyncio pipe reader (which sets O_NONBLOCK
        # on the open file description). A terminal shares that description with stdout and
        # the shell, and /dev/null or /dev/zero cannot be polled: those are read by a blocking
        # reader in a thread, leaving the descriptor's flags alone.
        self._pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        self.total: int | None = None
        self.error: MalformedTargetError | None = None
        self.read_error: UsageError | None = None
        self._line = 0
        self._seen_content = False
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._stopped = False
        self._thread_reading = False

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
        if not self._pollable:
            # Until the thread's readline returns it holds the stream's lock: closing the
            # stream meanwhile (Ctrl-C on a terminal nobody types into) would wait forever.
            self._thread_reading = True
            raw = await _read_in_thread(self._stream)
            self._thread_reading = False
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
        if self._thread_reading:
            return  # a daemon thread still reads it: the descriptor goes with the process
        with contextlib.suppress(OSError):
            self._stream.close()
