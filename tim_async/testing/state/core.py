"""What every part of the emulator's state shares: :class:`EmulatorError` and byte counting."""

from __future__ import annotations

from typing import Final

__all__ = ["U32_MAX", "EmulatorError", "nbytes"]

U32_MAX: Final = 2**32 - 1


class EmulatorError(Exception):
    """A REST error: the handler answers ``{"ActionStatus": "FAIL", "ErrorCode": code, ...}``."""

    def __init__(self, code: int, info: str) -> None:
        self.code = code
        self.info = info
        super().__init__(f"ErrorCode {code}: {info}")


def nbytes(text: str) -> int:
    """The UTF-8 length of ``text`` (the unit of Tencent's size limits)."""
    # ASCII fast path: len() is the byte count.
    return len(text) if text.isascii() else len(text.encode("utf-8"))
