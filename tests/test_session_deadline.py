"""The session's attempt deadline (``tim_async._deadline.Deadline``) behaves as
``asyncio.timeout_at``: each case runs against both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tim_async._deadline import Deadline

Make = Callable[[float], AbstractAsyncContextManager[Any]]


def _ours(when: float) -> AbstractAsyncContextManager[Any]:
    task = asyncio.current_task()
    assert task is not None
    return Deadline(task, asyncio.get_running_loop(), when)


KINDS = pytest.mark.parametrize("make", [_ours, asyncio.timeout_at], ids=["Deadline", "asyncio"])


@KINDS
async def test_an_expired_deadline_raises_timeout_error(make: Make) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError):
        async with make(loop.time() + 0.01):
            await asyncio.sleep(30)
    assert task.cancelling() == 0  # its own cancellation taken back


@KINDS
async def test_a_past_deadline_fires_at_the_first_await(make: Make) -> None:
    loop = asyncio.get_running_loop()
    reached = []
    with pytest.raises(TimeoutError):
        async with make(loop.time() - 1):
            reached.append(1)  # the block starts
            await asyncio.sleep(30)
    assert reached == [1]


@KINDS
async def test_a_block_done_in_time_is_untouched(make: Make) -> None:
    loop = asyncio.get_running_loop()
    async with make(loop.time() + 0.05):
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # the timer was cancelled: no cancellation arrives later
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@KINDS
async def test_another_cancellation_wins_over_the_deadline(make: Make) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    when = loop.time() + 0.01
    with pytest.raises(asyncio.CancelledError):
        async with make(when):
            loop.call_at(when, task.cancel)  # someone else cancels the task at the deadline
            await asyncio.sleep(30)
    assert task.uncancel() == 0  # the other cancellation is still counted (undo it here)


@KINDS
async def test_an_exception_in_the_block_passes_through(make: Make) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(KeyError):
        async with make(loop.time() + 30):
            raise KeyError("x")
