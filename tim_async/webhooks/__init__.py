"""Receiving Tencent Cloud Chat webhooks for message extensions and group attributes.

Verify first, parse second, reply fast (spec section 9)::

    from tim_async.webhooks import WebhookReceiver, verify_webhook, parse_webhook

* :func:`verify_webhook` checks the query (``SdkAppid``, and with a token ``Sign`` and
  ``RequestTime`` within ``max_age``), framework-free;
* :func:`parse_webhook` turns a body into a typed, frozen event;
* :class:`WebhookReceiver` is the aiohttp handler doing both and calling your handler.

Every failure is a :class:`~tim_async.errors.TimWebhookError` naming what failed. Uses the
models, never the client or its session.
"""

from tim_async.errors import TimWebhookError

from .events import (
    ATTR_CHANGED,
    C2C_MSG_EXTENSION,
    GROUP_MSG_EXTENSION,
    C2CMsgExtensionEvent,
    ExtensionOperation,
    GroupAttrChangedEvent,
    GroupAttrOperation,
    GroupMsgExtensionEvent,
    UnknownWebhookEvent,
    WebhookBodyError,
    WebhookEvent,
    dedupe_key,
    parse_webhook,
)
from .mirror import ExtensionMirror, MirrorOutcome
from .receiver import MAX_BODY_BYTES, OK_BODY, WebhookHandler, WebhookReceiver
from .verify import WebhookVerificationError, sign, verify_webhook

__all__ = [
    "ATTR_CHANGED",
    "C2C_MSG_EXTENSION",
    "GROUP_MSG_EXTENSION",
    "MAX_BODY_BYTES",
    "OK_BODY",
    "C2CMsgExtensionEvent",
    "ExtensionMirror",
    "ExtensionOperation",
    "GroupAttrChangedEvent",
    "GroupAttrOperation",
    "GroupMsgExtensionEvent",
    "MirrorOutcome",
    "TimWebhookError",
    "UnknownWebhookEvent",
    "WebhookBodyError",
    "WebhookEvent",
    "WebhookHandler",
    "WebhookReceiver",
    "WebhookVerificationError",
    "dedupe_key",
    "parse_webhook",
    "sign",
    "verify_webhook",
]
