"""ExtensionMirror against the emulator, with deliveries dropped, duplicated and reordered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tim_async import TimClient
from tim_async.errors import TimError
from tim_async.testing import FakeTimServer, WebhookFault
from tim_async.webhooks import (
    ExtensionMirror,
    MirrorOutcome,
    WebhookEvent,
    WebhookReceiver,
    parse_webhook,
)

TOKEN = "Mirror-Test-Token-123"
KEYS = ["a", "b", "c", "d"]


@attrs.frozen
class Group:
    group_id: str
    msg_seq: int


@attrs.frozen
class C2C:
    to_account: str
    msg_key: str
    from_account: str | None = None


State = dict[str, tuple[str, int]]


def model(ops: list[tuple[str, list[str]]]) -> list[State]:
    """The message's state after each write (index = Seq), from the ops alone."""
    states: list[State] = [{}]
    for seq, (op, keys) in enumerate(ops, start=1):
        state = dict(states[-1])
        if op == "set":
            for key in keys:
                state.pop(key, None)
                state[key] = (f"v{seq}", seq)
        elif op == "delete":
            for key in keys:
                state.pop(key, None)
        else:
            state = {}
        states.append(state)
    return states


def held(mirror: ExtensionMirror) -> State:
    return {item.key: (item.value, item.seq) for item in mirror.items}


async def write(tim: TimClient, target: Any, op: str, keys: list[str], seq: int) -> None:
    values: Any = {k: f"v{seq}" for k in keys} if op == "set" else keys if op == "delete" else None
    if isinstance(target, Group):
        await tim.msg_ext.group_set_key_values(
            target.group_id, target.msg_seq, values, operation=op
        )
    else:
        await tim.msg_ext.set_key_values(
            target.to_account,
            target.msg_key,
            values,
            from_account=target.from_account,
            operation=op,
        )


class Harness:
    def __init__(self, server: FakeTimServer, tim: TimClient, mirror: ExtensionMirror) -> None:
        self.server, self.tim, self.mirror = server, tim, mirror
        self.outcomes: list[MirrorOutcome] = []
        self.problems: list[str] = []
        self.states: list[State] | None = None

    async def handle(self, event: WebhookEvent) -> None:
        self.outcomes.append(await self.mirror.apply(event))
        # Never a state the message did not have at the mirror's seq.
        if self.states is not None and self.mirror.seq is not None:
            if self.mirror.seq >= len(self.states):
                self.problems.append(f"seq {self.mirror.seq} beyond the last write")
            elif held(self.mirror) != self.states[self.mirror.seq]:
                self.problems.append(f"at seq {self.mirror.seq}: {held(self.mirror)}")


@contextlib.asynccontextmanager
async def running(c2c: bool) -> AsyncIterator[Harness]:
    async with FakeTimServer(rate_limit=None) as server:
        if c2c:
            target: Any = C2C("bob", server.send_c2c_msg("alice", "bob"), "alice")
        else:
            gid = server.create_group()
            target = Group(gid, server.send_group_msg(gid))
        async with TimClient(
            server.sdkappid, secret_key=server.secret_key, base_url=server.base_url
        ) as tim:
            harness = Harness(server, tim, ExtensionMirror(tim, target))
            receiver = WebhookReceiver(server.sdkappid, token=TOKEN, handler=harness.handle)
            async with receiver.serve() as url:
                server.webhooks.url, server.webhooks.token = url, TOKEN
                yield harness


OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "delete", "clear"]),
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),
        st.one_of(
            st.none(),
            st.just(WebhookFault.DROP),
            st.just(WebhookFault.DUPLICATE),
            st.floats(0, 0.03).map(WebhookFault.delay),
        ),
        st.booleans(),  # wait for the deliveries before the next write
    ),
    min_size=1,
    max_size=10,
)


Op = tuple[str, list[str], WebhookFault | None, bool]


async def scenario(ops: list[Op], c2c: bool) -> None:
    states = model([(op, keys) for op, keys, _, _ in ops])
    async with running(c2c) as h:
        h.states = states
        await h.mirror.refresh()
        h.server.webhooks.faults.script(fault for _, _, fault, _ in ops)
        for seq, (op, keys, _, wait) in enumerate(ops, start=1):
            await write(h.tim, h.mirror.target, op, keys, seq)
            if wait:
                await h.server.webhooks.drain()
        await h.server.webhooks.drain()
        assert h.problems == []
        final = len(ops)
        if ops[-1][2] is not WebhookFault.DROP:
            # The last write's webhook arrived: the mirror is exact without being told to pull.
            assert h.mirror.seq == final
            assert held(h.mirror) == states[final]
        await h.mirror.refresh()
        assert h.mirror.seq == final and held(h.mirror) == states[final]
        if isinstance(h.mirror.target, Group):
            server_view = h.server.group_extensions(
                h.mirror.target.group_id, h.mirror.target.msg_seq
            )
        else:
            server_view = h.server.c2c_extensions("alice", "bob", h.mirror.target.msg_key)
        assert held(h.mirror) == server_view


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=OPS, c2c=st.booleans())
def test_mirror_equals_the_server_whatever_the_deliveries(ops: list[Op], c2c: bool) -> None:
    asyncio.run(scenario(ops, c2c))


async def test_in_order_events_apply_without_pulling() -> None:
    async with running(c2c=False) as h:
        await h.mirror.refresh()
        assert h.mirror.pulls == 1 and h.mirror.seq == 0
        ops = [("set", ["a", "b"]), ("delete", ["a"]), ("set", ["c"]), ("clear", [])]
        for seq, (op, keys) in enumerate(ops, start=1):
            await write(h.tim, h.mirror.target, op, keys or ["x"], seq)
            await h.server.webhooks.drain()
            assert h.mirror.seq == seq
            assert held(h.mirror) == model(ops[:seq])[seq]
        assert h.outcomes == [MirrorOutcome.APPLIED] * 4
        assert h.mirror.pulls == 1 and h.mirror.clear_seq == 4


async def test_duplicates_are_stale_and_gaps_repull() -> None:
    async with running(c2c=True) as h:
        await h.mirror.refresh()
        h.server.webhooks.faults.script([WebhookFault.DUPLICATE, WebhookFault.DROP, None])
        for seq in (1, 2, 3):
            await write(h.tim, h.mirror.target, "set", [KEYS[seq]], seq)
            await h.server.webhooks.drain()
        assert h.outcomes == [MirrorOutcome.APPLIED, MirrorOutcome.STALE, MirrorOutcome.REPULLED]
        assert h.mirror.pulls == 2 and h.mirror.seq == 3
        assert set(h.mirror.as_dict()) == {"b", "c", "d"}


async def test_first_event_pulls_and_other_targets_are_ignored() -> None:
    async with running(c2c=False) as h:
        other = h.server.send_group_msg(h.mirror.target.group_id)
        await h.tim.msg_ext.group_set_key_values(h.mirror.target.group_id, other, {"z": "1"})
        await write(h.tim, h.mirror.target, "set", ["a"], 1)
        await h.server.webhooks.drain()
        assert sorted(h.outcomes) == sorted([MirrorOutcome.OTHER, MirrorOutcome.REPULLED])
        assert h.mirror.as_dict() == {"a": "v1"}


async def test_concurrent_events_pull_once() -> None:
    # Handler tasks run concurrently: the second event waits for the first one's pull (the
    # mirror's lock) and is then stale, instead of pulling a second time.
    async with running(c2c=False) as h:
        h.server.webhooks.faults.script([WebhookFault.DROP, WebhookFault.DROP])
        for seq in (1, 2):
            await write(h.tim, h.mirror.target, "set", [KEYS[seq]], seq)
        await h.server.webhooks.drain()
        events = [parse_webhook(d.command, d.body) for d in h.server.webhook_deliveries]
        outcomes = await asyncio.gather(*(h.mirror.apply(event) for event in events))
        assert outcomes == [MirrorOutcome.REPULLED, MirrorOutcome.STALE]
        assert h.mirror.pulls == 1 and h.mirror.seq == 2


def test_target_must_name_a_message() -> None:
    with pytest.raises(TimError, match="target"):
        ExtensionMirror(None, object())  # type: ignore[arg-type]
