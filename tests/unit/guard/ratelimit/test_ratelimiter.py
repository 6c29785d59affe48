"""RateLimiter behaviour, exact on a ManualClock (rate 4/s -> 0.25 s per cell, binary-exact)."""

from __future__ import annotations

import asyncio
import math

import pytest

from headway.core import ManualClock, RateLimited, RecordingHooks, request_context
from headway.guard.ratelimit import MemoryStore, RateLimiter, RedisStore, tenant_key


def limiter(clock: ManualClock, **kw: object) -> RateLimiter:
    kw.setdefault("burst", 4)
    return RateLimiter(4, 1.0, clock=clock, **kw)  # type: ignore[arg-type]


def test_burst_then_exact_spacing(clock: ManualClock) -> None:
    rl = limiter(clock)
    for i in range(4):
        d = rl.try_acquire()
        assert d.allowed
        assert d.remaining == 3 - i
        assert d.reset_after == 0.25 * (i + 1)
    d = rl.try_acquire()
    assert (d.allowed, d.retry_after, d.remaining, d.reset_after) == (False, 0.25, 0.0, 1.0)
    clock.step(0.125)
    assert rl.try_acquire().retry_after == 0.125
    clock.step(0.125)
    assert rl.try_acquire().allowed
    assert rl.try_acquire().retry_after == 0.25
    # Steady state: exactly one cell per 0.25 s.
    for _ in range(8):
        clock.step(0.25)
        assert rl.try_acquire().allowed
        assert not rl.try_acquire().allowed
    assert rl.snapshot()["accepted"] == 4 + 1 + 8
    assert rl.snapshot()["rejected"] == 1 + 1 + 1 + 8


def test_idle_key_refills_to_burst_only(clock: ManualClock) -> None:
    rl = limiter(clock)
    assert rl.try_acquire().allowed
    clock.step(100.0)
    admitted = sum(rl.try_acquire().allowed for _ in range(10))
    assert admitted == 4


def test_default_burst_is_one_period(clock: ManualClock) -> None:
    assert RateLimiter(10, 60.0, clock=clock).burst == 10
    assert RateLimiter(0.5, clock=clock).burst == 1


def test_cost_greater_than_one(clock: ManualClock) -> None:
    rl = limiter(clock)
    d = rl.try_acquire(cost=3)
    assert (d.allowed, d.remaining, d.reset_after) == (True, 1.0, 0.75)
    d = rl.try_acquire(cost=2)
    assert (d.allowed, d.retry_after, d.remaining) == (False, 0.25, 1.0)
    assert rl.try_acquire(cost=1).allowed
    clock.step(0.5)
    assert rl.try_acquire(cost=2).allowed
    d = rl.try_acquire(cost=0.5)
    assert (d.allowed, d.retry_after) == (False, 0.125)


async def test_cost_above_burst_is_never_admitted(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    rl = limiter(clock, hooks=hooks)
    d = rl.try_acquire(cost=5)
    assert (d.allowed, d.retry_after) == (False, math.inf)
    with pytest.raises(RateLimited) as info:
        await rl.acquire(cost=5)
    assert info.value.reason == "cost_exceeds_burst"
    assert info.value.retry_after is None
    # Nothing was charged: a full burst is still available.
    assert rl.try_acquire(cost=4).allowed
    assert hooks.names("ratelimit") == ["rejected", "rejected"]


async def test_acquire_raises_with_exact_retry_after(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    rl = limiter(clock, hooks=hooks, name="tenant-rpm")
    for _ in range(4):
        d = await rl.acquire()
        assert d.allowed
    with pytest.raises(RateLimited) as info:
        await rl.acquire()
    assert info.value.retry_after == 0.25
    assert info.value.reason == "rate_limited"
    assert hooks.events == [("ratelimit", "tenant-rpm", "rejected", 1.0)]
    snap = rl.snapshot()
    assert (snap["accepted"], snap["rejected"], snap["keys"], snap["store_errors"]) == (4, 1, 1, 0)


async def test_async_with_wrap_and_decorator(clock: ManualClock) -> None:
    rl = limiter(clock, burst=3)
    async with rl:
        pass

    async def service(request: int) -> int:
        return request * 2

    assert await rl.wrap(service)(21) == 42

    @rl
    async def fn(x: int) -> int:
        return x + 1

    assert await fn(1) == 2
    with pytest.raises(RateLimited) as info:
        async with rl:
            pytest.fail("body must not run")
    assert info.value.retry_after == 0.25
    with pytest.raises(RateLimited):
        await rl.wrap(service)(1)
    assert (rl.accepted, rl.rejected) == (3, 2)


async def test_key_and_cost_callables_per_request(clock: ManualClock) -> None:
    rl = limiter(clock, key=lambda req: req["user"], cost=lambda req: req["tokens"])

    async def service(request: dict[str, object]) -> str:
        return "ok"

    guarded = rl.wrap(service)
    assert await guarded({"user": "a", "tokens": 4}) == "ok"
    assert await guarded({"user": "b", "tokens": 3}) == "ok"
    with pytest.raises(RateLimited) as info:
        await guarded({"user": "a", "tokens": 1})
    assert info.value.retry_after == 0.25
    assert await guarded({"user": "b", "tokens": 1}) == "ok"
    assert rl.snapshot()["keys"] == 2


async def test_tenant_key_uses_request_context(clock: ManualClock) -> None:
    rl = limiter(clock, key=tenant_key, burst=1)
    with request_context(tenant="acme"):
        async with rl:
            pass
        with pytest.raises(RateLimited):
            async with rl:
                pass
    with request_context(tenant="globex"):
        async with rl:
            pass
    async with rl:  # no tenant: the "default" key
        pass
    assert rl.store.tracked_keys() == 3
    assert isinstance(rl.store, MemoryStore)
    assert rl.store.tat("acme") == clock.now() + 0.25
    assert rl.store.tat("default") == clock.now() + 0.25


def test_namespace_isolates_limiters_sharing_a_store(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    rpm = limiter(clock, store=store, burst=1, namespace="rpm:")
    tpm = limiter(clock, store=store, burst=1, namespace="tpm:")
    assert rpm.try_acquire("t1").allowed
    assert tpm.try_acquire("t1").allowed
    assert not rpm.try_acquire("t1").allowed
    assert store.tat("rpm:t1") == clock.now() + 0.25


async def test_charge_into_debt_then_refund(clock: ManualClock) -> None:
    rl = limiter(clock)
    # The gateway charged an estimate of 2 and the call actually used 10: +8 after the fact.
    assert (await rl.acquire("t", cost=2)).allowed
    d = await rl.charge("t", 8)
    assert (d.allowed, d.remaining, d.reset_after) == (True, 0.0, 2.5)
    # In debt: a single cell must wait until tat - tau + T = now + 2.5 - 1 + 0.25.
    assert rl.try_acquire("t").retry_after == 1.75
    clock.step(1.75)
    assert rl.try_acquire("t").allowed
    # Over-estimate refunded: 3 cells back.
    d = await rl.refund("t", 3)
    assert (d.remaining, d.reset_after) == (3.0, 0.25)
    # Refunding beyond fresh leaves a fresh key (and drops it from memory).
    d = await rl.refund("t", 100)
    assert (d.remaining, d.reset_after) == (4.0, 0.0)
    assert rl.snapshot()["keys"] == 0
    assert rl.adjust_nowait("t", 1).reset_after == 0.25


def test_charge_never_rejects_and_refund_validates(clock: ManualClock) -> None:
    rl = limiter(clock)
    for _ in range(5):
        assert rl.adjust_nowait(None, 4).allowed
    assert rl.try_acquire().retry_after == 5 * 1.0 - 1.0 + 0.25
    with pytest.raises(ValueError, match="cost"):
        rl.try_acquire(cost=-1)
    with pytest.raises(ValueError, match="cost"):
        rl.try_acquire(cost=math.nan)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="period"):
        RateLimiter(1, period=0)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1, burst=0.5)


def test_try_acquire_needs_an_in_process_store() -> None:
    rl = RateLimiter(1, store=RedisStore(url="redis://127.0.0.1:1/0"))
    with pytest.raises(TypeError, match="await"):
        rl.try_acquire()


async def test_wait_mode_queues_in_order(clock: ManualClock) -> None:
    rl = limiter(clock, burst=1, wait=True)
    done: list[tuple[int, float]] = []

    async def worker(i: int) -> None:
        async with rl:
            done.append((i, clock.now()))

    start = clock.now()
    tasks = [asyncio.create_task(worker(i)) for i in range(4)]
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert done == [(0, start), (1, start + 0.25), (2, start + 0.5), (3, start + 0.75)]
    assert (rl.accepted, rl.waited, rl.rejected) == (4, 3, 0)


async def test_wait_mode_respects_deadline_and_max_wait(clock: ManualClock) -> None:
    rl = limiter(clock, burst=1, wait=True, max_wait=0.5)
    assert rl.try_acquire().allowed
    assert rl.try_acquire(cost=0).allowed
    # Next slot is 0.25 s away but the request has only 0.125 s left: rejected at once.
    with request_context(deadline=clock.now() + 0.125), pytest.raises(RateLimited) as info:
        await rl.acquire()
    assert info.value.retry_after == 0.25
    # max_wait 0.5 allows waiting for the slot at +0.25 and +0.5, not +0.75.
    t1 = asyncio.create_task(rl.acquire())
    t2 = asyncio.create_task(rl.acquire())
    await asyncio.sleep(0)
    with pytest.raises(RateLimited) as info:
        await rl.acquire()
    assert info.value.retry_after == 0.75
    await clock.advance(0.5)
    assert (await t1).allowed
    assert (await t2).allowed


async def test_cancelled_waiter_refunds_its_slot(clock: ManualClock) -> None:
    rl = limiter(clock, burst=1, wait=True)
    assert rl.try_acquire().allowed
    waiter = asyncio.create_task(rl.acquire())
    await asyncio.sleep(0)
    assert isinstance(rl.store, MemoryStore)
    assert rl.store.tat("default") == clock.now() + 0.5
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert rl.store.tat("default") == clock.now() + 0.25
    assert rl.accepted == 1
