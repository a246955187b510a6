"""A local emulator of the Tencent Cloud Chat (TIM) REST API, for tests.

An aiohttp application on loopback serving the 12 commands tim_async wraps (message extensions,
group custom attributes, group counters) with the documented fields, limits and error codes,
UserSig verification, per-command rate enforcement, a request log and fault injection::

    from tim_async.testing import FakeTimServer, Fault

    async with FakeTimServer(rate_limit=200, page_size=200) as server:
        gid = server.create_group()
        seq = server.send_group_msg(gid)
        server.put_group_extensions(gid, seq, {"k1": "v1"})
        server.faults.script(
            "openim_msg_ext_http_svc/group_get_key_values", [Fault.http(502), None]
        )
        ...  # point a client at server.base_url
        assert server.requests[-1].error_code == 0

Message extensions: every write takes a new message-wide seq (latest + 1); one set call stamps
all its keys with it; a clear takes a new seq and moves ``ClearSeq`` there, and the pairs written
before it are still served by pulls (the client must drop ``Seq <= ClearSeq``) unless
``serve_cleared=False``. Pulls answer at most ``page_size`` items with ``Seq >= StartSeq`` sorted
by seq, cutting wherever the page is full (also inside a run of keys sharing one seq).

Besides the 12 commands it serves ``group_open_http_svc/send_group_msg``, ``openim/sendmsg``
(text messages, with or without ``SupportMessageExtension``) and
``group_open_http_svc/get_group_info`` (:data:`SERVED_COMMANDS`); any other command answers 60009
naming it. ``server.requests`` is the request log, ``server.open_connections`` the TCP
connections open at the server.

Run standalone (another process, e.g. for the command line or benchmarks)::

    python -m tim_async.testing --port 8080 --group-messages 1000

It prints its credentials and ready-to-paste ``export TIM_...`` lines on stderr, and seeds the
README's example data (:func:`seed_examples`) unless ``--no-examples``.

The pytest plugin (entry point ``tim_async``) provides the ``tim_server`` fixture.
"""

from .app import EMULATOR_KEY, SERVED_COMMANDS, Emulator, LoggedRequest, create_app
from .commands import COMMANDS
from .examples import seed_examples
from .faults import Fault, FaultInjector
from .server import TEST_ADMIN, TEST_SDKAPPID, TEST_SECRET_KEY, FakeTimServer
from .state import GROUP_TYPES, EmulatorError, ExtensionMeta, TimState
from .webhook_delivery import WebhookDelivery, WebhookFault

__all__ = [
    "COMMANDS",
    "EMULATOR_KEY",
    "GROUP_TYPES",
    "SERVED_COMMANDS",
    "TEST_ADMIN",
    "TEST_SDKAPPID",
    "TEST_SECRET_KEY",
    "Emulator",
    "EmulatorError",
    "ExtensionMeta",
    "FakeTimServer",
    "Fault",
    "FaultInjector",
    "LoggedRequest",
    "TimState",
    "WebhookDelivery",
    "WebhookFault",
    "create_app",
    "seed_examples",
]
