"""Fault injection: scripted (per command queue) and random (seeded) failures.

A :class:`Fault` says how the emulator answers one request instead of (or on top of) the normal
answer. The emulator asks :meth:`FaultInjector.next` once per request, at arrival:

* a scripted queue for the request's command is consumed first, one entry per request
  (``None`` = answer normally);
* when that queue is empty, the random plan (if any, and if the command passes its filter)
  draws one fault or none.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Iterable, Mapping
from typing import ClassVar, Final, Generic, TypeVar

import attrs

__all__ = ["Fault", "FaultInjector", "normalize_command"]

HTTP: Final = "http"
CODE: Final = "code"
SLOW: Final = "slow"
DROP_BEFORE_APPLY: Final = "drop_before_apply"
DROP_AFTER_APPLY: Final = "drop_after_apply"
NON_JSON: Final = "non_json"
TRUNCATED_JSON: Final = "truncated_json"

#: kinds answered without touching the state (no auth, no rate accounting, nothing applied)
BEFORE_APPLY_KINDS: Final = frozenset({HTTP, CODE, DROP_BEFORE_APPLY, NON_JSON})


@attrs.frozen(repr=False)
class Fault:
    """One injected failure. Build with the factories and constants:

    ``Fault.http(502)``, ``Fault.code(10002)``, ``Fault.slow(2.0)``, ``Fault.DROP_BEFORE_APPLY``,
    ``Fault.DROP_AFTER_APPLY``, ``Fault.NON_JSON``, ``Fault.TRUNCATED_JSON``.

    Faults are hashable values: ``Fault.http(502) == Fault.http(502)``.
    """

    kind: str
    #: HTTP status (http), ErrorCode (code) or delay in seconds (slow)
    arg: float | None = None
    #: ErrorInfo of a code fault
    info: str = ""

    DROP_BEFORE_APPLY: ClassVar[Fault]
    DROP_AFTER_APPLY: ClassVar[Fault]
    NON_JSON: ClassVar[Fault]
    TRUNCATED_JSON: ClassVar[Fault]

    @classmethod
    def http(cls, status: int) -> Fault:
        """Answer this HTTP status (an HTML error page); the state is untouched."""
        if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 599:
            raise ValueError(f"Fault.http needs an HTTP status in 300..599, got {status!r}")
        return cls(HTTP, status)

    @classmethod
    def code(cls, code: int, info: str = "") -> Fault:
        """Answer HTTP 200 with this ``ErrorCode`` envelope; the state is untouched."""
        if isinstance(code, bool) or not isinstance(code, int) or code == 0:
            raise ValueError(f"Fault.code needs a non-zero int ErrorCode, got {code!r}")
        return cls(CODE, code, info or f"injected fault: ErrorCode {code}")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Apply the command, then answer after ``seconds``."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"Fault.slow needs a delay >= 0 seconds, got {seconds!r}")
        return cls(SLOW, float(seconds))

    @property
    def applies(self) -> bool:
        """Whether the command is processed (and may change state) under this fault."""
        return self.kind not in BEFORE_APPLY_KINDS

    def __repr__(self) -> str:
        if self.kind == HTTP:
            return f"Fault.http({int(self.arg or 0)})"
        if self.kind == CODE:
            return f"Fault.code({int(self.arg or 0)})"
        if self.kind == SLOW:
            return f"Fault.slow({self.arg})"
        return f"Fault.{self.kind.upper()}"


Fault.DROP_BEFORE_APPLY = Fault(DROP_BEFORE_APPLY)
Fault.DROP_AFTER_APPLY = Fault(DROP_AFTER_APPLY)
Fault.NON_JSON = Fault(NON_JSON)
Fault.TRUNCATED_JSON = Fault(TRUNCATED_JSON)


def normalize_command(command: str) -> str:
    """``"/v4/svc/cmd"``, ``"v4/svc/cmd"`` and ``"svc/cmd"`` all name ``"svc/cmd"``."""
    command = command.strip("/")
    if command.startswith("v4/"):
        command = command[3:]
    return command


F = TypeVar("F")


class RandomFaults(Generic[F]):
    """A seeded random plan: each draw gives one of the faults with its probability, or None.
    Shared by :class:`FaultInjector` and the webhook faults
    (:class:`~tim_async.testing.webhook_delivery.WebhookFaults`); ``kind`` is their fault class."""

    __slots__ = ("cumulative", "rng")

    def __init__(self, weights: Mapping[F, float], seed: int | None, kind: type[F]) -> None:
        total = 0.0
        cumulative: list[tuple[float, F]] = []
        for fault, probability in weights.items():
            if not isinstance(fault, kind):
                raise TypeError(f"random() keys must be {kind.__name__} objects, got {fault!r}")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"probability of {fault!r} must be in [0, 1], got {probability}")
            total += probability
            cumulative.append((total, fault))
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities add up to {total}, more than 1")
        self.cumulative = cumulative
        self.rng = random.Random(seed)

    def draw(self) -> F | None:
        u = self.rng.random()
        for bound, fault in self.cumulative:
            if u < bound:
                return fault
        return None


class _RandomPlan:
    __slots__ = ("commands", "faults")

    def __init__(
        self,
        weights: Mapping[Fault, float],
        seed: int | None,
        commands: Iterable[str] | None,
    ) -> None:
        self.faults = RandomFaults(weights, seed, Fault)
        self.commands = (
            None if commands is None else frozenset(normalize_command(c) for c in commands)
        )

    def draw(self, command: str) -> Fault | None:
        if self.commands is not None and command not in self.commands:
            return None
        return self.faults.draw()


class FaultInjector:
    """``server.faults``: decides which requests fail and how."""

    def __init__(self) -> None:
        self._scripts: dict[str, collections.deque[Fault | None]] = {}
        self._random: _RandomPlan | None = None
        #: fast path for the handler: False while no script or random plan is set
        self.active = False

    def script(self, command: str, faults: Iterable[Fault | None]) -> None:
        """Queue ``faults`` for ``command`` ("service/command"), consumed one per request of
        that command; ``None`` answers that request normally. Appends to a pending queue."""
        items = list(faults)
        for item in items:
            if item is not None and not isinstance(item, Fault):
                raise TypeError(f"script() takes Fault objects or None, got {item!r}")
        key = normalize_command(command)
        self._scripts.setdefault(key, collections.deque()).extend(items)
        self.active = True

    def random(
        self,
        weights: Mapping[Fault, float],
        seed: int | None = None,
        commands: Iterable[str] | None = None,
    ) -> None:
        """Fail each request with the given probabilities (drawn from ``random.Random(seed)``),
        only for ``commands`` if given. Replaces any earlier random plan; scripted faults still
        come first."""
        self._random = _RandomPlan(weights, seed, commands)
        self.active = True

    def clear(self) -> None:
        """Remove every scripted fault and the random plan."""
        self._scripts.clear()
        self._random = None
        self.active = False

    def pending(self, command: str | None = None) -> int:
        """Scripted entries not consumed yet (for one command, or all)."""
        if command is not None:
            return len(self._scripts.get(normalize_command(command), ()))
        return sum(len(q) for q in self._scripts.values())

    def next(self, command: str) -> Fault | None:
        """The fault for the request of ``command`` arriving now (consumes a scripted entry)."""
        queue = self._scripts.get(command)
        if queue:
            fault = queue.popleft()
            if not queue:
                del self._scripts[command]
                self.active = bool(self._scripts) or self._random is not None
            return fault
        if self._random is not None:
            return self._random.draw(command)
        return None

    def __repr__(self) -> str:
        return (
            f"FaultInjector(scripted={self.pending()}, "
            f"random={'on' if self._random is not None else 'off'})"
        )
