"""Helpers shared by several test modules: the sliding-window count the emulator uses, the
texts of an exception a redaction check must search, and small emulator conveniences."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Sequence
from typing import Any

from tim_async.client import TimClient
from tim_async.retry import RetryPolicy
from tim_async.testing import TEST_SECRET_KEY, FakeTimServer


def max_in_window(times: Sequence[float], width: float = 1.0) -> int:
    """The most arrivals in any sliding window of ``width`` seconds: for each arrival ``t``,
    the arrivals in ``(t - width, t]`` (how the emulator counts its window)."""
    ts = sorted(times)
    best = lo = 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def exception_texts(exc: BaseException) -> list[str]:
    """The formatted traceback of ``exc``, and the str, repr, args, attributes (``__dict__``
    and the error classes' slots) of it and of every exception chained to it."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [repr(value) for value in getattr(current, "__dict__", {}).values()]
        for name in ("info", "body", "body_excerpt", "api", "status", "code"):
            if hasattr(current, name):
                texts.append(repr(getattr(current, name)))
        todo += [current.__cause__, current.__context__]
    return texts


async def arrived(server: FakeTimServer, command: str) -> None:
    """Wait (polling) until the emulator logged a request of ``command``."""
    for _ in range(2000):
        if server.requests_for(command):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no request of {command} arrived")


def make_client(server: FakeTimServer, **kw: Any) -> TimClient:
    """A client of the emulator's app with quick retries (``kw`` overrides any option)."""
    kw.setdefault("retry", RetryPolicy(max_retries=3, backoff_base=0.01))
    return TimClient(
        server.sdkappid, server.admin, secret_key=TEST_SECRET_KEY, base_url=server.base_url, **kw
    )
