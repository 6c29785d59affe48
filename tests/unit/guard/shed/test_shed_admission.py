"""LoadShedder: admission order, eviction, fairness, tenant caps, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest
from shed_harness import Harness

from headway.core import ManualClock, Overloaded, Priority, RecordingHooks, request_context
from headway.guard.shed import LoadShedder

S, D, C = Priority.SHEDDABLE, Priority.DEFAULT, Priority.CRITICAL


@pytest.fixture
def make(
    clock: ManualClock, hooks: RecordingHooks, harness: Callable[[LoadShedder], Harness]
) -> Callable[..., Harness]:
    def build(limit: int = 2, **kwargs: object) -> Harness:
        kwargs.setdefault("max_queue", 3)
        # CoDel off the way for ordering tests: target far above anything they wait.
        kwargs.setdefault("target_delay", 1000.0)
        kwargs.setdefault("interval", 1000.0)
        return harness(LoadShedder(limit, clock=clock, hooks=hooks, **kwargs))  # type: ignore[arg-type]

    return build


async def test_admits_below_limit_without_queueing(make: Callable[..., Harness]) -> None:
    h = make()
    await h.arrive("a", "b")
    assert h.admitted == ["a", "b"]
    assert h.shedder.inflight == 2
    assert h.shedder.queued == 0
    await h.arrive("c")
    assert h.admitted == ["a", "b"]
    assert h.shedder.queued == 1
    await h.finish("a")
    assert h.admitted == ["a", "b", "c"]
    assert h.done == ["a"]
    await h.close()
    snap = h.shedder.snapshot()
    assert snap["admitted"] == 3
    assert snap["completed"] == 3
    assert snap["rejected"] == 0


async def test_priority_mix_lowest_rejected_first_and_served_best_first(
    make: Callable[..., Harness], hooks: RecordingHooks
) -> None:
    h = make(limit=2, max_queue=3)
    await h.arrive("run1", "run2")
    await h.arrive(("s1", S), ("d1", D), ("c1", C))  # queue full: [s1, d1, c1]
    snap = h.shedder.snapshot()
    assert (snap["queued_sheddable"], snap["queued_default"], snap["queued_critical"]) == (1, 1, 1)
    await h.arrive(("s2", S))  # lowest itself: refused at once
    assert h.reasons() == {"s2": "queue_full"}
    await h.arrive(("c2", C))  # evicts the sheddable waiter
    assert h.reasons() == {"s2": "queue_full", "s1": "queue_full"}
    await h.arrive(("d2", D))  # now lowest queued is default: refused
    assert h.reasons()["d2"] == "queue_full"
    await h.arrive(("s3", S))
    assert h.reasons()["s3"] == "queue_full"
    # Critical before default, FIFO within critical.
    await h.finish("run1")
    await h.finish("run2")
    assert h.admitted == ["run1", "run2", "c1", "c2"]
    await h.finish("c1")
    assert h.admitted[-1] == "d1"
    assert h.shedder.snapshot()["shed_queue_full"] == 4
    assert hooks.counts[("shed", "shed", "shed.sheddable")] == 3
    assert hooks.counts[("shed", "shed", "shed.default")] == 1
    assert hooks.counts[("shed", "shed", "rejected.queue_full")] == 4
    await h.close()


async def test_full_queue_critical_arrival_evicts_newest_sheddable(
    make: Callable[..., Harness],
) -> None:
    h = make(limit=1, max_queue=3)
    await h.arrive("run")
    await h.arrive(("s1", S), ("s2", S), ("d1", D))
    await h.arrive(("c1", C))
    assert list(h.rejected) == ["s2"]  # the newest of the lowest priority
    assert h.shedder.queued == 3
    for key in ("run", "c1", "d1"):
        await h.finish(key)
    assert h.admitted == ["run", "c1", "d1", "s1"]
    await h.close()


async def test_zero_queue_rejects_at_limit(make: Callable[..., Harness]) -> None:
    h = make(limit=1, max_queue=0)
    await h.arrive("a", ("c", C))
    assert h.reasons() == {"c": "queue_full"}
    await h.close()


async def test_tenant_fairness_round_robin_within_priority(make: Callable[..., Harness]) -> None:
    h = make(limit=1, max_queue=200)
    await h.arrive("run")
    for i in range(100):
        h.start(f"a{i}", D, "A")
    await h.clock.advance(0)
    await h.arrive("b0", "b1", tenant="B")
    served: list[str] = []
    for key in ["run", "a0", "b0", "a1", "b1", "a2"]:
        await h.finish(key)
        served.append(h.admitted[-1])
    # B's two requests take every other slot instead of waiting behind A's 100.
    assert served == ["a0", "b0", "a1", "b1", "a2", "a3"]
    await h.close()


async def test_per_tenant_cap_counts_inflight_and_queued(make: Callable[..., Harness]) -> None:
    h = make(limit=2, max_queue=4, max_per_tenant=2)
    await h.arrive("a0", tenant="A")  # admitted
    await h.arrive("a1", tenant="A")  # admitted
    await h.arrive("a2", tenant="A")  # over the cap although nothing is queued
    assert h.reasons() == {"a2": "tenant_limit"}
    await h.arrive("b0", "b1", tenant="B")  # B is not affected by A
    assert h.shedder.queued == 2
    await h.arrive("b2", tenant="B")
    assert h.reasons()["b2"] == "tenant_limit"
    await h.finish("a0")  # frees a slot (to b0) and one unit of A's share
    assert h.admitted[-1] == "b0"
    await h.arrive("a3", tenant="A")
    assert "a3" not in h.rejected
    await h.close()


async def test_per_tenant_cap_as_fraction_of_capacity(make: Callable[..., Harness]) -> None:
    # ceil(0.5 * (limit 2 + queue 4)) = 3 per tenant.
    h = make(limit=2, max_queue=4, max_per_tenant=0.5)
    for i in range(4):
        await h.arrive(f"a{i}", tenant="A")
    assert h.reasons() == {"a3": "tenant_limit"}
    await h.close()


@pytest.mark.parametrize("bad", [0, -1, 0.0, 1.5, True])
def test_per_tenant_cap_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="max_per_tenant"):
        LoadShedder(2, max_per_tenant=bad)


async def test_waiter_dropped_exactly_at_deadline(make: Callable[..., Harness]) -> None:
    h = make(limit=1)
    clock = h.clock
    t0 = clock.now()
    await h.arrive("run")
    h.start("late", D, deadline=t0 + 0.5)
    await clock.advance(0.499)
    assert "late" not in h.rejected
    await clock.advance(0.001)
    assert h.reasons() == {"late": "deadline"}
    assert h.rejected_at["late"] == pytest.approx(t0 + 0.5, abs=1e-9)
    assert h.shedder.queued == 0
    await h.close()


async def test_min_time_to_serve_moves_the_drop_earlier(make: Callable[..., Harness]) -> None:
    h = make(limit=1, min_time_to_serve=0.2)
    clock = h.clock
    t0 = clock.now()
    await h.arrive("run")
    h.start("soon", D, deadline=t0 + 0.15)  # cannot be served in time: refused at once
    await clock.advance(0)
    assert h.reasons() == {"soon": "deadline"}
    assert h.rejected_at["soon"] == t0
    h.start("w", D, deadline=t0 + 0.5)
    await clock.advance(0.29)
    assert "w" not in h.rejected
    await clock.advance(0.01)
    assert h.reasons()["w"] == "deadline"
    await h.close()


async def test_admitted_waiter_cancels_its_deadline_timer(make: Callable[..., Harness]) -> None:
    h = make(limit=1)
    clock = h.clock
    await h.arrive("run")
    h.start("w", D, deadline=clock.now() + 10)
    await clock.advance(0)
    assert clock.pending_timers == 2  # w's deadline + the CoDel interval tick
    await h.finish("run")
    assert h.admitted == ["run", "w"]
    assert clock.pending_timers == 1  # deadline timer gone with the wait
    await clock.advance(20)
    assert h.rejected == {}
    await clock.advance(1000)  # the interval closes on an empty queue and stops ticking
    assert clock.pending_timers == 0
    await h.close()


async def test_cancelled_waiter_leaves_queue_and_slot_goes_to_next(
    make: Callable[..., Harness],
) -> None:
    h = make(limit=1, max_per_tenant=5)
    await h.arrive("run", "w1", "w2", tenant="A")
    assert h.shedder.queued == 2
    h.tasks["w1"].cancel()
    await h.clock.advance(0)
    assert h.shedder.queued == 1
    assert h.shedder.snapshot()["queued_default"] == 1
    await h.finish("run")
    assert h.admitted == ["run", "w2"]
    assert h.shedder.inflight == 1
    await h.close()
    assert h.shedder._tenant_load == {}


async def test_cancel_in_the_instant_of_handoff_passes_the_slot_on(
    make: Callable[..., Harness],
) -> None:
    h = make(limit=1)
    await h.arrive("run", "w1", "w2")
    h._gates["run"].set()
    # Let "run" release (handing its slot to w1), then cancel w1 before it gets to run.
    for _ in range(3):
        await asyncio.sleep(0)
        if h.done:
            break
    assert h.done == ["run"]
    assert h.admitted == ["run"]
    h.tasks["w1"].cancel()
    await h.clock.advance(0)
    assert h.admitted == ["run", "w2"]
    assert h.shedder.inflight == 1
    await h.close()


async def test_waiter_cancelled_while_queued_never_gets_a_slot(
    make: Callable[..., Harness],
) -> None:
    h = make(limit=1)
    await h.arrive("run", "w1")
    h.tasks["w1"].cancel()  # future cancelled; handler runs on the next turn
    h._gates["run"].set()
    await h.clock.advance(0)
    assert h.admitted == ["run"]
    assert h.shedder.inflight == 0
    await h.close()


async def test_call_and_wrap_follow_the_same_rules(clock: ManualClock) -> None:
    shedder = LoadShedder(1, max_queue=1, clock=clock)
    gate = asyncio.Event()

    async def service(x: int) -> int:
        await gate.wait()
        return x * 2

    wrapped = shedder.wrap(service)
    first = asyncio.create_task(wrapped(1))
    second = asyncio.create_task(shedder.call(service, 2))
    await clock.advance(0)
    with request_context(priority=S), pytest.raises(Overloaded) as info:
        await wrapped(3)
    assert info.value.reason == "queue_full"
    assert info.value.retry_after == pytest.approx(0.1)  # no rate yet: the CoDel interval
    gate.set()
    assert await first == 2
    assert await second == 4
    assert shedder.inflight == 0


async def test_retry_after_from_completion_rate(make: Callable[..., Harness]) -> None:
    h = make(limit=1, max_queue=1, target_delay=0.005, interval=0.1)
    clock = h.clock
    for i in range(10):  # ten completions in one second
        await h.arrive(f"r{i}")
        await clock.advance(0.1)
        await h.finish(f"r{i}")
    await h.arrive("run", "w", "x")
    # 10 completions / 1 s -> 10/s; queued 1 + this one = 2 ahead -> 0.2 s.
    assert h.rejected["x"].retry_after == pytest.approx(0.2)
    await h.close()


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        LoadShedder(1, max_queue=-1)
    with pytest.raises(ValueError, match="limit"):
        LoadShedder(0)
    with pytest.raises(ValueError, match="min_time_to_serve"):
        LoadShedder(1, min_time_to_serve=-1.0)
    assert math.isfinite(LoadShedder(1).snapshot()["limit"])
