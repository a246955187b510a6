"""Writing results: JSON objects on stdout, one-line messages on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from tim_async.cli.options import PROG
from tim_async.errors import TimAPIError, TimTransportError

if TYPE_CHECKING:
    from tim_async.cli.targets import Target
    from tim_async.models import ExtensionList


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


class StdoutClosed(Exception):
    """stdout went away (a closed pipe, e.g. ``| true``): exit 1 without a message."""


def write_json(obj: Any, stream: BinaryIO | None = None) -> None:
    """Write one JSON object and a newline, flushed. A closed pipe raises
    :class:`StdoutClosed`; any other write error is an OSError (a failure, exit 1)."""
    out = stream if stream is not None else sys.stdout.buffer
    try:
        out.write(orjson.dumps(obj) + b"\n")
        out.flush()
    except BrokenPipeError:
        quiet_stdout()
        raise StdoutClosed from None


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit cannot fail again (after a closed
    pipe or a write error already reported)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def err(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
