from __future__ import annotations

import asyncio

import pytest

from headway.core import (
    DeadlineExceeded,
    ManualClock,
    RecordingHooks,
    Stack,
    current_context,
    request_context,
)
from headway.guard.timeout import Timeout


async def test_call_times_out_exactly_and_counts(clock: ManualClock, hooks: RecordingHooks) -> None:
    timeout = Timeout(1.0, clock=clock, hooks=hooks, name="t")

    async def slow(x: int) -> int:
        await clock.sleep(10)
        return x

    task = asyncio.create_task(timeout.call(slow, 1))
    await clock.advance(0.999)
    assert not task.done()
    await clock.advance(0.001)
    with pytest.raises(DeadlineExceeded):
        await task
    assert timeout.snapshot() == {"calls": 1, "timeouts": 1, "seconds": 1.0}
    assert hooks.names("timeout") == ["timeout"]
    assert clock.pending_timers == 0


async def test_fast_call_returns_result_and_leaves_no_timer(clock: ManualClock) -> None:
    timeout = Timeout(1.0, clock=clock)

    async def fast(x: int) -> int:
        await clock.sleep(0.5)
        return x * 2

    task = asyncio.create_task(timeout.call(fast, 21))
    await clock.advance(0.5)
    assert await task == 42
    assert timeout.timeouts == 0
    assert clock.pending_timers == 0


async def test_request_deadline_earlier_than_timeout_wins(clock: ManualClock) -> None:
    timeout = Timeout(10.0, clock=clock)
    seen: list[float] = []

    async def body(_: None) -> None:
        seen.append(current_context().deadline)
        await clock.sleep(100)

    async def run() -> None:
        with request_context(deadline=clock.now() + 2.0, clock=clock):
            await timeout.call(body, None)

    start = clock.now()
    task = asyncio.create_task(run())
    await clock.advance(1.999)
    assert not task.done()
    await clock.advance(0.001)
    with pytest.raises(DeadlineExceeded):
        await task
    assert seen == [start + 2.0]


async def test_nested_timeouts_take_earliest(clock: ManualClock) -> None:
    outer = Timeout(5.0, clock=clock)
    inner = Timeout(1.0, clock=clock)
    start = clock.now()
    async with outer:
        assert current_context().deadline == start + 5.0
        async with inner:
            assert current_context().deadline == start + 1.0
        assert current_context().deadline == start + 5.0
    # The inner timeout may not extend an earlier outer one.
    async with Timeout(0.5, clock=clock), Timeout(3.0, clock=clock):
        assert current_context().deadline == start + 0.5


async def test_async_with_expires_and_counts(clock: ManualClock) -> None:
    timeout = Timeout(1.0, clock=clock)

    async def body() -> None:
        async with timeout:
            await clock.sleep(5)

    task = asyncio.create_task(body())
    await clock.advance(1.0)
    with pytest.raises(DeadlineExceeded):
        await task
    assert timeout.timeouts == 1
    assert clock.pending_timers == 0


async def test_one_instance_shared_by_concurrent_tasks(clock: ManualClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    results: list[str] = []

    async def body(wait: float, label: str) -> None:
        try:
            async with timeout:
                await clock.sleep(wait)
            results.append(label)
        except DeadlineExceeded:
            results.append(label + ":timeout")

    tasks = [asyncio.create_task(body(0.5, "a")), asyncio.create_task(body(2.0, "b"))]
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert sorted(results) == ["a", "b:timeout"]
    assert timeout.snapshot()["calls"] == 2
    assert timeout.timeouts == 1


async def test_already_expired_deadline_raises_before_body(clock: ManualClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    ran: list[bool] = []

    async def body(_: None) -> None:
        ran.append(True)

    with request_context(deadline=clock.now(), clock=clock), pytest.raises(DeadlineExceeded):
        await timeout.call(body, None)
    assert ran == []
    assert timeout.timeouts == 1


async def test_foreign_cancellation_propagates(clock: ManualClock) -> None:
    timeout = Timeout(10.0, clock=clock)

    async def slow(_: None) -> None:
        await clock.sleep(100)

    task = asyncio.create_task(timeout.call(slow, None))
    await clock.advance(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert timeout.timeouts == 0
    assert clock.pending_timers == 0


async def test_inner_deadline_error_is_not_counted_as_ours(clock: ManualClock) -> None:
    timeout = Timeout(10.0, clock=clock)

    async def failing(_: None) -> None:
        raise DeadlineExceeded("from below")

    with pytest.raises(DeadlineExceeded, match="from below"):
        await timeout.call(failing, None)
    assert timeout.timeouts == 0


async def test_as_decorator_and_in_stack(clock: ManualClock) -> None:
    timeout = Timeout(1.0, clock=clock)

    @timeout
    async def add(a: int, b: int) -> int:
        return a + b

    assert await add(2, b=3) == 5

    async def echo(x: str) -> str:
        return x

    service = Stack(Timeout(2.0, clock=clock), timeout).wrap(echo)
    assert await service("hi") == "hi"
    assert timeout.calls == 2


def test_rejects_non_positive_seconds() -> None:
    with pytest.raises(ValueError):
        Timeout(0)
