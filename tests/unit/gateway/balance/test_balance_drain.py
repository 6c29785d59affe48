"""Draining an endpoint: no new picks, in-flight requests finish, panic ignores it."""

from __future__ import annotations

import random

import pytest

from headway.core import ManualClock, RecordingHooks
from headway.gateway.balance import Endpoint, EndpointSet
from headway.guard import BreakerConfig, CircuitBreaker


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


def _set(clock: ManualClock, hooks: RecordingHooks, n: int = 3) -> EndpointSet[None]:
    eps = [Endpoint(f"e{i}", None, clock=clock) for i in range(n)]
    return EndpointSet("pool", eps, rng=random.Random(0), clock=clock, hooks=hooks)


def test_drained_endpoint_is_never_picked_and_comes_back(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    pool = _set(clock, hooks)
    e0 = pool["e0"]
    assert e0 in {pool.pick() for _ in range(100)}
    assert pool.drain("e0") is e0
    assert e0.drained
    assert e0 not in pool.candidates
    assert all(pool.pick() is not e0 for _ in range(200))
    assert e0.snapshot()["drained"] == 1.0
    assert hooks.events == [("balancer", "pool/e0", "drained", 1.0)]
    pool.drain("e0")  # idempotent: no second event
    assert len(hooks.events) == 1
    pool.undrain("e0")
    assert not e0.drained
    assert e0 in {pool.pick() for _ in range(100)}
    assert hooks.events[-1] == ("balancer", "pool/e0", "undrained", 1.0)


def test_requests_in_flight_on_a_drained_endpoint_finish(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    pool = _set(clock, hooks, n=2)
    e0 = pool["e0"]
    start = e0.start()
    pool.drain("e0")
    assert e0.outstanding == 1
    clock.step(0.5)
    e0.finish(start)
    assert e0.outstanding == 0
    assert e0.requests == 1
    assert e0.failures == 0


def test_draining_every_endpoint_leaves_nothing_to_pick(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    pool = _set(clock, hooks, n=2)
    pool.drain("e0")
    pool.drain("e1")
    assert pool.candidates == []
    assert pool.pick() is None
    assert not pool.panic


def test_unknown_endpoint_raises_key_error(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks)
    with pytest.raises(KeyError):
        pool.drain("nope")


def test_panic_ignores_drained_endpoints(clock: ManualClock, hooks: RecordingHooks) -> None:
    """Panic spreads traffic over the endpoints still serving, never onto a drained one; and
    a drained endpoint does not count as unhealthy when judging panic."""
    config = BreakerConfig(minimum_number_of_calls=2, window_size=2, wait_duration_in_open=60)
    breakers = [CircuitBreaker(f"b{i}", config, clock=clock) for i in range(4)]
    eps = [Endpoint(f"e{i}", None, breaker=breakers[i], clock=clock) for i in range(4)]
    pool = EndpointSet("pool", eps, rng=random.Random(1), clock=clock, hooks=hooks)
    for breaker in breakers[:2]:
        for _ in range(2):
            breaker.on_failure(breaker.acquire(), 0.01)
    assert pool.candidates == [eps[2], eps[3]]  # 2 of 4 available: no panic
    assert not pool.panic
    pool.drain("e3")  # 1 of 3 serving available: panic, over the three serving endpoints
    assert set(pool.candidates) == {eps[0], eps[1], eps[2]}
    assert pool.panic
    assert eps[3] not in {pool.pick() for _ in range(300)}
    pool.undrain("e3")  # 2 of 4 again
    assert pool.candidates == [eps[2], eps[3]]
    assert not pool.panic
