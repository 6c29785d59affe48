from __future__ import annotations

import pytest

from headway.core import ManualClock
from headway.guard.hedge import RotatingPercentile


def test_percentile_of_last_completed_window(clock: ManualClock) -> None:
    est = RotatingPercentile(0.95, period=10, min_samples=5, clock=clock)
    for ms in range(1, 101):
        est.record(ms / 1000)
    assert est.estimate() is None  # first window still open
    clock.step(10)
    assert est.estimate() == 0.095  # nearest rank: ceil(0.95 * 100) = 95th value
    for _ in range(10):
        est.record(5.0)
    assert est.estimate() == 0.095  # writes go to the new window
    clock.step(10)
    assert est.estimate() == 5.0


def test_too_few_samples_or_stale_window_gives_none(clock: ManualClock) -> None:
    est = RotatingPercentile(0.5, period=1, min_samples=3, clock=clock)
    est.record(1.0)
    est.record(2.0)
    clock.step(1)
    assert est.estimate() is None
    for v in (1.0, 2.0, 3.0):
        est.record(v)
    clock.step(2.5)  # the window with samples ended 1.5 periods ago: stale
    assert est.estimate() is None


def test_capacity_keeps_most_recent(clock: ManualClock) -> None:
    est = RotatingPercentile(1.0, period=1, min_samples=1, capacity=4, clock=clock)
    for v in (9.0, 1.0, 2.0, 3.0, 4.0):
        est.record(v)
    clock.step(1)
    assert est.estimate() == 4.0


def test_validation() -> None:
    with pytest.raises(ValueError):
        RotatingPercentile(0)
    with pytest.raises(ValueError):
        RotatingPercentile(0.5, min_samples=10, capacity=5)
