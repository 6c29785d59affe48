from __future__ import annotations

import asyncio

from headway.core import DeadlineExceeded, DeadlineScope, ManualClock
from headway.core._timers import TimerQueue, timer_queue


async def test_entries_fire_once_in_deadline_order_and_removed_ones_never(
    clock: ManualClock,
) -> None:
    queue = TimerQueue(clock)
    fired: list[str] = []
    now = clock.now()
    queue.add(now + 3, lambda: fired.append("c"))
    queue.add(now + 1, lambda: fired.append("a"))
    removed = queue.add(now + 2, lambda: fired.append("never"))
    queue.add(now + 2, lambda: fired.append("b"))
    queue.remove(removed)
    queue.remove(removed)  # idempotent
    assert len(queue) == 3
    await clock.advance(1.5)
    assert fired == ["a"]
    await clock.advance(10)
    assert fired == ["a", "b", "c"]
    assert len(queue) == 0


async def test_one_real_timer_serves_many_scopes(clock: ManualClock) -> None:
    queue = TimerQueue(clock)
    for i in range(100):
        queue.add(clock.now() + 10 + i, lambda: None)
    assert clock.pending_timers == 1


async def test_dead_entries_are_compacted_so_memory_tracks_live_scopes(clock: ManualClock) -> None:
    queue = TimerQueue(clock)
    keep = queue.add(clock.now() + 1, lambda: None)
    for _ in range(10_000):
        queue.remove(queue.add(clock.now() + 30, lambda: None))
    assert len(queue) == 1
    assert len(queue._heap) < 600
    queue.remove(keep)
    assert queue._heap == []


async def test_earlier_deadline_reschedules_the_real_timer(clock: ManualClock) -> None:
    queue = TimerQueue(clock)
    fired: list[int] = []
    queue.add(clock.now() + 10, lambda: fired.append(10))
    queue.add(clock.now() + 1, lambda: fired.append(1))
    assert clock.pending_timers == 1
    await clock.advance(1)
    assert fired == [1]


async def test_many_concurrent_scopes_each_expire_at_their_own_deadline(
    clock: ManualClock,
) -> None:
    outcomes: dict[int, str] = {}

    async def body(i: int) -> None:
        try:
            async with DeadlineScope(clock.now() + i, clock=clock):
                await clock.sleep(5.5)
            outcomes[i] = "done"
        except DeadlineExceeded:
            outcomes[i] = f"expired@{clock.now() - start:g}"

    start = clock.now()
    tasks = [asyncio.create_task(body(i)) for i in range(1, 9)]
    await clock.advance(10)
    await asyncio.gather(*tasks)
    assert outcomes == {
        1: "expired@1",
        2: "expired@2",
        3: "expired@3",
        4: "expired@4",
        5: "expired@5",
        6: "done",
        7: "done",
        8: "done",
    }
    assert len(timer_queue(clock)) == 0


async def test_real_clock_keeps_one_idle_timer_that_fires_harmlessly() -> None:
    from headway.core import REAL_CLOCK, deadline_after

    for _ in range(3):
        async with deadline_after(0.02):
            pass
    queue = timer_queue(REAL_CLOCK)
    assert len(queue) == 0
    await asyncio.sleep(0.05)  # the idle timer fires and finds nothing to do
    async with deadline_after(5) as scope:
        await asyncio.sleep(0)
    assert not scope.expired
