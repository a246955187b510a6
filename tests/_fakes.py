"""Test doubles shared by the endpoint-layer tests."""

from __future__ import annotations

import contextlib
import copy
from typing import Any


class FakeCaller:
    """Records each call (a deep copy of the body) and returns a copy of ``answer``."""

    def __init__(self, answer: dict[str, Any] | None = None, *, raises: Exception | None = None):
        self.answer = answer if answer is not None else {}
        self.raises = raises
        self.calls: list[tuple[str, dict[str, Any], bool]] = []

    def operation(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def call(
        self, api: str, body: dict[str, Any], *, idempotent: bool = True, decode: Any = None
    ) -> dict[str, Any]:
        self.calls.append((api, copy.deepcopy(body), idempotent))
        if self.raises is not None:
            raise self.raises
        return {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", **copy.deepcopy(self.answer)}

    @property
    def last(self) -> tuple[str, dict[str, Any], bool]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]
