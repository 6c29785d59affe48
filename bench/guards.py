"""Per-call overhead of each Headway guard next to the popular library doing the same job.

Run: ``.venv/bin/python bench/guards.py`` (``--quick`` for a smoke run). Every contender guards
a no-op coroutine on its happy path (admitted, closed, no retry), in the same process and run,
best of several repeats; the table prints ns per call and each peer's cost as a multiple of
Headway's. Goals (issue #2): each guard >= 2x cheaper than the fastest peer; a 5-layer stack
under 15 us per call.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Case, Result, Thunk, measure, render, verdicts
from headway.guard import (
    Bulkhead,
    Cache,
    CircuitBreaker,
    LoadShedder,
    RateLimiter,
    Retry,
    Stack,
    Timeout,
)
from peers import PEERS, noop


async def service(request: Any) -> int:
    return 1


def _timeout() -> Thunk:
    timeout = Timeout(30)

    async def one() -> int:
        async with timeout:
            return 1

    return one


def _retry() -> Thunk:
    return Retry()(noop)


def _breaker_block() -> Thunk:
    breaker = CircuitBreaker("bench")

    async def one() -> int:
        async with breaker:
            return 1

    return one


def _breaker_decorator() -> Thunk:
    return CircuitBreaker("bench")(noop)


def _limiter_block() -> Thunk:
    limiter = RateLimiter(10**12)

    async def one() -> int:
        async with limiter:
            return 1

    return one


def _limiter_sync() -> Thunk:
    limiter = RateLimiter(10**12)
    return limiter.try_acquire


def _bulkhead() -> Thunk:
    bulkhead = Bulkhead(10**6)

    async def one() -> int:
        async with bulkhead:
            return 1

    return one


def _shedder() -> Thunk:
    shedder = LoadShedder(10**6)

    async def one() -> int:
        async with shedder:
            return 1

    return one


def _cache_hit() -> Thunk:
    cached = Cache(key=lambda request: request, ttl=1e9).wrap(service)

    def one() -> Any:
        return cached("k")

    return one


def _stack() -> Thunk:
    stack = Stack(
        Timeout(30),
        Retry(),
        CircuitBreaker("bench"),
        RateLimiter(10**12),
        Bulkhead(10**6),
    )
    guarded = stack.wrap(service)

    def one() -> Any:
        return guarded(None)

    return one


HEADWAY: list[Case] = [
    Case("timeout", "Timeout", _timeout, headway=True),
    Case("retry", "Retry", _retry, headway=True),
    Case("breaker", "CircuitBreaker", _breaker_decorator, headway=True, note="decorator"),
    Case("breaker", "CircuitBreaker", _breaker_block, headway=True, note="async with"),
    Case("rate limit", "RateLimiter", _limiter_block, headway=True, note="async with"),
    Case("rate limit", "RateLimiter.try_acquire", _limiter_sync, headway=True, note="sync"),
    Case("concurrency", "Bulkhead", _bulkhead, headway=True),
    Case("concurrency", "LoadShedder", _shedder, headway=True),
    Case("cache hit", "Cache", _cache_hit, headway=True),
    Case(
        "5-layer stack",
        "Timeout+Retry+CircuitBreaker+RateLimiter+Bulkhead",
        _stack,
        headway=True,
    ),
]


def ordered() -> list[Case]:
    """Headway's cases first within each group, groups in the peers' order."""
    groups: dict[str, list[Case]] = {}
    for case in PEERS:
        groups.setdefault(case.group, [])
    for case in HEADWAY + PEERS:
        groups.setdefault(case.group, []).append(case)
    return [case for cases in groups.values() for case in cases]


async def run(n: int, repeats: int) -> list[Result]:
    return [await measure(case, n, repeats) for case in ordered()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run, to check it works")
    parser.add_argument("-n", type=int, default=50_000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    n, repeats = (200, 1) if args.quick else (args.n, args.repeats)
    if args.uvloop:
        import uvloop

        results = uvloop.run(run(n, repeats))
    else:
        results = asyncio.run(run(n, repeats))
    print(f"Python {platform.python_version()} on {platform.machine()}, {n} calls x {repeats}")
    print(render(results))
    print()
    for line in verdicts(results):
        print(line)
    stack = next(r for r in results if r.case.headway and r.case.group == "5-layer stack")
    mark = "ok " if stack.ns_per_call < 15_000 else "MISS"
    print(f"{mark} 5-layer stack: {stack.ns_per_call / 1000:.1f} us per call (goal < 15 us)")


if __name__ == "__main__":
    main()
