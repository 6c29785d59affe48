"""Concurrency limits: a static bulkhead and adaptive limits (AIMD, Gradient2) behind one
limiter, usable as ``async with limiter:``, as a layer or as a decorator."""

from ._aimd import AIMDLimit
from ._gradient2 import Gradient2Limit
from ._limit import FixedLimit, LimitAlgorithm
from ._limiter import Bulkhead, ConcurrencyLimiter, is_overload_signal

__all__ = [
    "AIMDLimit",
    "Bulkhead",
    "ConcurrencyLimiter",
    "FixedLimit",
    "Gradient2Limit",
    "LimitAlgorithm",
    "is_overload_signal",
]
