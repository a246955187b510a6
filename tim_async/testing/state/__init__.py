"""The emulator's data: groups, messages, message extensions, group attributes and counters.

Pure Python, no I/O: every operation either applies completely or raises :class:`EmulatorError`
with the REST error code and an informative ``ErrorInfo``, leaving the state untouched. The HTTP
handlers (:mod:`tim_async.testing.commands`) and the direct seeding helpers of
:class:`~tim_async.testing.FakeTimServer` go through the same methods, so seeded data obeys the
same limits as data written over HTTP.

One module per concept: :mod:`.core` (:class:`EmulatorError`), :mod:`.extensions`,
:mod:`.messages`, :mod:`.groups`, :mod:`.sending`, :mod:`.group_attrs`, :mod:`.group_counters`;
:class:`TimState` joins their parts. Import the names from here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from .core import U32_MAX as U32_MAX
from .core import EmulatorError
from .extensions import (
    EXT_KEY_MAX_BYTES,
    EXT_MAX_PAIRS,
    EXT_MAX_PER_CALL,
    EXT_VALUE_MAX_BYTES,
    ExtensionMeta,
    Extensions,
)
from .group_attrs import (
    ATTR_KEY_MAX_BYTES,
    ATTR_MAX_KEYS,
    ATTR_TOTAL_MAX_BYTES,
    ATTR_VALUE_MAX_BYTES,
    GroupAttrStore,
)
from .group_counters import (
    COUNTER_KEY_MAX_BYTES,
    COUNTER_MAX_KEYS,
    INT64_MAX,
    INT64_MIN,
    GroupCounterStore,
)
from .groups import GROUP_ID_MAX_BYTES, GROUP_TYPES, Group
from .messages import C2CMessage, GroupMessage, Message
from .sending import NO_EXTENSION_CODE, MessageStore

__all__ = [
    "ATTR_KEY_MAX_BYTES",
    "ATTR_MAX_KEYS",
    "ATTR_TOTAL_MAX_BYTES",
    "ATTR_VALUE_MAX_BYTES",
    "COUNTER_KEY_MAX_BYTES",
    "COUNTER_MAX_KEYS",
    "EXT_KEY_MAX_BYTES",
    "EXT_MAX_PAIRS",
    "EXT_MAX_PER_CALL",
    "EXT_VALUE_MAX_BYTES",
    "GROUP_ID_MAX_BYTES",
    "GROUP_TYPES",
    "INT64_MAX",
    "INT64_MIN",
    "NO_EXTENSION_CODE",
    "C2CMessage",
    "EmulatorError",
    "ExtensionMeta",
    "Extensions",
    "Group",
    "GroupMessage",
    "Message",
    "TimState",
]


class TimState(MessageStore, GroupAttrStore, GroupCounterStore):
    """Everything the emulator stores, plus the switches that change command behaviour.

    Its methods come from its parts: groups (:class:`~.groups.GroupRegistry`), messages and
    their extension writes (:class:`~.sending.MessageStore`), group attributes
    (:class:`~.group_attrs.GroupAttrStore`) and group counters
    (:class:`~.group_counters.GroupCounterStore`).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        page_size: int = 200,
        premium: bool = True,
        serve_cleared: bool = True,
        set_response_shape: str = "nested",
        attr_write_limit: int | None = 5,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.groups: dict[str, Group] = {}
        self.c2c: dict[str, C2CMessage] = {}
        self._c2c_seq = 0
        self.page_size = page_size
        #: paid-edition switch: off -> extensions answer 10008, counters 10059
        self.premium = premium
        #: serve pairs hidden by the last clear in pulls (clients must drop Seq <= ClearSeq)
        self.serve_cleared = serve_cleared
        self.set_response_shape = set_response_shape
        #: group attribute writes per second per group (None: unlimited)
        self.attr_write_limit = attr_write_limit
        #: sender of an ``openim/sendmsg`` without From_Account (FakeTimServer: its first admin)
        self.admin = "administrator"

    # settings with validation ----------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self._page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"page_size must be a positive int, got {value!r}")
        self._page_size = value

    @property
    def set_response_shape(self) -> str:
        return self._set_response_shape

    @set_response_shape.setter
    def set_response_shape(self, value: str) -> None:
        if value not in ("nested", "flat"):
            raise ValueError(f"set_response_shape must be 'nested' or 'flat', got {value!r}")
        self._set_response_shape = value
