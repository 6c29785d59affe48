"""Rate limiting: GCRA per key (tenant, route, API key) over a memory or Redis store.

``RateLimiter(rate, period, burst)`` is a guard (``async with``, ``wrap``, ``@limiter``) and a
direct API (``acquire``, ``try_acquire``, ``adjust``/``charge``/``refund`` for token quotas).
"""

from headway.core import RateLimited
from headway.store import Decision, LimitStore, MemoryStore, RedisStore

from ._limiter import DEFAULT_KEY, RateLimiter, tenant_key

__all__ = [
    "DEFAULT_KEY",
    "Decision",
    "LimitStore",
    "MemoryStore",
    "RateLimited",
    "RateLimiter",
    "RedisStore",
    "tenant_key",
]
