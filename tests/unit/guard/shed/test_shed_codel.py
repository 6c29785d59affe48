"""LoadShedder's delay-based shedding (CoDel) and its feedback to the limit algorithm."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from shed_harness import Harness

from headway.core import (
    ManualClock,
    Priority,
    RecordingHooks,
    UpstreamError,
    request_context,
)
from headway.guard.shed import LoadShedder, QueueDelayDetector

S, D, C = Priority.SHEDDABLE, Priority.DEFAULT, Priority.CRITICAL


@pytest.fixture
def make(
    clock: ManualClock, hooks: RecordingHooks, harness: Callable[[LoadShedder], Harness]
) -> Callable[..., Harness]:
    def build(limit: int = 1, **kwargs: object) -> Harness:
        kwargs.setdefault("max_queue", 10)
        return harness(LoadShedder(limit, clock=clock, hooks=hooks, **kwargs))  # type: ignore[arg-type]

    return build


def test_detector_uses_the_minimum_delay_of_the_interval() -> None:
    d = QueueDelayDetector(target=0.005, interval=0.1)
    assert d.drop_after == pytest.approx(0.010)
    d.start_interval()
    for delay in (0.050, 0.004, 0.030):
        d.observe(delay)
    assert d.close_interval() is False  # one sample under target: a burst, not a standing queue
    assert d.last_min == pytest.approx(0.004)
    d.observe(0.006)
    d.observe(0.020)
    assert d.close_interval() is True
    assert d.overloaded
    assert d.load == pytest.approx(0.6)
    assert d.close_interval() is False  # no samples: no evidence, state kept
    assert d.overloaded
    d.observe(0.0)
    assert d.close_interval() is True
    assert not d.overloaded


async def test_standing_queue_flips_to_overloaded_and_sheds_by_delay(
    make: Callable[..., Harness], hooks: RecordingHooks
) -> None:
    h = make(limit=1, target_delay=0.005, interval=0.1)
    clock = h.clock
    t0 = clock.now()
    await h.arrive("run")
    await h.arrive(("w1", D), ("s1", S))  # the interval starts with the first waiter
    await clock.advance(0.092)
    await h.arrive(("w2", D))
    assert not h.shedder.overloaded
    await clock.advance(0.008)  # t0 + 100 ms: nothing left the queue; next-up waited 100 ms
    assert h.shedder.overloaded
    assert h.shedder.snapshot()["overloaded"] == 1
    assert h.shedder.snapshot()["queue_delay_min"] == pytest.approx(0.1)
    # Waited >= 10 ms: w1 (100 ms) and, because default is being shed, all sheddable (s1).
    assert h.reasons() == {"s1": "queue_delay", "w1": "queue_delay"}
    assert h.rejected_at["w1"] == pytest.approx(t0 + 0.1)
    # While overloaded: a sheddable arrival is refused at once, a critical one queues.
    await h.arrive(("s2", S), ("c1", C))
    assert h.reasons()["s2"] == "shed"
    assert "c1" not in h.rejected
    await clock.advance(0.0019)
    assert "w2" not in h.rejected
    await clock.advance(0.0001)  # w2 has now waited exactly 2 x target
    assert h.reasons()["w2"] == "queue_delay"
    assert h.rejected_at["w2"] == pytest.approx(t0 + 0.102)
    await clock.advance(0.003)
    await h.finish("run")  # c1 gets the slot after 5 ms; the queue is empty
    assert h.admitted == ["run", "c1"]
    assert h.shedder.snapshot()["queue_delay_last"] == pytest.approx(0.005)
    await clock.advance(0.095)  # t0 + 200 ms: the interval saw an empty queue -> recovered
    assert not h.shedder.overloaded
    assert hooks.names("shed").count("state.overloaded") == 1
    assert hooks.names("shed").count("state.normal") == 1
    await h.arrive(("s3", S))  # queues again instead of being shed
    assert "s3" not in h.rejected
    assert h.shedder.queued == 1
    assert hooks.counts[("shed", "shed", "rejected.queue_delay")] == 3
    assert hooks.counts[("shed", "shed", "rejected.shed")] == 1
    snap = h.shedder.snapshot()
    assert (snap["shed_queue_delay"], snap["shed_shed"]) == (3, 1)
    await h.close()


async def test_a_draining_burst_is_not_overload(make: Callable[..., Harness]) -> None:
    h = make(limit=1, target_delay=0.005, interval=0.1)
    clock = h.clock
    await h.arrive("run", "w1")
    await clock.advance(0.003)
    await h.finish("run")  # w1 served after 3 ms: under target
    await clock.advance(0.007)
    await h.arrive("w2")  # then sits for the rest of the interval
    await clock.advance(0.090)
    assert not h.shedder.overloaded  # the minimum of the interval (3 ms) was under target
    await clock.advance(0.100)
    assert h.shedder.overloaded  # a whole interval without a dequeue under target
    await h.close()


async def test_critical_waiters_survive_while_sheddable_ones_are_shed(
    make: Callable[..., Harness],
) -> None:
    h = make(limit=1, target_delay=0.005, interval=0.1)
    clock = h.clock
    await h.arrive("run", ("s1", S))
    await clock.advance(0.095)
    await h.arrive(("c1", C))
    await clock.advance(0.005)
    # Next-up is c1 (waited 5 ms, not above target) -> still normal.
    assert not h.shedder.overloaded
    await clock.advance(0.1)
    # Now c1 waited 105 ms: overloaded; c1 is shed only after everything below it.
    assert h.reasons() == {"s1": "queue_delay", "c1": "queue_delay"}
    assert list(h.rejected) == ["s1", "c1"]
    await h.close()


class RecordingLimit:
    """An adaptive-looking limit algorithm that records samples and can be moved by the test."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.samples: list[tuple[float, float, int, bool]] = []
        self._listeners: list[Callable[[int], None]] = []

    @property
    def limit(self) -> int:
        return self._limit

    def set(self, limit: int) -> None:
        self._limit = limit
        for listener in self._listeners:
            listener(limit)

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> None:
        self.samples.append((start, rtt, inflight, dropped))

    def subscribe(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)


async def test_feeds_samples_to_the_limit_algorithm(clock: ManualClock) -> None:
    algo = RecordingLimit(2)
    shedder = LoadShedder(algo, clock=clock)
    t0 = clock.now()

    async def body(duration: float, error: BaseException | None) -> None:
        async with shedder:
            await clock.sleep(duration)
            if error is not None:
                raise error

    ok = asyncio.create_task(body(0.3, None))
    await clock.advance(0.1)
    bad = asyncio.create_task(body(0.5, UpstreamError("busy", status=503)))
    await clock.advance(0.2)
    await ok
    await clock.advance(0.3)
    with pytest.raises(UpstreamError):
        await bad
    plain = asyncio.create_task(body(0.1, ValueError("bug")))
    await clock.advance(0.1)
    with pytest.raises(ValueError, match="bug"):
        await plain
    cancelled = asyncio.create_task(body(1.0, None))
    await clock.advance(0.1)
    cancelled.cancel()
    await clock.advance(0)
    assert algo.samples == [
        (t0, pytest.approx(0.3), 1, False),
        (t0 + 0.1, pytest.approx(0.5), 2, True),
        (pytest.approx(t0 + 0.6), pytest.approx(0.1), 1, False),
    ]
    assert shedder.inflight == 0


async def test_call_path_samples_too(clock: ManualClock) -> None:
    algo = RecordingLimit(1)
    shedder = LoadShedder(algo, clock=clock)

    async def service(x: int) -> int:
        await clock.sleep(0.25)
        return x

    task = asyncio.create_task(shedder.call(service, 7))
    await clock.advance(0.25)
    assert await task == 7
    assert algo.samples == [(pytest.approx(1000.0), pytest.approx(0.25), 1, False)]


async def test_limit_increase_admits_waiters_and_is_reported(
    clock: ManualClock, hooks: RecordingHooks, harness: Callable[[LoadShedder], Harness]
) -> None:
    algo = RecordingLimit(1)
    h = harness(LoadShedder(algo, clock=clock, hooks=hooks, max_queue=5))
    await h.arrive("run", "w1", ("w2", C), "w3")
    algo.set(3)
    await clock.advance(0)
    assert h.admitted == ["run", "w2", "w1"]
    assert h.shedder.snapshot()["limit"] == 3
    assert ("shed", "shed", "limit", 3) in hooks.events
    algo.set(1)  # a decrease only takes effect as requests finish
    await h.finish("run")
    await h.finish("w1")
    assert h.admitted == ["run", "w2", "w1"]
    await h.finish("w2")
    assert h.admitted[-1] == "w3"
    await h.close()


async def test_per_tenant_async_with_nesting_keeps_accounts(clock: ManualClock) -> None:
    outer = LoadShedder(2, clock=clock, max_per_tenant=1)
    inner = LoadShedder(RecordingLimit(2), clock=clock, max_per_tenant=1)
    with request_context(tenant="A"):
        async with outer:
            with request_context(tenant="B"):
                async with inner:
                    pass
            assert inner._tenant_load == {}
            assert outer._tenant_load == {"A": 1}
    assert outer._tenant_load == {}
    assert outer.inflight == inner.inflight == 0
