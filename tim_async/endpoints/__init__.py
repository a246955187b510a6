"""Typed endpoint namespaces: validate input, build the request body, decode the answer.

Each namespace class takes one *caller* (the client's session) and never touches aiohttp: all
I/O policy (URL, UserSig, rate limits, retries, the error envelope) lives behind
:class:`~tim_async.caller.Caller`.
"""

from __future__ import annotations

from tim_async.caller import Caller
from tim_async.endpoints.group_attr import GroupAttr
from tim_async.endpoints.group_counter import GroupCounter
from tim_async.endpoints.msg_ext import MsgExt

__all__ = ["Caller", "GroupAttr", "GroupCounter", "MsgExt"]
