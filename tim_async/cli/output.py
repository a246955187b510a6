"""Writing results: JSON objects on stdout, one-line messages on stderr."""

from __future__ import annotations

import contextlib
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


def write_json(obj: Any, stream: BinaryIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout.buffer
    out.write(orjson.dumps(obj) + b"\n")
    out.flush()


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def err(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
