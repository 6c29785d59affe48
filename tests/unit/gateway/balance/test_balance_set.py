"""EndpointSet: outlier ejection, readmission, the ejection cap, panic mode, breakers, events."""

from __future__ import annotations

import random
from typing import Any

import pytest

from headway.core import ManualClock, RecordingHooks
from headway.gateway.balance import Endpoint, EndpointSet, OutlierPolicy, PrefixAffinity
from headway.guard import BreakerConfig, CircuitBreaker


def _set(
    clock: ManualClock,
    hooks: RecordingHooks,
    n: int = 3,
    outlier: OutlierPolicy | None = None,
    **kw: Any,
) -> EndpointSet[None]:
    eps = [Endpoint(f"e{i}", None, clock=clock) for i in range(n)]
    return EndpointSet(
        "pool",
        eps,
        outlier=outlier or OutlierPolicy(),
        rng=random.Random(0),
        clock=clock,
        hooks=hooks,
        **kw,
    )


def _fail(ep: Endpoint[Any], times: int = 1) -> None:
    for _ in range(times):
        ep.finish(ep.start(), latency=0.01, ok=False, error_kind="5xx")


def _ok(ep: Endpoint[Any]) -> None:
    ep.finish(ep.start(), latency=0.01)


def test_ejected_after_exactly_five_consecutive_failures(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    pool = _set(clock, hooks)
    e0 = pool["e0"]
    _fail(e0, 4)
    assert not e0.ejected
    assert hooks.names() == []
    _fail(e0)
    assert e0.ejected
    assert e0.times_ejected == 1
    assert hooks.events == [("balancer", "pool/e0", "ejected", 30.0)]
    assert e0 not in pool.candidates
    assert all(pool.pick() is not e0 for _ in range(100))


def test_a_success_resets_the_failure_run(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks)
    e0 = pool["e0"]
    _fail(e0, 4)
    _ok(e0)
    _fail(e0, 4)
    assert not e0.ejected
    _fail(e0)
    assert e0.ejected


def test_readmitted_at_exactly_the_ejection_time(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks)
    e0 = pool["e0"]
    _fail(e0, 5)
    clock.step(29.999)
    assert e0 not in pool.candidates
    clock.step(0.001)
    assert clock.now() == e0.ejected_until
    assert e0 in pool.candidates
    assert hooks.names() == ["ejected", "readmitted"]
    assert pool.readmissions == 1


def test_repeat_ejections_grow_linearly_and_cap(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks)
    e0 = pool["e0"]
    seen = []
    for _ in range(12):
        _fail(e0, 5)
        seen.append(e0.ejected_until - clock.now())
        clock.step(e0.ejected_until - clock.now())
        assert e0 in pool.candidates  # readmitted; fails again at once (no decay time)
    # base 30 s x times ejected: the second is double the first; capped at 300 s.
    assert seen == [30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0, 300.0, 300]


def test_times_ejected_decays_by_one_per_healthy_interval(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    pool = _set(clock, hooks)
    e0 = pool["e0"]
    for _ in range(3):
        _fail(e0, 5)
        clock.step(e0.ejected_until - clock.now())
    assert e0.times_ejected == 3
    pool.candidates  # noqa: B018 - process the readmission
    clock.step(19.999)  # one full 10 s interval back in rotation
    assert pool.times_ejected(e0) == 2
    assert pool.endpoint_snapshots()["e0"]["times_ejected"] == 2.0
    clock.step(0.001)  # two full intervals
    assert pool.times_ejected(e0) == 1
    _fail(e0, 5)
    assert e0.times_ejected == 2
    assert e0.ejected_until - clock.now() == 60.0


def test_jitter_is_added_from_the_rng(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks, outlier=OutlierPolicy(max_ejection_jitter=5.0))
    e0 = pool["e0"]
    _fail(e0, 5)
    rng = random.Random(0)
    assert e0.ejected_until - clock.now() == pytest.approx(30.0 + rng.random() * 5.0)


def test_max_ejection_percent_is_respected(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks, n=4)  # 50% of 4: at most two ejected at once
    e0, e1, e2, _ = pool.endpoints
    _fail(e0, 5)
    _fail(e1, 5)
    _fail(e2, 5)
    assert (e0.ejected, e1.ejected, e2.ejected) == (True, True, False)
    assert pool.ejections_overflow == 1
    assert hooks.names() == ["ejected", "ejected", "ejection_overflow"]
    _fail(e2, 3)  # still blocked, and reported once per run
    assert pool.ejections_overflow == 1
    clock.step(30.0)  # e0 and e1 readmitted: the next failure of e2 ejects it
    _fail(e2)
    assert e2.ejected


def test_always_one_ejection_in_a_pool_of_two(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks, n=2, outlier=OutlierPolicy(max_ejection_percent=10.0))
    e0, e1 = pool.endpoints
    _fail(e0, 5)
    _fail(e1, 5)
    assert (e0.ejected, e1.ejected) == (True, False)


def test_a_single_endpoint_is_never_ejected(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks, n=1)
    _fail(pool["e0"], 20)
    assert not pool["e0"].ejected
    assert pool.pick() is pool["e0"]


def test_late_failures_of_an_ejected_endpoint_do_not_re_eject(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    pool = _set(clock, hooks)
    e0 = pool["e0"]
    _fail(e0, 5)
    until = e0.ejected_until
    _fail(e0, 7)
    assert e0.ejected_until == until
    assert pool.ejections == 1


def test_outlier_none_disables_ejection(clock: ManualClock, hooks: RecordingHooks) -> None:
    eps = [Endpoint(f"e{i}", None, clock=clock) for i in range(3)]
    pool = EndpointSet("pool", eps, outlier=None, clock=clock, hooks=hooks)
    _fail(eps[0], 50)
    assert not eps[0].ejected
    assert pool.ejections == 0
    assert eps[0] in pool.candidates


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.on_failure(breaker.acquire(), 0.01)


def test_panic_below_threshold_spreads_over_all(clock: ManualClock, hooks: RecordingHooks) -> None:
    config = BreakerConfig(minimum_number_of_calls=2, window_size=2, wait_duration_in_open=60)
    breakers = [CircuitBreaker(f"b{i}", config, clock=clock) for i in range(4)]
    eps = [Endpoint(f"e{i}", None, breaker=breakers[i], clock=clock) for i in range(4)]
    pool = EndpointSet("pool", eps, rng=random.Random(1), clock=clock, hooks=hooks)
    _open(breakers[0])
    _open(breakers[1])  # 2 of 4 available: 50% is not below the threshold
    assert not pool.panic
    assert pool.candidates == [eps[2], eps[3]]
    assert pool.healthy_count == 2
    _open(breakers[2])  # 1 of 4 available: 25% < 50%: panic, all endpoints are candidates
    assert pool.candidates == eps
    assert pool.panic
    assert {pool.pick() for _ in range(200)} == set(eps)
    assert ("balancer", "pool", "panic", 1.0) in hooks.events
    assert pool.snapshot()["panic"] == 1.0
    clock.step(60.0)  # breakers' open time over: available for probes again, panic ends
    assert pool.healthy_count == 4
    assert not pool.panic
    assert hooks.events[-1] == ("balancer", "pool", "panic", 0.0)


def test_breaker_open_takes_endpoint_out_until_probe_time(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    config = BreakerConfig(minimum_number_of_calls=2, window_size=2, wait_duration_in_open=10)
    breaker = CircuitBreaker("b", config, clock=clock)
    eps = [
        Endpoint("e0", None, breaker=breaker, clock=clock),
        Endpoint("e1", None, clock=clock),
        Endpoint("e2", None, clock=clock),
    ]
    pool = EndpointSet("pool", eps, rng=random.Random(2), clock=clock, hooks=hooks)
    _open(breaker)
    assert not eps[0].available
    assert all(pool.pick() is not eps[0] for _ in range(100))
    clock.step(10.0)
    assert eps[0].available
    assert eps[0] in pool.candidates
    breaker.reset()
    breaker.force_open()
    assert eps[0].breaker_until == float("inf")
    assert eps[0] not in pool.candidates
    breaker.force_closed()
    assert eps[0] in pool.candidates
    # Forcing an already-open breaker changes no state, so no listener runs: sync by hand.
    breaker.reset()
    _open(breaker)
    breaker.force_open()
    clock.step(10.0)
    assert eps[0] in pool.candidates
    pool.sync_breaker(eps[0])
    assert eps[0] not in pool.candidates


def test_pick_excludes_tried_and_uses_strategy_key(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    eps = [Endpoint(f"e{i}", None, clock=clock) for i in range(3)]
    pool = EndpointSet("pool", eps, strategy=PrefixAffinity(), clock=clock, hooks=hooks)
    home = pool.pick("user-1")
    assert home is not None
    assert pool.pick("user-1") is home
    assert pool.pick("user-1", exclude={home}) is not home
    # Ejecting the home endpoint moves the key; readmission brings it back.
    _fail(home, 5)
    moved = pool.pick("user-1")
    assert moved is not home
    clock.step(30.0)
    assert pool.pick("user-1") is home


def test_empty_pool_picks_none(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool: EndpointSet[None] = EndpointSet("pool", clock=clock, hooks=hooks)
    assert pool.pick() is None
    assert not pool.panic


def test_membership_and_weights(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks, n=2)
    with pytest.raises(ValueError, match="already has"):
        pool.add(Endpoint("e0", None, clock=clock))
    e2 = pool.add(Endpoint("e2", None, clock=clock))
    assert e2.qualified_name == "pool/e2"
    assert e2 in pool.candidates
    pool.set_weight("e2", 5)
    assert pool["e2"].weight == 5.0
    assert pool.remove("e2") is e2
    assert pool.remove("e2") is None
    assert e2 not in pool.candidates
    _fail(e2, 10)  # no longer reports to the set
    assert not e2.ejected
    assert len(pool) == 2


def test_snapshots(clock: ManualClock, hooks: RecordingHooks) -> None:
    pool = _set(clock, hooks)
    pool["e1"].start()
    _fail(pool["e0"], 5)
    snap = pool.snapshot()
    assert snap["endpoints"] == 3.0
    assert snap["available"] == 2.0
    assert snap["ejected"] == 1.0
    assert snap["outstanding"] == 1.0
    assert snap["ejections"] == 1.0
    per = pool.endpoint_snapshots()
    assert per["e0"]["ejected"] == 1.0
    assert per["e0"]["available"] == 0.0
    assert per["e0"]["times_ejected"] == 1.0
    assert per["e1"]["outstanding"] == 1.0
    assert set(per["e2"]) >= {"outstanding", "ewma_ms", "ejected", "times_ejected", "weight"}


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        OutlierPolicy(consecutive_failures=0)
    with pytest.raises(ValueError):
        OutlierPolicy(max_ejection_percent=101)
    with pytest.raises(ValueError):
        EndpointSet("p", panic_threshold=-1)
