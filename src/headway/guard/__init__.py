"""Reliability primitives for any asyncio service: each usable alone and as a layer in a Stack.

Every guard offers ``guard.wrap(service)`` (a layer), ``@guard`` (a decorator) and
``await guard.call(service, request)``; those that fit around a block also offer
``async with guard:``. Each keeps plain counters (``snapshot()``) and reports notable events to
the :class:`~headway.core.Hooks` it was given.
"""

from headway.core import Stack

from .breaker import BreakerConfig, BreakerState, CircuitBreaker, WindowType
from .cache import Cache
from .coalesce import Coalesce, SharedCallCancelled
from .concurrency import (
    AIMDLimit,
    Bulkhead,
    ConcurrencyLimiter,
    FixedLimit,
    Gradient2Limit,
    LimitAlgorithm,
)
from .fallback import Fallback
from .hedge import Hedge
from .ratelimit import RateLimiter, tenant_key
from .retry import ExponentialBackoff, Retry, RetryBudget, RetryPolicy
from .shed import LoadShedder
from .timeout import Timeout

__all__ = [
    "AIMDLimit",
    "BreakerConfig",
    "BreakerState",
    "Bulkhead",
    "Cache",
    "CircuitBreaker",
    "Coalesce",
    "ConcurrencyLimiter",
    "ExponentialBackoff",
    "Fallback",
    "FixedLimit",
    "Gradient2Limit",
    "Hedge",
    "LimitAlgorithm",
    "LoadShedder",
    "RateLimiter",
    "Retry",
    "RetryBudget",
    "RetryPolicy",
    "SharedCallCancelled",
    "Stack",
    "Timeout",
    "WindowType",
    "tenant_key",
]
