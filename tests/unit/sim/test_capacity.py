from __future__ import annotations

import asyncio

import pytest

from headway.sim._capacity import Capacity, QueueFull


async def test_fifo_order_and_slot_handover() -> None:
    cap = Capacity(1)
    await cap.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await cap.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert (cap.active, cap.queued) == (1, 3)
    for _ in range(3):
        cap.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert cap.active == 1
    cap.release()
    assert cap.active == 0


async def test_bounded_queue_refuses() -> None:
    cap = Capacity(1, max_queue=1)
    await cap.acquire()
    queued = asyncio.create_task(cap.acquire())
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await cap.acquire()
    cap.release()
    await queued
    assert (cap.active, cap.queued) == (1, 0)


async def test_cancelled_waiter_leaks_no_slot() -> None:
    cap = Capacity(1)
    await cap.acquire()
    task = asyncio.create_task(cap.acquire())
    await asyncio.sleep(0)
    cap.release()  # grants the slot to the waiter...
    task.cancel()  # ...which is cancelled before it runs: the slot is returned
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (cap.active, cap.queued) == (0, 0)
    queued = asyncio.create_task(cap.acquire())
    await asyncio.sleep(0)
    assert cap.active == 1
    await queued


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Capacity(0)
