"""The README's promises about retries, timeouts and the UserSig, checked from the outside.

Each test states a documented number or rule and checks it against what a real local server saw
(the emulator's request log), never against the value the code under test computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import tim_async.client
from tim_async import CounterMode, RetryPolicy, SlidingWindowLimiter, TimClient
from tim_async.errors import (
    RETRYABLE_CODES,
    USERSIG_EXPIRED,
    TimAuthError,
    TimOutcomeUnknownError,
    TimTimeoutError,
)
from tim_async.testing import FakeTimServer, Fault
from tim_async.usersig import UserSigSigner, decode_usersig

README = Path(__file__).resolve().parent.parent / "README.md"
GID = "@TGS#PROMISES"
ATTR = "group_open_attr_http_svc/get_group_attr"
COUNTER = "group_open_http_svc/update_group_counter"

# ------------------------------------------------------------------ backoff (README "Retries")

#: "0.25 s · 2^n, capped at 8 s": the ceiling of the wait after failed attempt n (0-based),
#: written out rather than computed, so a changed formula cannot agree with itself.
CEILINGS = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0] + [8.0] * 58


def test_default_policy_is_the_documented_one() -> None:
    policy = RetryPolicy()
    assert (policy.backoff_base, policy.backoff_cap) == (0.25, 8.0)
    # TimClient(max_retries=N) keeps the documented backoff.
    assert RetryPolicy(max_retries=7) == RetryPolicy(7, 0.25, 8.0)


@pytest.mark.parametrize("n", range(len(CEILINGS)))
def test_backoff_is_full_jitter_under_the_documented_ceiling(n: int) -> None:
    ceiling = CEILINGS[n]
    rng = random.Random(1000 + n)
    draws = [RetryPolicy().backoff(n, rng) for _ in range(4000)]
    assert all(0.0 <= d <= ceiling for d in draws), (n, max(draws))
    # Full jitter: uniform over [0, ceiling], not "ceiling minus a little" nor "half jitter".
    # Each tenth of the range holds about a tenth of the draws (expected 400, sd ~19).
    deciles = [0] * 10
    for d in draws:
        deciles[min(9, int(d / ceiling * 10))] += 1
    assert all(300 <= count <= 500 for count in deciles), (n, deciles)
    assert min(draws) < ceiling * 0.01 and max(draws) > ceiling * 0.99


def test_backoff_reaches_the_cap_and_stays_there() -> None:
    rng = random.Random(5)
    policy = RetryPolicy()
    # n = 5 is the first attempt whose ceiling is the cap (0.25 * 32 = 8).
    assert max(policy.backoff(5, rng) for _ in range(2000)) > 7.9
    for n in (5, 6, 10, 30, 63):
        assert max(policy.backoff(n, rng) for _ in range(2000)) <= 8.0


def test_backoff_is_capped_for_any_number_of_retries() -> None:
    rng = random.Random(3)
    assert all(0.0 <= RetryPolicy().backoff(n, rng) <= 8.0 for n in (1100, 10_000))


def test_backoff_draws_from_the_generator_given() -> None:
    # Same seed, same waits: the session's jitter is reproducible through its rng.
    a = [RetryPolicy().backoff(3, random.Random(9)) for _ in range(3)]
    assert len(set(a)) == 1
    assert a[0] == random.Random(9).uniform(0.0, 2.0)


# ------------------------------------------------------------------ helpers


def _client(server: FakeTimServer, **kwargs: object) -> TimClient:
    options: dict[str, object] = {
        "secret_key": server.secret_key,
        "base_url": server.base_url,
        "rate_limit": None,
    }
    options.update(kwargs)
    return TimClient(server.sdkappid, server.admin, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------ a timeout in the limiter


async def test_non_idempotent_call_timing_out_in_the_limiter_was_never_sent() -> None:
    """README: TimOutcomeUnknownError only when "a non-idempotent call may or may not have been
    applied"; a call whose deadline runs out in the limiter queue was never sent."""
    async with FakeTimServer(rate_limit=None) as server:
        server.create_group(GID)
        # One call per 10 s: a call holds its slot until 10 s after its answer, so the next
        # calls cannot be admitted before that, while their deadline is 2 s after they started.
        limiter = SlidingWindowLimiter(1, period=10.0)
        async with _client(server, limiter=limiter, timeout=2.0) as tim:
            await tim.group_counter.update_group_counter(GID, {"n": 1}, mode=CounterMode.INCREASE)
            raw_body = {"GroupId": GID, "Mode": "Increase",
                        "GroupCounter": [{"Key": "n", "Value": 1}]}  # fmt: skip
            outcomes = await asyncio.gather(  # both wait behind the first call's slot
                tim.group_counter.update_group_counter(GID, {"n": 1}, mode=CounterMode.INCREASE),
                tim.call(COUNTER, raw_body, idempotent=False),
                return_exceptions=True,
            )
            for outcome in outcomes:
                assert isinstance(outcome, TimTimeoutError), outcome
                assert not isinstance(outcome, TimOutcomeUnknownError), outcome
            assert tim.stats.attempts == 1
        assert len(server.requests_for(COUNTER)) == 1
        assert server.group_counters(GID) == {"n": 1}


# ------------------------------------------------------------------ every retried code


def _readme_retried_codes() -> set[int]:
    """Codes the README says are retried: the Errors table rows marked "retried" and the lists
    in the "Retries." paragraph of "How calls behave"."""
    text = README.read_text(encoding="utf-8")
    codes: set[int] = set()

    def numbers(fragment: str) -> Iterator[int]:
        for low, high in re.findall(r"\b(\d{5})(?:\s*[\u2013-]\s*(\d{5}))?\b", fragment):
            yield from range(int(low), int(high or low) + 1)

    for line in text.splitlines():
        if line.startswith("|") and "retried" in line and "not retried" not in line:
            codes.update(numbers(line))
    retries = re.search(r"\*\*Retries\.\*\*(.*?)(?:\n\n|\*\*UserSig)", text, re.S)
    assert retries, "README lost its 'Retries.' paragraph"
    for sentence in re.split(r"(?<=\.)\s+", " ".join(retries.group(1).split())):
        if re.search(r"\bretried\b", sentence) and not re.search(r"\bnot retried", sentence):
            codes.update(numbers(sentence))
    return codes


RETRIED = sorted(_readme_retried_codes() | RETRYABLE_CODES)


def test_readme_and_code_agree_on_the_retried_codes() -> None:
    # 70001 is retried after renewing the UserSig, outside RETRYABLE_CODES.
    assert len(_readme_retried_codes()) >= 10
    assert _readme_retried_codes() == set(RETRYABLE_CODES) | {USERSIG_EXPIRED}


@pytest.mark.parametrize("code", RETRIED)
@pytest.mark.parametrize("idempotent", [True, False], ids=["read", "increase"])
async def test_every_retried_code_is_retried_once_then_succeeds(
    code: int, idempotent: bool
) -> None:
    """The server answers ``code`` once; the call then succeeds, with exactly two requests.
    Busy and rate-limit answers say the call was not applied: retried for every call, a
    non-idempotent Increase included (applied exactly once)."""
    async with FakeTimServer(rate_limit=None, group_attr_write_limit=None) as server:
        server.create_group(GID)
        server.set_group_attrs(GID, {"a": "1"})
        command = ATTR if idempotent else COUNTER
        server.faults.script(command, [Fault.code(code)])
        async with _client(server, retry=RetryPolicy(max_retries=3, backoff_base=0.01)) as tim:
            if idempotent:
                assert await tim.group_attr.get_group_attr(GID) == {"a": "1"}
            else:
                got = await tim.group_counter.update_group_counter(
                    GID, {"n": 1}, mode=CounterMode.INCREASE
                )
                assert got == {"n": 1}
        log = server.requests_for(command)
        assert [entry.error_code for entry in log] == [code, 0]
        assert log[1].ok
        if not idempotent:
            assert server.group_counters(GID) == {"n": 1}


async def test_usersig_expired_is_renewed_once_and_retried() -> None:
    """README: "On 70001 (UserSig expired) the UserSig is renewed once and the call retried"."""
    clock = _FakeClock(1_700_000_000.0, step=1.0)  # a renewed UserSig differs from the last
    async with FakeTimServer(rate_limit=None, clock=clock) as server:
        server.create_group(GID)
        server.set_group_attrs(GID, {"a": "1"})
        server.faults.script(ATTR, [Fault.code(70001)])
        with _signer_clock(clock):
            tim = _client(server)
        async with tim:
            assert await tim.group_attr.get_group_attr(GID) == {"a": "1"}
            server.faults.script(ATTR, [Fault.code(70001), Fault.code(70001)])
            with pytest.raises(TimAuthError):  # renewed once per call, not twice
                await tim.group_attr.get_group_attr(GID)
        sigs = [entry.query["usersig"] for entry in server.requests_for(ATTR)]
    assert len(sigs) == 4
    assert sigs[0] != sigs[1], "not renewed after 70001"
    assert sigs[1] == sigs[2], "the renewed UserSig was not kept"
    assert sigs[2] != sigs[3]


# ------------------------------------------------------------------ UserSig renewal margin


class _FakeClock:
    """Wall clock under the test's control (``step``: seconds added at every read)."""

    def __init__(self, now: float, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@contextlib.contextmanager
def _signer_clock(clock: _FakeClock) -> Iterator[None]:
    """Make the TimClient built inside the block sign its UserSigs at ``clock``.

    TimClient has no clock argument; the least invasive seam is the public ``clock=`` keyword
    of :class:`UserSigSigner`, bound in the name ``tim_async.client`` looks up."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tim_async.client, "UserSigSigner", functools.partial(UserSigSigner, clock=clock))
        yield


@pytest.mark.parametrize(
    ("ttl", "margin"),
    [
        (100, 20),  # a fifth of the TTL
        (7200, 1440),  # a fifth of the TTL
        (18000, 3600),  # a fifth is exactly the cap
        (86400, 3600),  # the default TTL: a fifth would be 4.8 h, the cap is 1 h
        (180 * 86400, 3600),
    ],
)
async def test_usersig_is_renewed_at_the_documented_margin(ttl: int, margin: int) -> None:
    """README: "renewed when a fifth of its validity (at most an hour) is left"."""
    t0 = 1_700_000_000.0
    clock = _FakeClock(t0)
    async with FakeTimServer(rate_limit=None, clock=clock) as server:
        server.create_group(GID)
        with _signer_clock(clock):
            tim = _client(server, usersig_ttl=ttl)
        async with tim:
            for now in (t0, t0 + 1, t0 + (ttl - margin) / 2, t0 + ttl - margin - 0.5):
                clock.now = now
                await tim.group_attr.get_group_attr(GID)
            clock.now = t0 + ttl - margin  # exactly a margin left: the first renewal
            await tim.group_attr.get_group_attr(GID)
            clock.now += 0.5
            await tim.group_attr.get_group_attr(GID)
        sigs = [entry.query["usersig"] for entry in server.requests_for(ATTR)]
        assert all(entry.ok for entry in server.requests_for(ATTR))
    assert len(set(sigs[:4])) == 1, "renewed before a margin was left"
    assert sigs[4] != sigs[3], "not renewed once a margin was left"
    assert sigs[5] == sigs[4], "renewed again at once"
    fields = decode_usersig(sigs[4])
    assert fields["TLS.time"] == int(t0 + ttl - margin)
    assert fields["TLS.expire"] == ttl
    assert decode_usersig(sigs[0])["TLS.time"] == int(t0)
