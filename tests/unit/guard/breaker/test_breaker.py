from __future__ import annotations

import asyncio
from typing import Any

import pytest

from headway.core import (
    CircuitOpen,
    DeadlineExceeded,
    ManualClock,
    RateLimited,
    RecordingHooks,
    Stack,
    UpstreamError,
)
from headway.guard.breaker import BreakerConfig, BreakerState, CircuitBreaker, WindowType

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def small(**overrides: Any) -> BreakerConfig:
    settings: dict[str, Any] = {
        "window_size": 4,
        "minimum_number_of_calls": 4,
        "wait_duration_in_open": 10.0,
        "permitted_calls_in_half_open": 2,
        "slow_call_duration": 5.0,
    }
    settings.update(overrides)
    return BreakerConfig(**settings)


def outcomes(b: CircuitBreaker, pattern: str, duration: float = 0.0) -> None:
    """Feed finished calls through the permission API: F = failure, s = success."""
    for c in pattern:
        permit = b.acquire()
        if c == "F":
            b.on_failure(permit, duration)
        else:
            b.on_success(permit, duration)


def test_defaults_follow_the_documented_sources() -> None:
    c = BreakerConfig()
    assert c.failure_rate_threshold == 50.0
    assert c.slow_call_rate_threshold == 100.0
    assert c.slow_call_duration == 60.0
    assert c.window_type is WindowType.COUNT_BASED
    assert c.window_size == 100
    assert c.minimum_number_of_calls == 20
    assert c.wait_duration_in_open == 30.0
    assert c.permitted_calls_in_half_open == 10


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_rate_threshold": 0.0},
        {"slow_call_rate_threshold": 101.0},
        {"slow_call_duration": 0.0},
        {"window_size": 0},
        {"minimum_number_of_calls": 0},
        {"wait_duration_in_open": 0.0},
        {"open_backoff_multiplier": 0.5},
        {"max_wait_duration_in_open": 1.0},
        {"permitted_calls_in_half_open": 0},
    ],
)
def test_invalid_config_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**bad)


def test_closed_does_not_open_before_minimum_calls(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(window_size=10), clock=clock)
    outcomes(b, "FFF")
    assert b.state is CLOSED
    outcomes(b, "F")
    assert b.state is OPEN


def test_success_reaching_the_minimum_can_open(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)
    outcomes(b, "FFs")
    assert b.state is CLOSED
    outcomes(b, "s")  # 2 of 4 = 50% >= 50%
    assert b.state is OPEN


def test_count_window_forgets_old_failures(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)
    outcomes(b, "Fsss")  # 25%
    outcomes(b, "Fss")  # window: s s F s s -> last 4: s F s s = 25%
    assert b.state is CLOSED
    assert b.failure_rate == 25.0
    outcomes(b, "F")  # window F s s F -> 50%
    assert b.state is OPEN


def test_minimum_capped_by_count_window_size(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(window_size=2, minimum_number_of_calls=50), clock=clock)
    outcomes(b, "sF")
    assert b.state is OPEN


def test_time_window_opens_on_rate_over_recent_seconds(clock: ManualClock) -> None:
    config = small(window_type=WindowType.TIME_BASED, window_size=10, minimum_number_of_calls=4)
    b = CircuitBreaker("b", config, clock=clock)
    outcomes(b, "FFF")
    clock.step(10.0)  # those failures leave the window
    outcomes(b, "sss")
    assert b.state is CLOSED
    assert b.snapshot()["window_calls"] == 3
    outcomes(b, "F")  # 1 of 4
    assert b.state is CLOSED
    clock.step(9.5)
    outcomes(b, "F")  # 2 of 5 = 40%
    assert b.state is CLOSED
    clock.step(0.5)  # second 1010 (s s s F) leaves; only the last failure is left
    assert b.failure_rate == 100.0
    assert b.snapshot()["window_calls"] == 1
    outcomes(b, "sF")  # 2 failures of 3 calls, below the minimum of 4
    assert b.state is CLOSED
    outcomes(b, "F")  # 3 of 4 = 75%
    assert b.state is OPEN


def test_slow_calls_open_the_breaker(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(slow_call_rate_threshold=75.0), clock=clock)
    outcomes(b, "ss", duration=5.0)  # exactly the threshold is not slow
    outcomes(b, "ss", duration=5.5)
    assert b.state is CLOSED
    assert b.slow_call_rate == 50.0
    outcomes(b, "s", duration=5.0)  # evicts a fast call, adds a fast call: 50%
    assert b.state is CLOSED
    outcomes(b, "s", duration=6.0)  # window 5.5, 5.5, 5.0, 6.0 -> 3 of 4 = 75%
    assert b.state is OPEN
    assert (b.slow_calls, b.failures) == (3, 0)


def test_rejections_carry_remaining_open_time(clock: ManualClock, hooks: RecordingHooks) -> None:
    b = CircuitBreaker("b", small(), clock=clock, hooks=hooks)
    outcomes(b, "FFFF")
    clock.step(3.0)
    with pytest.raises(CircuitOpen) as info:
        b.acquire()
    assert info.value.retry_after == 7.0
    assert info.value.reason == "circuit_open"
    assert b.retry_after == 7.0
    assert b.try_acquire() is None
    assert b.snapshot()["rejected"] == 2
    assert hooks.names("breaker") == ["state.open", "rejected", "rejected"]


def test_half_open_admits_only_permitted_probes_then_closes(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    b = CircuitBreaker("b", small(), clock=clock, hooks=hooks)
    outcomes(b, "FFFF")
    clock.step(9.999)
    assert b.try_acquire() is None
    clock.step(0.001)
    assert b.state is OPEN  # lazily: nothing happens until a call arrives
    p1 = b.acquire()
    assert b.state is HALF_OPEN
    p2 = b.acquire()
    with pytest.raises(CircuitOpen) as info:
        b.acquire()
    assert info.value.retry_after is None
    b.on_success(p1, 0.1)
    assert b.state is HALF_OPEN
    b.on_success(p2, 0.1)
    assert b.state is CLOSED
    assert b.snapshot()["window_calls"] == 0
    assert hooks.names("breaker") == [
        "state.open",
        "rejected",
        "state.half_open",
        "rejected",
        "state.closed",
    ]


def test_half_open_reopens_with_growing_open_time(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(max_wait_duration_in_open=30.0), clock=clock)
    outcomes(b, "FFFF")
    for expected_wait in (20.0, 30.0, 30.0):
        clock.step(b.retry_after or 0.0)
        outcomes(b, "sF")  # 50% of probes failed
        assert b.state is OPEN
        assert b.retry_after == expected_wait
    clock.step(30.0)
    outcomes(b, "ss")
    assert b.state is CLOSED
    outcomes(b, "FFFF")
    assert b.retry_after == 10.0  # closing restored the base open time


def test_slow_probes_reopen(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)
    outcomes(b, "FFFF")
    clock.step(10.0)
    outcomes(b, "ss", duration=6.0)
    assert b.state is OPEN


def test_release_frees_a_probe_and_records_nothing(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)
    outcomes(b, "FFFF")
    clock.step(10.0)
    p1 = b.acquire()
    b.acquire()
    assert b.try_acquire() is None
    b.release(p1)
    p3 = b.acquire()
    assert b.try_acquire() is None
    b.on_success(p3, 0.0)
    assert b.state is HALF_OPEN
    assert b.snapshot()["calls"] == 5


def test_stale_outcomes_do_not_decide(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)
    old = b.acquire()  # admitted while CLOSED
    outcomes(b, "FFFF")
    clock.step(10.0)
    probe = b.acquire()
    b.on_success(old, 0.0)  # finishes during HALF_OPEN: not a probe
    b.release(old)  # nor does releasing it free a probe slot
    b.acquire()
    assert b.try_acquire() is None
    b.on_success(probe, 0.0)
    assert b.state is HALF_OPEN


def test_forced_states(clock: ManualClock, hooks: RecordingHooks) -> None:
    b = CircuitBreaker("b", small(), clock=clock, hooks=hooks)
    b.force_open()
    assert b.state is OPEN
    assert b.forced
    clock.step(1000.0)
    with pytest.raises(CircuitOpen) as info:
        b.acquire()
    assert info.value.retry_after is None
    b.force_closed()
    assert b.state is CLOSED
    outcomes(b, "FFFFFFFF")
    assert b.state is CLOSED  # disabled: nothing decides
    assert b.snapshot()["forced"] == 2
    b.reset()
    assert not b.forced
    outcomes(b, "FFFF")
    assert b.state is OPEN
    b.reset()
    assert b.state is CLOSED
    assert hooks.names("breaker") == [
        "state.open",
        "rejected",
        "state.closed",
        "state.open",
        "state.closed",
    ]


def test_state_listeners_run_in_order_after_hooks(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    b = CircuitBreaker("b", small(), clock=clock, hooks=hooks)
    seen: list[tuple[str, BreakerState, BreakerState, int]] = []

    @b.on_state_change
    def first(old: BreakerState, new: BreakerState) -> None:
        seen.append(("first", old, new, len(hooks.events)))

    b.on_state_change(lambda old, new: seen.append(("second", old, new, len(hooks.events))))
    outcomes(b, "FFFF")
    clock.step(10.0)
    outcomes(b, "ss")
    assert seen == [
        ("first", CLOSED, OPEN, 1),
        ("second", CLOSED, OPEN, 1),
        ("first", OPEN, HALF_OPEN, 2),
        ("second", OPEN, HALF_OPEN, 2),
        ("first", HALF_OPEN, CLOSED, 3),
        ("second", HALF_OPEN, CLOSED, 3),
    ]
    assert b.snapshot()["transitions"] == 3


def test_snapshot(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(window_size=10), clock=clock)
    outcomes(b, "Fs", duration=6.0)
    outcomes(b, "s")
    assert b.snapshot() == {
        "state": 0.0,
        "forced": 0.0,
        "calls": 3.0,
        "failures": 1.0,
        "slow_calls": 2.0,
        "rejected": 0.0,
        "transitions": 0.0,
        "window_calls": 3.0,
        "failure_rate": 100.0 / 3,
        "slow_call_rate": 200.0 / 3,
    }


# -- which errors count -----------------------------------------------------------------------


async def fail_with(b: CircuitBreaker, error: BaseException) -> None:
    async def service(_: None) -> None:
        raise error

    with pytest.raises(type(error)):
        await b.call(service, None)


async def test_error_classification(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(window_size=10, minimum_number_of_calls=10), clock=clock)
    await fail_with(b, UpstreamError(status=400))  # the client's fault: a success
    await fail_with(b, UpstreamError(status=429))  # failure
    await fail_with(b, UpstreamError(status=503))  # failure
    await fail_with(b, DeadlineExceeded())  # failure
    await fail_with(b, ValueError())  # failure
    await fail_with(b, RateLimited())  # another guard refused: ignored
    assert b.snapshot()["calls"] == 5
    assert b.snapshot()["failures"] == 4


async def test_custom_predicates(clock: ManualClock) -> None:
    config = small(is_failure=lambda e: isinstance(e, KeyError), is_ignored=lambda e: False)
    b = CircuitBreaker("b", config, clock=clock)
    await fail_with(b, ValueError())
    await fail_with(b, KeyError())
    await fail_with(b, RateLimited())
    assert (b.calls, b.failures) == (3, 1)


# -- the three ways to use it ---------------------------------------------------------------


async def test_async_with_measures_and_records(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)
    async with b:
        clock.step(6.0)
    with pytest.raises(ValueError):
        async with b:
            raise ValueError
    assert (b.calls, b.failures, b.slow_calls) == (2, 1, 1)
    outcomes(b, "FF")
    with pytest.raises(CircuitOpen):
        async with b:
            pytest.fail("the body must not run")


async def test_async_with_nested_blocks_keep_their_own_start(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(window_size=10), clock=clock)
    async with b:
        clock.step(4.0)
        async with b:
            clock.step(1.0)
        clock.step(1.0)
    assert (b.calls, b.slow_calls) == (2, 1)  # outer took 6 s, inner 1 s


async def test_concurrent_blocks_keep_their_own_start(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(window_size=10), clock=clock)

    async def block(seconds: float) -> None:
        async with b:
            await clock.sleep(seconds)

    tasks = [asyncio.create_task(block(s)) for s in (1.0, 6.0, 2.0)]
    await clock.advance(10.0)
    await asyncio.gather(*tasks)
    assert (b.calls, b.slow_calls) == (3, 1)


async def test_cancelled_probe_releases_its_permit(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(permitted_calls_in_half_open=1), clock=clock)
    outcomes(b, "FFFF")
    clock.step(10.0)
    started = asyncio.Event()

    async def probe() -> None:
        async with b:
            started.set()
            await clock.sleep(100.0)

    task = asyncio.create_task(probe())
    await started.wait()
    assert b.try_acquire() is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state is HALF_OPEN
    assert b.calls == 4
    permit = b.acquire()  # the slot is free again
    b.on_success(permit, 0.0)
    assert b.state is CLOSED


async def test_decorator_and_layer(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)

    @b
    async def double(x: int, *, plus: int = 0) -> int:
        return 2 * x + plus

    assert await double(3, plus=1) == 7

    async def boom(_: int) -> int:
        raise UpstreamError(status=500)

    service = Stack(b).wrap(boom)
    for _ in range(3):
        with pytest.raises(UpstreamError):
            await service(1)
    assert b.state is OPEN
    with pytest.raises(CircuitOpen):
        await double(1)
    with pytest.raises(CircuitOpen):
        await service(1)
    assert (b.calls, b.failures, b.rejected) == (4, 3, 2)


async def test_decorator_cancellation_records_nothing(clock: ManualClock) -> None:
    b = CircuitBreaker("b", small(), clock=clock)

    @b
    async def hang() -> None:
        await clock.sleep(100.0)

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.calls == 0


def test_repr_and_identity() -> None:
    b = CircuitBreaker("pool/ep1")
    assert b.kind == "breaker"
    assert b.name == "pool/ep1"
    assert repr(b) == "CircuitBreaker(name='pool/ep1', state=CLOSED)"
