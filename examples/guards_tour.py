"""A tour of headway.guard: a flaky, slow-tailed model service protected by one Stack.

Two tenants send traffic for a few seconds: ``batch`` (sheddable, floods) and ``chat``
(critical, steady). The upstream fails 15% of calls, hangs on 3% and has a capacity of 8. The
stack reads in the order a request meets it:

    LoadShedder   priority admission: sheddable traffic is refused first when full
    RateLimiter   per-tenant quota (GCRA), 429 with retry-after
    Timeout       cuts hung calls at the deadline
    Fallback      degrades to a smaller model when the primary refuses or fails
    Retry         full-jitter backoff, bounded by a retry budget (no retry storms)
    CircuitBreaker  stops calling a failing upstream, probes it again later

Run: ``bash scripts/demo.sh`` (or ``.venv/bin/python examples/guards_tour.py --seconds 3``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter
from dataclasses import dataclass

from headway.core import HeadwayError, Priority, RecordingHooks, UpstreamError, request_context
from headway.guard import (
    BreakerConfig,
    CircuitBreaker,
    Fallback,
    LoadShedder,
    RateLimiter,
    Retry,
    RetryBudget,
    Stack,
    Timeout,
    tenant_key,
)


@dataclass
class Completion:
    model: str
    text: str


class FlakyModel:
    """An upstream with a capacity, a failure rate and occasional hangs."""

    def __init__(self, name: str, capacity: int, error_rate: float, hang_rate: float) -> None:
        self.name = name
        self.slots = asyncio.Semaphore(capacity)
        self.error_rate = error_rate
        self.hang_rate = hang_rate
        self.rng = random.Random(7)
        self.calls = 0

    async def __call__(self, prompt: str) -> Completion:
        self.calls += 1
        async with self.slots:
            roll = self.rng.random()
            if roll < self.hang_rate:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.rng.uniform(0.01, 0.03))
            if roll < self.hang_rate + self.error_rate:
                raise UpstreamError("upstream 503", status=503)
            return Completion(self.name, f"echo: {prompt[:20]}")


async def run(seconds: float) -> None:
    hooks = RecordingHooks()
    primary = FlakyModel("large", capacity=8, error_rate=0.15, hang_rate=0.03)
    small = FlakyModel("small", capacity=32, error_rate=0.0, hang_rate=0.0)
    budget = RetryBudget(0.2)
    stack = Stack(
        LoadShedder(16, max_queue=16, hooks=hooks),
        RateLimiter(rate=40, key=tenant_key, hooks=hooks),
        Timeout(0.25, hooks=hooks),
        Fallback(small, hooks=hooks),
        Retry(budget=budget, hooks=hooks),
        CircuitBreaker("large", BreakerConfig(wait_duration_in_open=1.0), hooks=hooks),
    )
    service = stack.wrap(primary)
    outcomes: Counter[tuple[str, str]] = Counter()

    async def one(tenant: str, priority: Priority, i: int) -> None:
        with request_context(tenant=tenant, priority=priority, timeout=2.0):
            try:
                completion = await service(f"{tenant} request {i}")
                outcomes[(tenant, f"ok:{completion.model}")] += 1
            except HeadwayError as error:
                outcomes[(tenant, error.reason)] += 1

    async def tenant_loop(tenant: str, priority: Priority, per_second: int) -> None:
        tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        i = 0
        while loop.time() < end:
            tasks.append(asyncio.create_task(one(tenant, priority, i)))
            i += 1
            await asyncio.sleep(1 / per_second)
        await asyncio.gather(*tasks)

    await asyncio.gather(
        tenant_loop("batch", Priority.SHEDDABLE, 300),
        tenant_loop("chat", Priority.CRITICAL, 30),
    )

    print(f"{'tenant':8} {'outcome':24} {'count':>6}")
    for (tenant, outcome), count in sorted(outcomes.items()):
        print(f"{tenant:8} {outcome:24} {count:6}")
    print()
    print(f"upstream calls: large={primary.calls} small={small.calls}")
    print("guard events:", dict(Counter(f"{k}.{e}" for k, _, e, _ in hooks.events)))
    for guard in stack:
        snapshot = getattr(guard, "snapshot", None)
        if snapshot is not None:
            print(f"  {type(guard).__name__:15}", snapshot())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(run(args.seconds))


if __name__ == "__main__":
    main()
