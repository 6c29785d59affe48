"""The limiter's admission, queueing, deadlines, cancellation and sampling, on a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from headway.core import (
    DeadlineExceeded,
    ManualClock,
    Overloaded,
    RecordingHooks,
    UpstreamError,
    UpstreamTimeout,
    request_context,
)
from headway.guard.concurrency import (
    AIMDLimit,
    Bulkhead,
    ConcurrencyLimiter,
    FixedLimit,
    Gradient2Limit,
    LimitAlgorithm,
    is_overload_signal,
)


class SettableLimit:
    """A LimitAlgorithm whose limit the test sets, recording the samples it is fed."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._listeners: list[Callable[[int], None]] = []
        self.samples: list[tuple[float, float, int, bool]] = []

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


def _protocol_check(limit: SettableLimit) -> LimitAlgorithm:
    return limit  # mypy: the test double satisfies the protocol


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def hold(
    limiter: ConcurrencyLimiter, clock: ManualClock, seconds: float, log: list[str], tag: str
) -> asyncio.Task[str]:
    """Start a task that holds a slot of ``limiter`` for ``seconds``, logging start and end."""

    async def run() -> str:
        async with limiter:
            log.append(f"start {tag}")
            await clock.sleep(seconds)
            log.append(f"end {tag}")
        return tag

    return asyncio.create_task(run())


async def test_bulkhead_admits_n_queues_k_rejects_rest(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    bulkhead = Bulkhead(2, max_queue=3, clock=clock, hooks=hooks)
    log: list[str] = []
    tasks = [hold(bulkhead, clock, 1.0, log, str(i)) for i in range(7)]
    await _settle()
    assert (bulkhead.inflight, bulkhead.queued) == (2, 3)
    rejected = [t for t in tasks if t.done()]
    assert len(rejected) == 2
    for task in rejected:
        error = task.exception()
        assert isinstance(error, Overloaded)
        assert error.reason == "queue_full"
    assert hooks.names("bulkhead") == ["rejected.queue_full", "rejected.queue_full"]
    await clock.advance(1.0)
    assert (bulkhead.inflight, bulkhead.queued) == (2, 1)
    await clock.advance(1.0)
    await clock.advance(1.0)
    assert (bulkhead.inflight, bulkhead.queued) == (0, 0)
    assert bulkhead.snapshot() == {
        "limit": 2,
        "inflight": 0,
        "queued": 0,
        "max_queue": 3,
        "accepted": 5,
        "rejected": 2,
        "queue_timeouts": 0,
        "dropped_samples": 0,
    }
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_no_queue_rejects_with_concurrency_limit(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, clock=clock)
    log: list[str] = []
    first = hold(limiter, clock, 1.0, log, "a")
    await _settle()
    with pytest.raises(Overloaded) as info:
        async with limiter:
            pytest.fail("admitted past the limit")
    assert info.value.reason == "concurrency_limit"
    assert info.value.retry_after is None  # nothing has completed yet: no evidence
    await clock.advance(1.0)
    assert await first == "a"


async def test_envoy_style_limit_one_ten_concurrent(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(FixedLimit(1), clock=clock)
    log: list[str] = []
    tasks = [hold(limiter, clock, 1.0, log, str(i)) for i in range(10)]
    await clock.advance(1.0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    admitted = [r for r in results if isinstance(r, str)]
    rejected = [r for r in results if isinstance(r, Overloaded)]
    assert len(admitted) == 1
    assert len(rejected) == 9
    assert {r.reason for r in rejected} == {"concurrency_limit"}
    assert limiter.snapshot()["accepted"] == 1
    assert limiter.snapshot()["rejected"] == 9


async def test_waiters_are_served_fifo(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=10, clock=clock)
    log: list[str] = []
    tasks = [hold(limiter, clock, 1.0, log, str(i)) for i in range(5)]
    await _settle()
    for _ in range(5):
        await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert log == [f"{edge} {i}" for i in range(5) for edge in ("start", "end")]


async def test_freed_slot_goes_to_waiter_not_to_new_arrival(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=10, clock=clock)
    log: list[str] = []
    first = hold(limiter, clock, 1.0, log, "first")
    await _settle()
    waiter = hold(limiter, clock, 1.0, log, "waiter")
    await _settle()
    await clock.advance(1.0)  # first ends; the slot is handed to the waiter at once
    assert limiter.inflight == 1
    assert limiter.queued == 0
    late = hold(limiter, clock, 1.0, log, "late")
    await _settle()
    assert limiter.queued == 1  # the newcomer queues behind instead of barging
    await clock.advance(1.0)
    await clock.advance(1.0)
    await asyncio.gather(first, waiter, late)
    assert [entry for entry in log if entry.startswith("start")] == [
        "start first",
        "start waiter",
        "start late",
    ]


async def test_queue_timeout(clock: ManualClock, hooks: RecordingHooks) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=5, queue_timeout=0.5, clock=clock, hooks=hooks)
    log: list[str] = []
    first = hold(limiter, clock, 10.0, log, "first")
    await _settle()
    waiter = hold(limiter, clock, 1.0, log, "waiter")
    await clock.advance(0.499)
    assert not waiter.done()
    await clock.advance(0.001)
    assert waiter.done()
    error = waiter.exception()
    assert isinstance(error, Overloaded)
    assert error.reason == "queue_timeout"
    assert (limiter.inflight, limiter.queued) == (1, 0)
    snap = limiter.snapshot()
    assert (snap["queue_timeouts"], snap["rejected"]) == (1, 1)
    assert hooks.names("concurrency") == ["rejected.queue_timeout"]
    await clock.advance(9.5)
    await first
    assert limiter.inflight == 0
    assert clock.pending_timers == 0


async def test_wait_is_bounded_by_request_deadline(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=5, queue_timeout=10.0, clock=clock, hooks=hooks)
    log: list[str] = []
    first = hold(limiter, clock, 5.0, log, "first")
    await _settle()

    async def with_deadline() -> None:
        with request_context(timeout=2.0, clock=clock):
            async with limiter:
                log.append("deadline waiter ran")

    waiter = asyncio.create_task(with_deadline())
    await clock.advance(1.999)
    assert not waiter.done()
    await clock.advance(0.001)
    assert waiter.done()
    assert isinstance(waiter.exception(), DeadlineExceeded)
    assert limiter.queued == 0
    assert limiter.snapshot()["queue_timeouts"] == 0
    assert hooks.names("concurrency") == ["rejected.deadline"]
    await clock.advance(3.0)
    await first
    assert "deadline waiter ran" not in log
    assert limiter.inflight == 0


async def test_expired_deadline_is_rejected_at_once(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=5, clock=clock)
    log: list[str] = []
    first = hold(limiter, clock, 1.0, log, "first")
    await _settle()
    with request_context(deadline=clock.now(), clock=clock), pytest.raises(DeadlineExceeded):
        async with limiter:
            pytest.fail("admitted past its deadline")
    assert limiter.queued == 0
    assert clock.pending_timers == 1  # only the holder's sleep
    await clock.advance(1.0)
    await first


async def test_deadline_does_not_matter_below_the_limit(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, clock=clock)
    with request_context(deadline=clock.now() - 1, clock=clock):
        async with limiter:
            assert limiter.inflight == 1  # admission is free; the deadline is the body's concern
    assert limiter.inflight == 0


async def test_cancel_while_queued_frees_nothing_and_leaks_nothing(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=5, clock=clock)
    log: list[str] = []
    first = hold(limiter, clock, 1.0, log, "first")
    await _settle()
    doomed = hold(limiter, clock, 1.0, log, "doomed")
    after = hold(limiter, clock, 1.0, log, "after")
    await _settle()
    assert limiter.queued == 2
    doomed.cancel()
    await _settle()
    assert (limiter.inflight, limiter.queued) == (1, 1)
    await clock.advance(1.0)
    assert (limiter.inflight, limiter.queued) == (1, 0)
    await clock.advance(1.0)
    await first
    await after
    assert doomed.cancelled()
    assert "start doomed" not in log
    assert limiter.inflight == 0
    assert clock.pending_timers == 0


async def test_cancel_in_the_instant_a_slot_is_handed_over(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=5, clock=clock)
    log: list[str] = []
    first = hold(limiter, clock, 1.0, log, "first")
    await _settle()
    doomed = hold(limiter, clock, 1.0, log, "doomed")
    after = hold(limiter, clock, 1.0, log, "after")
    await _settle()
    # Release by hand-off without letting the woken waiter run, then cancel it.
    clock.step(1.0)  # fires first's sleep timer; first has not resumed yet
    await asyncio.sleep(0)  # first resumes, exits, hands its slot to "doomed"
    assert (limiter.inflight, limiter.queued) == (1, 1)
    doomed.cancel()
    await _settle()
    assert doomed.cancelled()
    # The slot doomed was given is passed on to "after", not lost and not doubled.
    assert (limiter.inflight, limiter.queued) == (1, 0)
    await clock.advance(1.0)
    await first
    await after
    assert limiter.inflight == 0
    assert "start doomed" not in log


async def test_cancel_while_running_releases_exactly_once(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, max_queue=5, clock=clock)
    log: list[str] = []
    running = hold(limiter, clock, 10.0, log, "running")
    await _settle()
    waiting = hold(limiter, clock, 1.0, log, "waiting")
    await _settle()
    running.cancel()
    await _settle()
    assert running.cancelled()
    assert (limiter.inflight, limiter.queued) == (1, 0)  # handed to the waiter, once
    await clock.advance(1.0)
    await waiting
    assert limiter.inflight == 0
    # The slot is reusable exactly once more.
    async with limiter:
        assert limiter.inflight == 1
    assert limiter.inflight == 0


async def test_cancel_while_running_via_call(clock: ManualClock) -> None:
    algo = SettableLimit(1)
    limiter = ConcurrencyLimiter(algo, clock=clock)

    async def slow(request: int) -> int:
        await clock.sleep(10)
        return request

    task = asyncio.create_task(limiter.call(slow, 1))
    await _settle()
    assert limiter.inflight == 1
    task.cancel()
    await _settle()
    assert limiter.inflight == 0
    assert algo.samples == []  # a cancelled call says nothing about latency


async def test_limit_increase_wakes_waiters(clock: ManualClock, hooks: RecordingHooks) -> None:
    algo = SettableLimit(1)
    limiter = ConcurrencyLimiter(algo, max_queue=10, clock=clock, hooks=hooks)
    log: list[str] = []
    tasks = [hold(limiter, clock, 5.0, log, str(i)) for i in range(4)]
    await _settle()
    assert (limiter.inflight, limiter.queued) == (1, 3)
    algo.set(3)
    await _settle()
    assert (limiter.inflight, limiter.queued) == (3, 1)
    assert log == ["start 0", "start 1", "start 2"]
    algo.set(1)  # shrinking admits nobody new; finishing calls free slots without hand-off
    await clock.advance(5.0)
    assert (limiter.inflight, limiter.queued) == (1, 0)
    await clock.advance(5.0)
    await asyncio.gather(*tasks)
    assert ("concurrency", "concurrency", "limit", 3.0) in hooks.events
    assert [e[3] for e in hooks.events if e[2] == "limit"] == [3.0, 1.0]


async def test_async_with_feeds_samples(clock: ManualClock) -> None:
    algo = SettableLimit(5)
    limiter = ConcurrencyLimiter(algo, clock=clock)
    start = clock.now()
    async with limiter:
        clock.step(0.25)

    async def failing(status: int, seconds: float) -> None:
        async with limiter:
            clock.step(seconds)
            raise UpstreamError("failed", status=status)

    with pytest.raises(UpstreamError):
        await failing(503, 0.5)
    with pytest.raises(UpstreamError):
        await failing(400, 0.0)
    assert algo.samples == [
        (start, 0.25, 1, False),
        (start + 0.25, 0.5, 1, True),
        (start + 0.75, 0.0, 1, False),
    ]
    assert limiter.snapshot()["dropped_samples"] == 1
    assert limiter.inflight == 0


async def test_call_feeds_samples_with_inflight_at_admission(clock: ManualClock) -> None:
    algo = SettableLimit(5)
    limiter = ConcurrencyLimiter(algo, clock=clock)

    async def work(seconds: float) -> float:
        await clock.sleep(seconds)
        return seconds

    service = limiter.wrap(work)
    a = asyncio.ensure_future(service(2.0))
    await _settle()
    b = asyncio.ensure_future(service(1.0))
    await clock.advance(2.0)
    assert (await a, await b) == (2.0, 1.0)
    start = 1000.0
    assert algo.samples == [(start, 1.0, 2, False), (start, 2.0, 1, False)]


def test_overload_signal_predicate() -> None:
    assert is_overload_signal(UpstreamTimeout())
    assert is_overload_signal(UpstreamError(status=503))
    assert is_overload_signal(UpstreamError(status=429))
    assert is_overload_signal(DeadlineExceeded())
    assert is_overload_signal(Overloaded())
    assert not is_overload_signal(UpstreamError(status=500))
    assert not is_overload_signal(UpstreamError(status=400))
    assert not is_overload_signal(ValueError())


async def test_custom_drop_predicate(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(
        AIMDLimit(initial_limit=10, min_limit=1), clock=clock, is_drop=lambda e: True
    )
    with pytest.raises(ValueError):
        async with limiter:
            raise ValueError("counted as a drop here")
    assert limiter.limit == 9


async def test_aimd_drops_shrink_the_enforced_limit(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(AIMDLimit(initial_limit=4, min_limit=1), clock=clock)

    async def failing(_: None) -> None:
        raise UpstreamTimeout("slow")

    for expected in (3, 2, 1, 1):
        with pytest.raises(UpstreamTimeout):
            await limiter.call(failing, None)
        assert limiter.limit == expected
    assert limiter.snapshot()["dropped_samples"] == 4


async def test_gradient2_limiter_grows_under_load_at_steady_latency(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(Gradient2Limit(initial_limit=2, min_limit=1), clock=clock)

    async def work() -> None:
        async with limiter:
            await clock.sleep(1.0)

    for _ in range(5):
        tasks = [asyncio.create_task(work()) for _ in range(limiter.limit)]
        await clock.advance(1.0)
        await asyncio.gather(*tasks)
    assert limiter.limit > 2


async def test_retry_after_from_completion_rate(clock: ManualClock) -> None:
    bulkhead = Bulkhead(2, max_queue=1, clock=clock)
    log: list[str] = []
    for _ in range(2):
        tasks = [hold(bulkhead, clock, 0.5, log, "x") for _ in range(2)]
        await clock.advance(0.5)
        await asyncio.gather(*tasks)
    # 4 completions in the first 1.0 s: 4 per second.
    long = [hold(bulkhead, clock, 10.0, log, "long") for _ in range(3)]
    await _settle()
    assert (bulkhead.inflight, bulkhead.queued) == (2, 1)
    with pytest.raises(Overloaded) as info:
        async with bulkhead:
            pass
    assert info.value.reason == "queue_full"
    assert info.value.retry_after == pytest.approx(2 / 4)  # second in line, 4 per second
    await clock.advance(20.0)
    await asyncio.gather(*long)


async def test_decorator_and_int_limit(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(3, clock=clock)
    assert isinstance(limiter.algorithm, FixedLimit)

    @limiter
    async def double(x: int) -> int:
        assert limiter.inflight == 1
        return 2 * x

    assert await double(4) == 8
    assert limiter.inflight == 0


def test_validation() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimiter(1, max_queue=-1)
    with pytest.raises(ValueError):
        ConcurrencyLimiter(1, queue_timeout=-1.0)
    with pytest.raises(ValueError):
        Bulkhead(0)
    _protocol_check(SettableLimit(1))


async def test_queued_call_is_timed_from_admission_not_arrival(clock: ManualClock) -> None:
    algo = SettableLimit(1)
    limiter = ConcurrencyLimiter(algo, max_queue=1, clock=clock)
    log: list[str] = []
    first = hold(limiter, clock, 1.0, log, "first")
    await _settle()
    second = hold(limiter, clock, 0.5, log, "second")
    await clock.advance(1.0)
    await clock.advance(0.5)
    await asyncio.gather(first, second)
    assert algo.samples == [(1000.0, 1.0, 1, False), (1001.0, 0.5, 1, False)]


async def test_async_with_binds_none_like_a_semaphore(clock: ManualClock) -> None:
    limiter = ConcurrencyLimiter(1, clock=clock)
    async with limiter as bound:
        assert bound is None
        assert limiter.inflight == 1
