from __future__ import annotations

import asyncio
import math

import pytest

from headway.core import (
    DeadlineExceeded,
    DeadlineScope,
    ManualClock,
    Priority,
    current_context,
    deadline_after,
    request_context,
)


async def test_scope_cancels_body_at_deadline_and_raises_typed_error(clock: ManualClock) -> None:
    started = asyncio.Event()

    async def body() -> None:
        async with DeadlineScope(clock.now() + 1.0, clock=clock):
            started.set()
            await clock.sleep(10)

    task = asyncio.create_task(body())
    await started.wait()
    await clock.advance(0.999)
    assert not task.done()
    await clock.advance(0.001)
    with pytest.raises(DeadlineExceeded):
        await task
    assert clock.pending_timers == 0


async def test_body_that_finishes_in_time_keeps_result_and_leaves_no_timer(
    clock: ManualClock,
) -> None:
    async with deadline_after(5, clock=clock) as scope:
        await clock.sleep(0)
    assert not scope.expired
    assert clock.pending_timers == 0


async def test_nested_scope_takes_the_earliest_deadline(clock: ManualClock) -> None:
    now = clock.now()
    async with DeadlineScope(now + 2, clock=clock):
        assert current_context().deadline == now + 2
        async with DeadlineScope(now + 10, clock=clock) as inner:
            assert inner.deadline == now + 2
            assert current_context().deadline == now + 2
        async with DeadlineScope(now + 1, clock=clock):
            assert current_context().deadline == now + 1
        assert current_context().deadline == now + 2
    assert current_context().deadline == math.inf


async def test_outer_deadline_fires_through_inner_scope(clock: ManualClock) -> None:
    async def body() -> None:
        async with (
            DeadlineScope(clock.now() + 1, clock=clock),
            DeadlineScope(clock.now() + 5, clock=clock),
        ):
            await clock.sleep(100)

    task = asyncio.create_task(body())
    await clock.advance(1)
    with pytest.raises(DeadlineExceeded):
        await task


async def test_expired_deadline_raises_before_body_runs(clock: ManualClock) -> None:
    ran = False
    with request_context(deadline=clock.now() - 1, clock=clock), pytest.raises(DeadlineExceeded):
        async with DeadlineScope(math.inf, clock=clock):
            ran = True
    assert not ran


async def test_foreign_cancellation_is_not_turned_into_deadline_error(clock: ManualClock) -> None:
    async def body() -> None:
        async with deadline_after(10, clock=clock):
            await clock.sleep(100)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending_timers == 0


def test_request_context_nests_and_restores() -> None:
    with request_context(timeout=5, priority="critical", tenant="t1") as outer:
        assert current_context() is outer
        assert outer.priority is Priority.CRITICAL
        with request_context(timeout=60, tenant="t2") as inner:
            assert inner.deadline == outer.deadline
            assert inner.priority is Priority.CRITICAL
            assert inner.tenant == "t2"
        assert current_context() is outer
    assert current_context().deadline == math.inf


def test_priority_parse_rejects_unknown_names() -> None:
    assert Priority.parse("Sheddable") is Priority.SHEDDABLE
    with pytest.raises(ValueError, match="expected one of sheddable, default, critical"):
        Priority.parse("urgent")


async def test_real_clock_scope_times_out() -> None:
    with pytest.raises(DeadlineExceeded):
        async with deadline_after(0.01):
            await asyncio.sleep(5)


def test_attributes_belong_to_one_request_and_never_leak() -> None:
    from headway.core import annotate

    annotate("fallback", "ignored outside a request")
    with pytest.raises(RuntimeError, match="no request in flight"):
        current_context().attributes["x"] = 1
    with request_context() as first:
        annotate("fallback", "rate_limited")
        with request_context(timeout=1) as nested:
            assert nested.attributes is first.attributes
            annotate("fallback", "circuit_open")
        assert first.attributes == {"fallback": ["rate_limited", "circuit_open"]}
    with request_context() as second:
        assert second.attributes == {}
    assert current_context().attributes == {}
