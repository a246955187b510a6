"""The emulator's webhooks: after every applied extension or attribute write, POST the
matching "after" webhook to ``webhook_url``, exactly per the protocol (spec section 9).

:class:`WebhookSender` is ``server.webhooks`` of a :class:`~tim_async.testing.FakeTimServer`.
The emulator calls :meth:`WebhookSender.after_write` right after a write command was applied
(also under the faults that apply it: ``Fault.slow``, ``DROP_AFTER_APPLY``, ``TRUNCATED_JSON``).
The body is built at once from the state, so it shows the write's message-wide ``Seq`` and each
pair's ``Seq`` as a pull then shows it; the POST runs in the background with a 2 s timeout (the
REST answer never waits for it) and is recorded in :attr:`WebhookSender.deliveries`.

Writes made with the seeding helpers (``server.put_group_extensions`` ...) send nothing: only
REST requests do, as on Tencent's side, where a webhook follows an API or client action.

Bodies (Tencent's samples): extensions ``{"CallbackCommand", "GroupId", "MsgSeq"`` (or
``"From_Account", "To_Account", "MsgKey"``) ``, "OperateType", "ExtensionList", "Seq",
"EventTime"}`` with a delete's pairs sent with ``Value ""`` and a clear's ``ExtensionList []``;
attributes ``{"CallbackCommand", "GroupId", "Type", "Operator_Account", "OptionType",
"GroupAttr", "EventTime"}`` with ``EventTime`` a string as in the sample, a delete's keys sent
with ``value ""`` and a clear's ``GroupAttr []`` (Tencent does not document these two).

Faults for deliveries (``server.webhooks.faults``): ``WebhookFault.DROP`` (nothing sent),
``WebhookFault.delay(seconds)`` (sent later, so deliveries can arrive out of order),
``WebhookFault.DUPLICATE`` (sent twice, as with retry on timeout), scripted in order
(``script([...])``, one entry per webhook, None = normal) or at random with a seed
(``random({...}, seed=1)``). A receiver answering anything but HTTP 200 with a JSON body, or not
answering within ``timeout``, is recorded as a failed delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import aiohttp
import attrs
import orjson
from aiohttp import web

from tim_async.webhooks.verify import sign

from .faults import RandomFaults
from .state import TimState

__all__ = [
    "WEBHOOK_COMMANDS",
    "WebhookDelivery",
    "WebhookFault",
    "WebhookFaults",
    "WebhookSender",
]

log = logging.getLogger("tim_async.testing")

_EXT: Final = "openim_msg_ext_http_svc/"
_GROUP: Final = "group_open_http_svc/"
GROUP_EXT_CMD: Final = "Group.CallbackAfterGroupMsgExtension"
C2C_EXT_CMD: Final = "C2C.CallbackAfterC2CMsgExtension"
ATTR_CMD: Final = "Group.CallbackAfterGroupAttrChanged"
_ATTR_OPS: Final = {
    _GROUP + "modify_group_attr": "modify",
    _GROUP + "set_group_attr": "set",
    _GROUP + "delete_group_attr": "delete",
    _GROUP + "clear_group_attr": "clear",
}
#: the REST commands ("service/command") whose applied requests send a webhook
WEBHOOK_COMMANDS: Final = frozenset(
    {_EXT + "group_set_key_values", _EXT + "set_key_values", *_ATTR_OPS}
)


# --------------------------------------------------------------------------- faults


@attrs.frozen(repr=False)
class WebhookFault:
    """One injected delivery fault: ``WebhookFault.DROP``, ``WebhookFault.DUPLICATE`` or
    ``WebhookFault.delay(seconds)``."""

    kind: str
    seconds: float = 0.0

    DROP: ClassVar[WebhookFault]
    DUPLICATE: ClassVar[WebhookFault]

    @classmethod
    def delay(cls, seconds: float) -> WebhookFault:
        """Send the webhook ``seconds`` later (the body is the one built at write time)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"WebhookFault.delay needs seconds >= 0, got {seconds!r}")
        return cls("delay", float(seconds))

    def __repr__(self) -> str:
        if self.kind == "delay":
            return f"WebhookFault.delay({self.seconds})"
        return f"WebhookFault.{self.kind.upper()}"


WebhookFault.DROP = WebhookFault("drop")
WebhookFault.DUPLICATE = WebhookFault("duplicate")


class WebhookFaults:
    """``server.webhooks.faults``: a scripted queue (consumed first, one entry per webhook)
    and an optional seeded random plan."""

    def __init__(self) -> None:
        self._queue: list[WebhookFault | None] = []
        self._random: RandomFaults[WebhookFault] | None = None

    def script(self, faults: Iterable[WebhookFault | None]) -> None:
        """Queue faults for the next webhooks, in order (None = deliver normally)."""
        items = list(faults)
        for item in items:
            if item is not None and not isinstance(item, WebhookFault):
                raise TypeError(f"script() takes WebhookFault objects or None, got {item!r}")
        self._queue.extend(items)

    def random(self, weights: Mapping[WebhookFault, float], seed: int | None = None) -> None:
        """Fault each webhook with these probabilities (replaces an earlier plan)."""
        self._random = RandomFaults(weights, seed, WebhookFault)

    def clear(self) -> None:
        self._queue.clear()
        self._random = None

    def pending(self) -> int:
        return len(self._queue)

    def next(self) -> WebhookFault | None:
        if self._queue:
            return self._queue.pop(0)
        if self._random is not None:
            return self._random.draw()
        return None

    def __repr__(self) -> str:
        planned = self._random is not None and bool(self._random.cumulative)
        return f"WebhookFaults(scripted={len(self._queue)}, random={planned})"


# --------------------------------------------------------------------------- deliveries


@attrs.frozen
class WebhookDelivery:
    """One webhook the emulator sent (or dropped), in ``server.webhook_deliveries``."""

    #: ``CallbackCommand``
    command: str
    #: HTTP status of the receiver's answer (None: nothing sent, no answer, or timed out)
    status: int | None
    #: seconds from sending to the answer (or the failure); 0 for a dropped webhook
    latency: float
    #: why the delivery failed (None: HTTP 200 with a JSON body)
    error: str | None
    #: the JSON body sent
    body: dict[str, Any]
    #: the query sent (``Sign`` and ``RequestTime`` when a token is set)
    query: dict[str, str]
    #: the injected fault, if any
    fault: WebhookFault | None = None
    #: the receiver's decoded JSON answer (None when not JSON)
    answer: Any = None

    @property
    def ok(self) -> bool:
        """Delivered: answered HTTP 200 with a JSON body (Tencent ignores its codes)."""
        return self.error is None


class WebhookSender:
    """Builds and sends the emulator's webhooks (see the module docstring).

    ``url`` None sends nothing (the default); ``url`` and ``token`` can be changed while the
    emulator runs. ``timeout`` is how long a delivery waits for the answer (Tencent: 2 s);
    ``record=False`` keeps no :attr:`deliveries` (they would grow without bound)."""

    def __init__(
        self,
        state: TimState,
        *,
        sdkappid: int,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 2.0,
        record: bool = True,
    ) -> None:
        self.state = state
        #: keep :attr:`deliveries` (off for a long-running standalone emulator)
        self.record = record
        self.sdkappid = int(sdkappid)
        self.url = url
        self.token = token
        self.timeout = timeout
        self.faults = WebhookFaults()
        #: every delivery attempt, in completion order
        self.deliveries: list[WebhookDelivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Event | None = None

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError("webhook token must be a non-empty string or None")
        self._token = value

    def __repr__(self) -> str:
        token = "None" if self._token is None else "<redacted>"
        return (
            f"WebhookSender(url={self.url!r}, token={token}, pending={len(self._tasks)}, "
            f"delivered={len(self.deliveries)})"
        )

    @property
    def pending(self) -> int:
        """Deliveries not finished yet."""
        return len(self._tasks)

    # ---------------------------------------------------------------------------- building

    def after_write(self, command: str, request: web.Request, body: Mapping[str, Any]) -> None:
        """Called by the emulator right after ``command`` was applied with ``body``."""
        if self.url is None:
            return
        try:
            built = self.build(command, body, operator=request.query.get("identifier", ""))
        except Exception:  # never let a webhook break the REST answer
            log.exception("could not build the webhook of %s", command)
            return
        if built is None:
            return
        callback, payload = built
        client_ip = request.remote or "127.0.0.1"
        task = asyncio.create_task(self._deliver(callback, payload, client_ip, self.faults.next()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def build(
        self, command: str, body: Mapping[str, Any], *, operator: str = ""
    ) -> tuple[str, dict[str, Any]] | None:
        """(CallbackCommand, body) of the webhook after ``command`` applied ``body``, from the
        current state; None for commands without a webhook (reads, counters)."""
        event_time = int(self.state.clock() * 1000)
        if command in (_EXT + "group_set_key_values", _EXT + "set_key_values"):
            group = command.endswith("group_set_key_values")
            if group:
                ext = self.state.group_message_ext(body["GroupId"], body["MsgSeq"])
                head: dict[str, Any] = {
                    "CallbackCommand": GROUP_EXT_CMD,
                    "GroupId": body["GroupId"],
                    "MsgSeq": body["MsgSeq"],
                }
            else:
                message = self.state.c2c[body["MsgKey"]]
                ext = message.ext
                head = {
                    "CallbackCommand": C2C_EXT_CMD,
                    "From_Account": message.from_account,
                    "To_Account": message.to_account,
                    "MsgKey": message.msg_key,
                }
            op = body["OperateType"]
            keys = list(dict.fromkeys(item["Key"] for item in body.get("ExtensionList") or ()))
            seq = ext.latest_seq
            if op == 1:
                items = [{"Key": k, "Value": ext.pairs[k][0], "Seq": ext.pairs[k][1]} for k in keys]
            elif op == 2:
                items = [{"Key": k, "Value": "", "Seq": seq} for k in keys]
            else:
                items = []
            payload = {
                **head,
                "OperateType": op,
                "ExtensionList": items,
                "Seq": seq,
                "EventTime": event_time,
            }
            return head["CallbackCommand"], payload
        option = _ATTR_OPS.get(command)
        if option is None:
            return None
        group_id = body["GroupId"]
        attrs_: dict[str, str] = {}
        if option in ("modify", "set"):
            attrs_ = {item["key"]: item["value"] for item in body["GroupAttr"]}
        elif option == "delete":
            attrs_ = dict.fromkeys((item["key"] for item in body["GroupAttr"]), "")
        payload = {
            "CallbackCommand": ATTR_CMD,
            "GroupId": group_id,
            "Type": self.state.groups[group_id].group_type,
            "Operator_Account": operator,
            "OptionType": option,
            "GroupAttr": [{"key": k, "value": v} for k, v in attrs_.items()],
            "EventTime": str(event_time),  # a string, as in Tencent's sample
        }
        return ATTR_CMD, payload

    def query(self, callback: str, client_ip: str = "127.0.0.1") -> dict[str, str]:
        """The query parameters of one webhook, signed now when a token is set."""
        query = {
            "SdkAppid": str(self.sdkappid),
            "CallbackCommand": callback,
            "contenttype": "json",
            "ClientIP": client_ip,
            "OptPlatform": "RESTAPI",
        }
        if self._token is not None:
            request_time = str(int(self.state.clock()))
            query["Sign"] = sign(self._token, request_time)
            query["RequestTime"] = request_time
        return query

    # ---------------------------------------------------------------------------- sending

    async def _deliver(
        self, callback: str, payload: dict[str, Any], client_ip: str, fault: WebhookFault | None
    ) -> None:
        if fault is not None and fault.kind == "drop":
            self._record(
                WebhookDelivery(callback, None, 0.0, "dropped (injected fault)", payload, {}, fault)
            )
            return
        if fault is not None and fault.kind == "delay":
            if self._closing is None:
                self._closing = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.seconds)
        times = 2 if fault is not None and fault.kind == "duplicate" else 1
        for _ in range(times):
            await self._post(callback, payload, client_ip, fault)

    async def _post(
        self, callback: str, payload: dict[str, Any], client_ip: str, fault: WebhookFault | None
    ) -> None:
        url = self.url
        query = self.query(callback, client_ip)
        if url is None:
            return
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        status: int | None = None
        error: str | None = None
        answer: Any = None
        started = time.monotonic()
        try:
            async with self._session.post(
                url,
                params=query,
                data=orjson.dumps(payload),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                status = response.status
                raw = await response.read()
            try:
                answer = orjson.loads(raw)
            except orjson.JSONDecodeError:
                error = "the answer is not JSON"
            if status != 200:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency = time.monotonic() - started
        self._record(
            WebhookDelivery(callback, status, latency, error, payload, query, fault, answer)
        )
        if error is not None:
            log.debug("webhook %s to %s failed: %s", callback, url, error)

    def _record(self, delivery: WebhookDelivery) -> None:
        if self.record:
            self.deliveries.append(delivery)

    async def drain(self) -> None:
        """Wait until every delivery started so far has finished (delays included)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """End pending delays now, let the POSTs in flight finish (each bounded by
        ``timeout``), close the HTTP session."""
        if self._closing is not None:
            self._closing.set()
        await self.drain()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._closing = None
