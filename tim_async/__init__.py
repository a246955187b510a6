"""tim_async: an asyncio SDK for the Tencent Cloud Chat (TIM) server-side REST API.

Start with :class:`TimClient`; errors are in :mod:`tim_async.errors`; a local emulator of the
REST API for tests is in :mod:`tim_async.testing`.
"""

from .client import TimClient
from .endpoints.bulk import C2CMessage, GroupMessage, PullResult, PullStats
from .limiter import RateLimiter, SlidingWindowLimiter
from .models import CounterMode, ExtensionItem, ExtensionList, ExtensionPage, SetKeyResult
from .regions import Region
from .retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "C2CMessage",
    "CounterMode",
    "ExtensionItem",
    "ExtensionList",
    "ExtensionPage",
    "GroupMessage",
    "PullResult",
    "PullStats",
    "RateLimiter",
    "Region",
    "RetryPolicy",
    "SetKeyResult",
    "SlidingWindowLimiter",
    "TimClient",
    "__version__",
]
