from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from headway.core import (
    DeadlineExceeded,
    ManualClock,
    Priority,
    RecordingHooks,
    current_context,
    request_context,
)
from headway.guard.coalesce import Coalesce, SharedCallCancelled


async def _settle(turns: int = 10) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    yield
    await _settle()
    leaked = asyncio.all_tasks() - {asyncio.current_task()}
    assert leaked == set()


class Upstream:
    """Takes ``delay`` clock seconds per call; counts calls, starts and cancellations."""

    def __init__(self, clock: ManualClock, delay: float = 1.0, error: Exception | None = None):
        self.clock = clock
        self.delay = delay
        self.error = error
        self.calls = 0
        self.cancelled = 0
        self.seen: list[tuple[float, Priority, str | None]] = []

    async def __call__(self, request: str) -> str:
        self.calls += 1
        number = self.calls
        ctx = current_context()
        self.seen.append((ctx.deadline, ctx.priority, ctx.tenant))
        try:
            await self.clock.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return f"resp:{request}:{number}"


def _by_request(request: str) -> str:
    return request


async def test_hundred_identical_calls_make_one_upstream_call(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    coalesce = Coalesce(_by_request, clock=clock)
    service = coalesce.wrap(upstream)
    tasks = [asyncio.create_task(service("q")) for _ in range(100)]
    await _settle()
    assert upstream.calls == 1
    assert coalesce.inflight == 1
    await clock.advance(1.0)
    results = await asyncio.gather(*tasks)
    assert results == ["resp:q:1"] * 100
    assert upstream.calls == 1
    assert coalesce.snapshot() == {
        "calls": 100,
        "leaders": 1,
        "followers": 99,
        "abandoned": 0,
        "inflight": 0,
    }


async def test_key_is_forgotten_when_the_call_finishes_so_nothing_is_cached(
    clock: ManualClock,
) -> None:
    upstream = Upstream(clock, delay=0.0)
    service = Coalesce(_by_request, clock=clock).wrap(upstream)
    assert await service("q") == "resp:q:1"
    assert await service("q") == "resp:q:2"
    assert upstream.calls == 2


async def test_errors_are_shared_as_the_same_exception(clock: ManualClock) -> None:
    boom = RuntimeError("upstream down")
    upstream = Upstream(clock, error=boom)
    coalesce = Coalesce(_by_request, clock=clock)
    tasks = [asyncio.create_task(coalesce.call(upstream, "q")) for _ in range(10)]
    await clock.advance(1.0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert upstream.calls == 1
    assert all(r is boom for r in results)
    assert coalesce.inflight == 0


async def test_different_keys_are_not_coalesced(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    coalesce = Coalesce(_by_request, clock=clock)
    tasks = [asyncio.create_task(coalesce.call(upstream, k)) for k in ("a", "b", "a", "b")]
    await clock.advance(1.0)
    assert await asyncio.gather(*tasks) == ["resp:a:1", "resp:b:2", "resp:a:1", "resp:b:2"]
    assert upstream.calls == 2
    assert coalesce.snapshot()["leaders"] == 2
    assert coalesce.snapshot()["followers"] == 2


async def test_cancelled_first_caller_does_not_cancel_the_others(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    coalesce = Coalesce(_by_request, clock=clock)
    leader = asyncio.create_task(coalesce.call(upstream, "q"))
    await _settle()
    followers = [asyncio.create_task(coalesce.call(upstream, "q")) for _ in range(3)]
    await _settle()
    leader.cancel()
    await _settle()
    assert leader.cancelled()
    assert upstream.cancelled == 0
    await clock.advance(1.0)
    assert await asyncio.gather(*followers) == ["resp:q:1"] * 3
    assert upstream.calls == 1
    assert coalesce.snapshot()["abandoned"] == 0


async def test_shared_call_is_cancelled_when_the_last_waiter_leaves(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    upstream = Upstream(clock)
    coalesce = Coalesce(_by_request, clock=clock, hooks=hooks, name="c")
    tasks = [asyncio.create_task(coalesce.call(upstream, "q")) for _ in range(3)]
    await _settle()
    tasks[0].cancel()
    tasks[1].cancel()
    await _settle()
    assert upstream.cancelled == 0  # one waiter is left
    tasks[2].cancel()
    await _settle()
    assert all(t.cancelled() for t in tasks)
    assert upstream.cancelled == 1
    assert coalesce.snapshot()["abandoned"] == 1
    assert coalesce.inflight == 0
    assert hooks.counts[("coalesce", "c", "abandoned")] == 1
    assert clock.pending_timers == 0
    # A later call starts afresh rather than joining the abandoned one.
    again = asyncio.create_task(coalesce.call(upstream, "q"))
    await clock.advance(1.0)
    assert await again == "resp:q:2"


async def test_each_waiter_is_bounded_by_its_own_deadline(clock: ManualClock) -> None:
    upstream = Upstream(clock, delay=5.0)
    coalesce = Coalesce(_by_request, clock=clock)

    async def call_with_budget(seconds: float) -> str:
        with request_context(timeout=seconds, clock=clock):
            return await coalesce.call(upstream, "q")

    short = asyncio.create_task(call_with_budget(1.0))  # the leader
    await _settle()
    long = asyncio.create_task(call_with_budget(10.0))
    await clock.advance(1.0)
    with pytest.raises(DeadlineExceeded):
        await short
    assert not long.done()
    assert upstream.cancelled == 0
    await clock.advance(4.0)
    assert await long == "resp:q:1"
    # The shared call ran without the leader's deadline.
    assert upstream.seen[0][0] == math.inf


async def test_shared_call_runs_in_the_leaders_context(clock: ManualClock) -> None:
    upstream = Upstream(clock, delay=0.0)
    coalesce = Coalesce(_by_request, clock=clock)
    with request_context(priority="critical", tenant="acme", timeout=30.0, clock=clock):
        await coalesce.call(upstream, "q")
    assert upstream.seen == [(math.inf, Priority.CRITICAL, "acme")]


async def test_aclose_cancels_shared_calls_and_waiters_get_a_typed_error(
    clock: ManualClock,
) -> None:
    upstream = Upstream(clock)
    coalesce = Coalesce(_by_request, clock=clock)
    tasks = [asyncio.create_task(coalesce.call(upstream, "q")) for _ in range(2)]
    await _settle()
    await coalesce.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, SharedCallCancelled) for r in results)
    assert upstream.cancelled == 1
    assert coalesce.inflight == 0


async def test_forget_lets_the_next_call_start_afresh(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    coalesce = Coalesce(_by_request, clock=clock)
    first = asyncio.create_task(coalesce.call(upstream, "q"))
    await _settle()
    coalesce.forget("q")
    second = asyncio.create_task(coalesce.call(upstream, "q"))
    await clock.advance(1.0)
    assert await first == "resp:q:1"
    assert await second == "resp:q:2"


async def test_decorator_keys_on_function_and_arguments(clock: ManualClock) -> None:
    coalesce = Coalesce(clock=clock)
    calls: list[tuple[str, Any]] = []

    @coalesce
    async def double(x: Any, *, scale: int = 2) -> Any:
        calls.append(("double", x))
        await clock.sleep(1.0)
        return x * scale

    @coalesce
    async def triple(x: Any) -> Any:
        calls.append(("triple", x))
        await clock.sleep(1.0)
        return x * 3

    tasks = [
        asyncio.create_task(double(1)),
        asyncio.create_task(double(1)),
        asyncio.create_task(double(1, scale=5)),
        asyncio.create_task(double(1, scale=5)),
        asyncio.create_task(triple(1)),
        asyncio.create_task(double([1])),  # unhashable: passes through, not coalesced
        asyncio.create_task(double([1])),
    ]
    await clock.advance(1.0)
    assert await asyncio.gather(*tasks) == [2, 2, 5, 5, 3, [1, 1], [1, 1]]
    assert sorted(calls, key=repr) == sorted(
        [("double", 1), ("double", 1), ("triple", 1), ("double", [1]), ("double", [1])],
        key=repr,
    )
    assert coalesce.snapshot()["calls"] == 5  # the two unhashable calls bypassed it


async def test_layer_without_key_is_an_error(clock: ManualClock) -> None:
    service = Coalesce(clock=clock).wrap(Upstream(clock))
    with pytest.raises(TypeError, match="key="):
        await service("q")


async def test_shared_call_is_cancelled_when_every_waiter_ran_out_of_time(
    clock: ManualClock,
) -> None:
    upstream = Upstream(clock, delay=5.0)
    coalesce = Coalesce(_by_request, clock=clock)

    async def call_with_budget(seconds: float) -> str:
        with request_context(timeout=seconds, clock=clock):
            return await coalesce.call(upstream, "q")

    tasks = [asyncio.create_task(call_with_budget(s)) for s in (1.0, 2.0)]
    await clock.advance(1.0)
    assert upstream.cancelled == 0
    await clock.advance(1.0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, DeadlineExceeded) for r in results)
    assert upstream.cancelled == 1
    assert coalesce.snapshot()["abandoned"] == 1
    assert clock.pending_timers == 0


async def test_decorator_with_explicit_key_sees_args_and_kwargs(clock: ManualClock) -> None:
    coalesce = Coalesce(lambda req: req[0][0] % 2, clock=clock)
    calls: list[int] = []

    @coalesce
    async def parity(x: int) -> int:
        calls.append(x)
        await clock.sleep(1.0)
        return x

    tasks = [asyncio.create_task(parity(x)) for x in (1, 3, 2)]
    await clock.advance(1.0)
    assert await asyncio.gather(*tasks) == [1, 1, 2]
    assert calls == [1, 2]
