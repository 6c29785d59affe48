"""The popular libraries doing each guard's job, configured so that every call is admitted:
what is measured is pure per-call overhead on the happy path, the same for every contender."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from _harness import Case, Thunk


async def noop() -> int:
    return 1


def _baseline() -> Thunk:
    return noop


def _tenacity() -> Thunk:
    import tenacity

    return tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)(noop)


def _stamina() -> Thunk:
    import stamina

    return stamina.retry(on=ConnectionError, attempts=3)(noop)


def _aiobreaker() -> Thunk:
    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=dt.timedelta(seconds=60))
    return breaker(noop)  # type: ignore[no-any-return]


def _pybreaker() -> Thunk:
    import pybreaker

    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    def one() -> int:
        return breaker.call(int)  # type: ignore[no-any-return]

    return one


def _purgatory() -> Thunk:
    from purgatory import AsyncCircuitBreakerFactory

    factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)

    async def one() -> int:
        async with await factory.get_breaker("bench"):
            return 1

    return one


def _aiolimiter() -> Thunk:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(10**12, 1)

    async def one() -> int:
        async with limiter:
            return 1

    return one


def _limits_sync(strategy: str) -> Thunk:
    from limits import RateLimitItemPerSecond, storage, strategies

    cls = getattr(strategies, strategy)
    limiter = cls(storage.MemoryStorage())
    item = RateLimitItemPerSecond(10**12)

    def one() -> Any:
        return limiter.hit(item, "k")

    return one


def _limits_async() -> Thunk:
    from limits import RateLimitItemPerSecond
    from limits.aio import storage, strategies

    limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    item = RateLimitItemPerSecond(10**12)

    async def one() -> Any:
        return await limiter.hit(item, "k")

    return one


def _semaphore() -> Thunk:
    sem = asyncio.Semaphore(10**6)

    async def one() -> int:
        async with sem:
            return 1

    return one


def _asyncio_timeout() -> Thunk:
    async def one() -> int:
        async with asyncio.timeout(30):  # noqa: ASYNC100 - the guard's own cost is the point
            return 1

    return one


def _wait_for() -> Thunk:
    async def one() -> int:
        return await asyncio.wait_for(noop(), 30)

    return one


def _dict_cache() -> Thunk:
    cache = {"k": 1}

    async def one() -> int:
        return cache["k"]

    return one


def _peer_stack() -> Thunk:
    """The same five jobs as Headway's stack, built from the fastest peers."""
    import aiobreaker
    import tenacity
    from aiolimiter import AsyncLimiter

    breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=dt.timedelta(seconds=60))
    limiter = AsyncLimiter(10**12, 1)
    sem = asyncio.Semaphore(10**6)

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)
    @breaker
    async def inner() -> int:
        async with limiter, sem:
            return 1

    async def one() -> int:
        async with asyncio.timeout(30):
            return await inner()

    return one


PEERS: list[Case] = [
    Case("(no guard)", "await noop()", _baseline, note="baseline"),
    Case("timeout", "asyncio.timeout", _asyncio_timeout),
    Case("timeout", "asyncio.wait_for", _wait_for),
    Case("retry", "tenacity", _tenacity),
    Case("retry", "stamina", _stamina),
    Case("breaker", "aiobreaker", _aiobreaker),
    Case("breaker", "pybreaker", _pybreaker, note="sync call"),
    Case("breaker", "purgatory", _purgatory),
    Case("rate limit", "aiolimiter", _aiolimiter),
    Case(
        "rate limit",
        "limits FixedWindow",
        lambda: _limits_sync("FixedWindowRateLimiter"),
        note="sync",
    ),
    Case(
        "rate limit",
        "limits MovingWindow",
        lambda: _limits_sync("MovingWindowRateLimiter"),
        note="sync",
    ),
    Case("rate limit", "limits.aio FixedWindow", _limits_async),
    Case("concurrency", "asyncio.Semaphore", _semaphore),
    Case("cache hit", "dict lookup", _dict_cache, note="baseline"),
    Case("5-layer stack", "asyncio.timeout+tenacity+aiobreaker+aiolimiter+Semaphore", _peer_stack),
]
