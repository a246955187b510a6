"""tim_async: an asyncio SDK for the Tencent Cloud Chat (TIM) server-side REST API.

Start with :class:`TimClient`; the error classes are importable from here and from
:mod:`tim_async.errors`; a local emulator of the REST API for tests is in
:mod:`tim_async.testing`.
"""

from ._connect import connection_trace
from .client import TimClient
from .endpoints.bulk import C2CMessage, GroupMessage, PullResult, PullStats
from .errors import (
    TimAPIError,
    TimAppConfigAuthError,
    TimAppConfigError,
    TimAppConfigPermissionError,
    TimAppConfigPremiumError,
    TimAuthError,
    TimClosedError,
    TimConfigError,
    TimConflictError,
    TimError,
    TimEventLoopError,
    TimInvalidParameterError,
    TimLimiterError,
    TimLimitExceededError,
    TimMissingExtraError,
    TimNotFoundError,
    TimOutcomeUnknownError,
    TimPagingError,
    TimPermissionError,
    TimPremiumRequiredError,
    TimRateLimitedError,
    TimServerBusyError,
    TimTimeoutError,
    TimTransportError,
    TimTypeError,
    TimValidationError,
    TimWebhookError,
)
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
    "TimAPIError",
    "TimAppConfigAuthError",
    "TimAppConfigError",
    "TimAppConfigPermissionError",
    "TimAppConfigPremiumError",
    "TimAuthError",
    "TimClient",
    "TimClosedError",
    "TimConfigError",
    "TimConflictError",
    "TimError",
    "TimEventLoopError",
    "TimInvalidParameterError",
    "TimLimitExceededError",
    "TimLimiterError",
    "TimMissingExtraError",
    "TimNotFoundError",
    "TimOutcomeUnknownError",
    "TimPagingError",
    "TimPermissionError",
    "TimPremiumRequiredError",
    "TimRateLimitedError",
    "TimServerBusyError",
    "TimTimeoutError",
    "TimTransportError",
    "TimTypeError",
    "TimValidationError",
    "TimWebhookError",
    "__version__",
    "connection_trace",
]
