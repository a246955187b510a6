"""FakeTimServer: the emulator running on a loopback port, with seeding and inspection helpers."""

from __future__ import annotations

import random as _random
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Final

from aiohttp import web

from tim_async.usersig import generate_usersig

from .app import Emulator, LoggedRequest, create_app
from .faults import FaultInjector, normalize_command
from .state import (
    EXT_MAX_PER_CALL,
    ExtensionMeta,
    Extensions,
    TimState,
)
from .webhook_delivery import WebhookDelivery, WebhookSender

__all__ = ["TEST_ADMIN", "TEST_SDKAPPID", "TEST_SECRET_KEY", "FakeTimServer"]

#: defaults of FakeTimServer and of the pytest fixture (not a real app, not a real key)
TEST_SDKAPPID: Final = 1400000000
TEST_SECRET_KEY: Final = "805563148648527f29fb1e1e234b9446c009a22f8177dc463c4cca895bfeaa2f"
TEST_ADMIN: Final = "administrator"


class FakeTimServer:
    """A local emulator of the Tencent Cloud Chat REST API on ``host:port`` (0 = any free port).

    ``async with FakeTimServer() as server:`` starts it; ``server.base_url`` is the address to
    give the client. See the package docstring for the behaviour.

    Options: ``admins`` (accounts allowed as ``identifier``), ``rate_limit`` (accepted calls per
    command per sliding second, None = no enforcement), ``page_size`` (items per pull page),
    ``seed`` (generated group ids and MsgKeys), ``clock`` (wall clock for UserSig expiry and
    MsgKeys), ``monotonic`` (clock of the rate windows and of ``LoggedRequest.time``),
    ``premium`` (False: extensions 10008, counters 10059), ``serve_cleared`` (serve pairs with
    ``Seq <= ClearSeq`` in pulls), ``set_response_shape`` ("nested" or "flat" per-key results),
    ``group_attr_write_limit`` (attribute writes per second per group, None = unlimited),
    ``log_requests`` (keep ``server.requests``), ``webhook_url`` / ``webhook_token`` (POST the
    webhooks of REST writes there, see ``server.webhooks``). The run-time switches are
    properties of the same names.
    """

    def __init__(
        self,
        sdkappid: int = TEST_SDKAPPID,
        secret_key: str = TEST_SECRET_KEY,
        *,
        admins: Collection[str] = (TEST_ADMIN,),
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int | None = 200,
        page_size: int = 200,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        premium: bool = True,
        serve_cleared: bool = True,
        set_response_shape: str = "nested",
        group_attr_write_limit: int | None = 5,
        log_requests: bool = True,
        webhook_url: str | None = None,
        webhook_token: str | None = None,
    ) -> None:
        if isinstance(admins, str):
            admins = (admins,)
        if not admins:
            raise ValueError("admins must name at least one App admin account")
        if not secret_key:
            raise ValueError("secret_key must be a non-empty string")
        self.sdkappid = int(sdkappid)
        self._secret_key = secret_key
        self.admins: tuple[str, ...] = tuple(admins)
        self.host = host
        self._port = port
        self.state = TimState(
            seed=seed,
            clock=clock,
            page_size=page_size,
            premium=premium,
            serve_cleared=serve_cleared,
            set_response_shape=set_response_shape,
            attr_write_limit=group_attr_write_limit,
        )
        self.state.admin = self.admins[0]
        self.emulator = Emulator(
            self.state,
            sdkappid=self.sdkappid,
            secret_key=secret_key,
            admins=self.admins,
            rate_limit=rate_limit,
            clock=clock,
            monotonic=monotonic,
            log_requests=log_requests,
        )
        self.app = create_app(self.emulator)
        #: the webhooks sent after writes (tim_async.testing.webhook_delivery)
        self.webhooks = WebhookSender(
            self.state,
            sdkappid=self.sdkappid,
            url=webhook_url,
            token=webhook_token,
            record=log_requests,
        )
        self.emulator.on_write = self.webhooks.after_write
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeTimServer is running already")
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        self._base_url = f"http://{host}:{port}"

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self.emulator.wake_sleepers()
            await runner.cleanup()
        await self.webhooks.aclose()

    async def __aenter__(self) -> FakeTimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"FakeTimServer(sdkappid={self.sdkappid}, base_url={self._base_url!r}, "
            f"secret_key=<redacted>)"
        )

    # ---------------------------------------------------------------------------- addresses

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (once started)."""
        if self._base_url is None:
            raise RuntimeError("FakeTimServer is not started")
        return self._base_url

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def admin(self) -> str:
        """The first App admin account."""
        return self.admins[0]

    def usersig(self, identifier: str | None = None, expire: int = 86400) -> str:
        """A valid UserSig for ``identifier`` (default: the admin), signed with the app key."""
        return generate_usersig(
            self.sdkappid,
            identifier or self.admin,
            self._secret_key,
            expire,
            now=int(self.state.clock()),
        )

    def url(self, command: str, **query: str | int | None) -> str:
        """The full request URL of ``command`` with a valid query for the admin; any query
        parameter can be overridden, and one given as None is left out. The UserSig is generated
        for the ``identifier`` given (default: the admin) unless ``usersig`` is given."""
        identifier = query.get("identifier", self.admin)
        params: dict[str, str | int | None] = {
            "sdkappid": self.sdkappid,
            "identifier": identifier,
            "usersig": self.usersig(str(identifier or self.admin)),
            "random": _random.getrandbits(32),
            "contenttype": "json",
        }
        params.update(query)
        encoded = urllib.parse.urlencode({k: str(v) for k, v in params.items() if v is not None})
        return f"{self.base_url}/v4/{normalize_command(command)}?{encoded}"

    # ---------------------------------------------------------------------------- switches

    @property
    def rate_limit(self) -> int | None:
        """Accepted calls per command per sliding second (None: no enforcement)."""
        return self.emulator.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: int | None) -> None:
        self.emulator.rate_limit = value

    @property
    def page_size(self) -> int:
        """Most items in one pull page (Tencent: 200)."""
        return self.state.page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        self.state.page_size = value

    @property
    def premium(self) -> bool:
        """Paid-edition switch: False -> extensions answer 10008, counters 10059."""
        return self.state.premium

    @premium.setter
    def premium(self, value: bool) -> None:
        self.state.premium = bool(value)

    @property
    def serve_cleared(self) -> bool:
        """Serve pairs with ``Seq <= ClearSeq`` in pulls (the client must drop them)."""
        return self.state.serve_cleared

    @serve_cleared.setter
    def serve_cleared(self, value: bool) -> None:
        self.state.serve_cleared = bool(value)

    @property
    def set_response_shape(self) -> str:
        """ "nested" ({ErrorCode, ErrorInfo, Extension}) or "flat" ({Key, Value, Seq})."""
        return self.state.set_response_shape

    @set_response_shape.setter
    def set_response_shape(self, value: str) -> None:
        self.state.set_response_shape = value

    @property
    def group_attr_write_limit(self) -> int | None:
        return self.state.attr_write_limit

    @group_attr_write_limit.setter
    def group_attr_write_limit(self, value: int | None) -> None:
        self.state.attr_write_limit = value

    # ---------------------------------------------------------------------------- log, faults

    @property
    def requests(self) -> list[LoggedRequest]:
        """The request log: every request received, in arrival order, as
        :class:`~tim_async.testing.LoggedRequest` (``time``, ``command``, ``query``, ``body``,
        ``error_code``, ``http_status``, ``fault``, ``ok``). Empty with ``log_requests=False``."""
        return self.emulator.requests

    def requests_for(self, command: str) -> list[LoggedRequest]:
        """The logged requests of one command ("service/command"), in arrival order."""
        command = normalize_command(command)
        return [r for r in self.emulator.requests if r.command == command]

    def clear_log(self) -> None:
        """Forget the requests logged so far."""
        self.emulator.requests.clear()

    @property
    def faults(self) -> FaultInjector:
        return self.emulator.faults

    @property
    def open_connections(self) -> int:
        """TCP connections open at the server right now (0 when not running): a client that
        closed or leaked its connections shows here. A connection the client just closed may
        count until its close has reached the server."""
        runner = self._runner
        server = runner.server if runner is not None else None
        if server is None:
            return 0
        count = 0
        for handler in server.connections:
            transport = handler.transport
            if transport is not None and not transport.is_closing():
                count += 1
        return count

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every webhook sent (or dropped) so far, in completion order."""
        return self.webhooks.deliveries

    # ---------------------------------------------------------------------------- seeding

    def create_group(
        self, group_id: str | None = None, group_type: str = "Public", *, name: str = ""
    ) -> str:
        """Create a group; return its id ("@TGS#..." generated when None). ``group_type`` is
        one of ``Private`` (alias ``Work``), ``Public``, ``ChatRoom`` (alias ``Meeting``),
        ``AVChatRoom`` (no message extensions) and ``Community`` (no counters, no
        ``clear_group_attr``: 10007); ``name`` (default: the id) is what ``get_group_info``
        answers."""
        return self.state.create_group(group_id, group_type, name=name)

    def delete_group(self, group_id: str) -> None:
        """Delete a group (commands on it then answer 10010 / 23004)."""
        self.state.delete_group(group_id)

    def send_group_msg(
        self, group_id: str, *, support_extension: bool = True, msg_seq: int | None = None
    ) -> int:
        """Record a group message; return its MsgSeq (last + 1 unless given, increasing)."""
        return self.state.send_group_msg(
            group_id, support_extension=support_extension, msg_seq=msg_seq
        )

    def send_c2c_msg(
        self,
        from_account: str,
        to_account: str,
        *,
        support_extension: bool = True,
        msg_key: str | None = None,
    ) -> str:
        """Record a one-to-one message; return its MsgKey ("random_seq_time" unless given)."""
        return self.state.send_c2c_msg(
            from_account, to_account, support_extension=support_extension, msg_key=msg_key
        )

    def _group_ext(self, group_id: str, msg_seq: int) -> Extensions:
        return self.state.group_message_ext(group_id, msg_seq)

    def _c2c_ext(self, from_account: str, to_account: str, msg_key: str) -> Extensions:
        return self.state.c2c_message_ext(from_account, to_account, msg_key)

    @staticmethod
    def _put(ext: Extensions, values: Mapping[str, str]) -> list[int]:
        items = list(values.items())
        return [
            ext.set(items[i : i + EXT_MAX_PER_CALL]) for i in range(0, len(items), EXT_MAX_PER_CALL)
        ]

    def put_group_extensions(
        self, group_id: str, msg_seq: int, values: Mapping[str, str]
    ) -> list[int]:
        """Set ``values`` as set calls of at most 20 keys each (each takes one new seq), through
        the same code as the HTTP handler; return the seqs taken. Raises
        :class:`~tim_async.testing.EmulatorError` on a limit."""
        return self._put(self._group_ext(group_id, msg_seq), values)

    def put_c2c_extensions(
        self, from_account: str, to_account: str, msg_key: str, values: Mapping[str, str]
    ) -> list[int]:
        return self._put(self._c2c_ext(from_account, to_account, msg_key), values)

    def delete_group_extensions(self, group_id: str, msg_seq: int, keys: list[str]) -> int:
        return self._group_ext(group_id, msg_seq).delete(keys)

    def delete_c2c_extensions(
        self, from_account: str, to_account: str, msg_key: str, keys: list[str]
    ) -> int:
        return self._c2c_ext(from_account, to_account, msg_key).delete(keys)

    def clear_group_extensions(self, group_id: str, msg_seq: int) -> int:
        return self._group_ext(group_id, msg_seq).clear()

    def clear_c2c_extensions(self, from_account: str, to_account: str, msg_key: str) -> int:
        return self._c2c_ext(from_account, to_account, msg_key).clear()

    # ---------------------------------------------------------------------------- inspection

    def group_extensions(self, group_id: str, msg_seq: int) -> dict[str, tuple[str, int]]:
        """The visible pairs: key -> (value, seq), pairs with seq <= ClearSeq excluded."""
        return self._group_ext(group_id, msg_seq).visible()

    def c2c_extensions(
        self, from_account: str, to_account: str, msg_key: str
    ) -> dict[str, tuple[str, int]]:
        return self._c2c_ext(from_account, to_account, msg_key).visible()

    def group_extension_meta(self, group_id: str, msg_seq: int) -> ExtensionMeta:
        """latest_seq, clear_seq and pair counts of a group message."""
        return self._group_ext(group_id, msg_seq).meta()

    #: alias of :meth:`group_extension_meta`
    extension_meta = group_extension_meta

    def c2c_extension_meta(self, from_account: str, to_account: str, msg_key: str) -> ExtensionMeta:
        return self._c2c_ext(from_account, to_account, msg_key).meta()

    def group_attrs(self, group_id: str) -> dict[str, str]:
        return dict(self.state.groups[group_id].attrs)

    def set_group_attrs(self, group_id: str, attrs: Mapping[str, str]) -> None:
        """Seed: replace the group's attributes (limits checked, write rate not counted)."""
        if attrs:
            self.state.set_group_attrs(group_id, list(attrs.items()))
        else:
            self.state.groups[group_id].attrs = {}

    def group_counters(self, group_id: str) -> dict[str, int]:
        return dict(self.state.groups[group_id].counters)

    def set_group_counters(self, group_id: str, counters: Mapping[str, int]) -> None:
        """Seed: replace the group's counters (limits checked; unchanged on error)."""
        group = self.state.groups[group_id]
        old, group.counters = group.counters, {}
        try:
            if counters:
                self.state.update_group_counters(group_id, list(counters.items()), "Set")
        except BaseException:
            group.counters = old
            raise
