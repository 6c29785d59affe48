from __future__ import annotations

import asyncio

import pytest

from headway.core import (
    ManualClock,
    RecordingHooks,
    Stack,
    UpstreamError,
    current_context,
    request_context,
)
from headway.guard.hedge import Hedge
from headway.guard.retry import RetryBudget


class Scripted:
    """Attempt n takes ``latencies[n]`` seconds, then returns or raises ``outcomes[n]``."""

    def __init__(self, clock: ManualClock, *plan: tuple[float, object]) -> None:
        self.clock = clock
        self.plan = list(plan)
        self.started: list[float] = []
        self.cancelled = 0

    async def __call__(self, request: str) -> str:
        index = len(self.started)
        self.started.append(self.clock.now())
        latency, outcome = self.plan[index]
        try:
            await self.clock.sleep(latency)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return f"{outcome}:{request}"


async def drive(clock: ManualClock, task: asyncio.Future[str], step: float = 0.01) -> str:
    for _ in range(100_000):
        if task.done():
            break
        await clock.advance(step)
    return task.result()


def others() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_hedge_wins_and_loser_is_cancelled_and_awaited(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    service = Scripted(clock, (10.0, "slow"), (0.5, "fast"))
    hedge = Hedge(1.0, clock=clock, hooks=hooks, name="h")
    start = clock.now()
    task = asyncio.ensure_future(hedge.call(service, "q"))
    await clock.advance(0.999)
    assert len(service.started) == 1
    await clock.advance(0.001)
    assert [t - start for t in service.started] == [0.0, 1.0]
    await clock.advance(0.499)
    assert not task.done()
    await clock.advance(0.001)
    assert task.done()
    assert task.result() == "fast:q"
    assert service.cancelled == 1
    assert others() == set()
    assert clock.pending_timers == 0
    assert hedge.snapshot()["hedges_sent"] == 1
    assert hedge.snapshot()["hedges_won"] == 1
    assert hooks.names() == ["hedge.sent", "hedge.won"]


async def test_fast_original_sends_no_hedge(clock: ManualClock) -> None:
    service = Scripted(clock, (0.5, "a"))
    hedge = Hedge(1.0, clock=clock)
    task = asyncio.ensure_future(hedge.call(service, "q"))
    assert await drive(clock, task) == "a:q"
    assert len(service.started) == 1
    assert hedge.snapshot() == {
        "calls": 1,
        "hedges_sent": 0,
        "hedges_won": 0,
        "budget_exhausted": 0,
        "delay": 1.0,
    }
    assert others() == set()
    assert clock.pending_timers == 0


async def test_original_wins_after_hedge_sent(clock: ManualClock) -> None:
    service = Scripted(clock, (1.5, "orig"), (5.0, "hedge"))
    hedge = Hedge(1.0, clock=clock)
    task = asyncio.ensure_future(hedge.call(service, "q"))
    assert await drive(clock, task) == "orig:q"
    assert hedge.hedges_sent == 1
    assert hedge.hedges_won == 0
    assert service.cancelled == 1
    assert others() == set()


async def test_early_failure_propagates_without_hedge(clock: ManualClock) -> None:
    error = UpstreamError(status=503)
    service = Scripted(clock, (0.2, error))
    hedge = Hedge(1.0, clock=clock)
    task = asyncio.ensure_future(hedge.call(service, "q"))
    with pytest.raises(UpstreamError) as info:
        await drive(clock, task)
    assert info.value is error
    assert len(service.started) == 1
    assert hedge.hedges_sent == 0
    assert others() == set()
    assert clock.pending_timers == 0


async def test_failure_while_other_runs_waits_for_the_other(clock: ManualClock) -> None:
    service = Scripted(clock, (1.5, UpstreamError(status=502)), (2.0, "hedge"))
    hedge = Hedge(1.0, clock=clock)
    task = asyncio.ensure_future(hedge.call(service, "q"))
    assert await drive(clock, task) == "hedge:q"
    assert hedge.hedges_won == 1


async def test_both_fail_raises_last_error(clock: ManualClock) -> None:
    last = UpstreamError("second", status=502)
    service = Scripted(clock, (1.5, UpstreamError("first", status=502)), (1.0, last))
    hedge = Hedge(1.0, clock=clock)
    task = asyncio.ensure_future(hedge.call(service, "q"))
    with pytest.raises(UpstreamError) as info:
        await drive(clock, task)
    assert info.value is last
    assert others() == set()


async def test_hedges_bounded_by_budget(clock: ManualClock, hooks: RecordingHooks) -> None:
    budget = RetryBudget(0.0, ttl=10, min_retries_per_second=0.1, clock=clock)  # 1 token
    hedge = Hedge(1.0, budget=budget, clock=clock, hooks=hooks, name="h")
    first = Scripted(clock, (3.0, "a"), (3.0, "b"))
    task = asyncio.ensure_future(hedge.call(first, "1"))
    await drive(clock, task)
    second = Scripted(clock, (3.0, "a"), (3.0, "b"))
    task = asyncio.ensure_future(hedge.call(second, "2"))
    assert await drive(clock, task) == "a:2"
    assert len(second.started) == 1
    assert hedge.hedges_sent == 1
    assert hedge.budget_exhausted == 1
    assert hooks.names() == ["hedge.sent", "budget_exhausted"]


async def test_no_hedge_past_the_deadline(clock: ManualClock) -> None:
    service = Scripted(clock, (0.8, "a"))
    hedge = Hedge(1.0, clock=clock)

    async def call() -> str:
        with request_context(timeout=1.0, clock=clock):
            return await hedge.call(service, "q")

    task = asyncio.ensure_future(call())
    assert await drive(clock, task) == "a:q"
    assert hedge.hedges_sent == 0


async def test_caller_cancellation_cancels_all_attempts(clock: ManualClock) -> None:
    service = Scripted(clock, (10.0, "a"), (10.0, "b"))
    hedge = Hedge(1.0, clock=clock)
    task = asyncio.ensure_future(hedge.call(service, "q"))
    await clock.advance(2.0)
    assert len(service.started) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.cancelled == 2
    assert others() == set()
    assert clock.pending_timers == 0


async def test_attempts_inherit_request_context(clock: ManualClock) -> None:
    seen: list[str | None] = []

    async def service(_: str) -> str:
        seen.append(current_context().tenant)
        await clock.sleep(5 if len(seen) == 1 else 1)
        return "x"

    hedge = Hedge(1.0, clock=clock)

    async def call() -> str:
        with request_context(tenant="acme", clock=clock):
            return await hedge.call(service, "q")

    assert await drive(clock, asyncio.ensure_future(call())) == "x"
    assert seen == ["acme", "acme"]


async def test_percentile_delay_uses_min_delay_until_enough_samples(clock: ManualClock) -> None:
    hedge = Hedge(percentile=0.9, min_delay=0.05, period=10, min_samples=10, clock=clock)
    assert hedge.current_delay() == 0.05

    async def service(latency: float) -> float:
        await clock.sleep(latency)
        return latency

    for i in range(1, 11):  # latencies 0.1 .. 1.0 (some get hedged at 0.05; fine)
        await drive(clock, asyncio.ensure_future(hedge.call(service, 0.1 * i)), step=0.01)
    assert hedge.current_delay() == 0.05  # window not complete yet
    await clock.advance(10.0)
    # Nearest-rank p90 of the recorded latencies of the first window.
    assert hedge.latency is not None
    assert hedge.current_delay() == pytest.approx(0.9, abs=0.011)


async def test_as_decorator_and_layer(clock: ManualClock) -> None:
    hedge = Hedge(1.0, clock=clock)

    @hedge
    async def double(x: int) -> int:
        await clock.sleep(0.1)
        return 2 * x

    assert await drive(clock, asyncio.ensure_future(double(4))) == 8  # type: ignore[arg-type]
    service = Stack(hedge).wrap(Scripted(clock, (0.1, "s")))
    assert await drive(clock, asyncio.ensure_future(service("z"))) == "s:z"
    assert others() == set()


def test_validation() -> None:
    with pytest.raises(ValueError):
        Hedge(1.0, percentile=0.9)
    with pytest.raises(ValueError):
        Hedge(-1.0)
