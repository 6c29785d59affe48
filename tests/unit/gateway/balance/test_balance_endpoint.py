"""Endpoint bookkeeping and the peak-EWMA estimate, exactly, on a manual clock."""

from __future__ import annotations

import math

import pytest

from headway.core import ManualClock
from headway.gateway.balance import Endpoint


def test_start_and_finish_track_outstanding_and_latency(clock: ManualClock) -> None:
    ep = Endpoint("a", None, clock=clock, default_rtt=0.0)
    s1 = ep.start()
    s2 = ep.start()
    assert ep.outstanding == 2
    assert s1 == clock.now()
    clock.step(0.25)
    ep.finish(s1)  # latency measured from start: 0.25 s, above the 0 estimate -> peak
    assert ep.outstanding == 1
    assert ep.ewma == 0.25
    ep.release()
    assert ep.outstanding == 0
    ep.release()  # never below zero
    ep.finish(s2, latency=0.1)
    assert ep.outstanding == 0
    assert ep.requests == 2


def test_peak_ewma_jumps_up_at_once_on_a_slow_sample(clock: ManualClock) -> None:
    ep = Endpoint("a", None, clock=clock, default_rtt=0.03)
    ep.finish(ep.start(), latency=2.0)
    assert ep.ewma == 2.0
    assert ep.ewma_at(clock.now()) == 2.0


def test_peak_ewma_decays_exactly_per_time_constant(clock: ManualClock) -> None:
    ep = Endpoint("a", None, clock=clock, decay_seconds=10.0, default_rtt=0.0)
    ep.finish(ep.start(), latency=1.0)
    clock.step(10.0)  # one time constant: the estimate read now has decayed by 1/e
    assert ep.ewma_at(clock.now()) == pytest.approx(math.exp(-1.0), rel=1e-15)
    # A faster sample after one time constant is blended with weight 1 - 1/e.
    ep.finish(ep.start(), latency=0.1)
    w = math.exp(-1.0)
    assert ep.ewma == pytest.approx(1.0 * w + 0.1 * (1.0 - w), rel=1e-15)
    # Two more time constants later, the estimate has decayed by e^-2.
    expected = ep.ewma * math.exp(-2.0)
    clock.step(20.0)
    assert ep.ewma_at(clock.now()) == pytest.approx(expected, rel=1e-15)


def test_sample_without_elapsed_time_does_not_move_a_higher_estimate(clock: ManualClock) -> None:
    ep = Endpoint("a", None, clock=clock, default_rtt=0.0)
    ep.finish(ep.start(), latency=1.0)
    ep.finish(ep.start(), latency=0.2)  # no time passed: weight of the new sample is 0
    assert ep.ewma == 1.0


def test_failure_never_lowers_the_estimate(clock: ManualClock) -> None:
    ep = Endpoint("a", None, clock=clock, default_rtt=0.0)
    ep.finish(ep.start(), latency=1.0)
    clock.step(10.0)
    ep.finish(ep.start(), latency=0.001, ok=False, error_kind="5xx")
    # Only the time decay applies; the fast error is not blended in.
    assert ep.ewma == pytest.approx(math.exp(-1.0), rel=1e-15)
    ep.finish(ep.start(), latency=5.0, ok=False, error_kind="timeout")
    assert ep.ewma == 5.0  # a slow failure raises it like any slow sample
    assert ep.failures == 2
    assert ep.consecutive_failures == 2
    ep.finish(ep.start(), latency=0.1)
    assert ep.consecutive_failures == 0


def test_snapshot_reports_gauges(clock: ManualClock) -> None:
    ep = Endpoint("a", None, clock=clock, weight=3, default_rtt=0.05)
    ep.start()
    snap = ep.snapshot()
    assert snap["outstanding"] == 1.0
    assert snap["ewma_ms"] == pytest.approx(50.0)
    assert snap["weight"] == 3.0
    assert snap["ejected"] == 0.0
    assert snap["available"] == 1.0
    assert snap["times_ejected"] == 0.0


@pytest.mark.parametrize("weight", [0, -1, math.inf, math.nan])
def test_weight_must_be_positive_and_finite(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Endpoint("a", None, weight=weight)
