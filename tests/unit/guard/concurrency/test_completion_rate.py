from __future__ import annotations

import pytest

from headway.core import ManualClock
from headway.guard.concurrency._rate import CompletionRate


def test_unknown_until_something_completes(clock: ManualClock) -> None:
    rate = CompletionRate(clock)
    clock.step(5.0)
    assert rate.per_second(0) == 0.0


def test_partial_window_rate_before_the_first_full_window(clock: ManualClock) -> None:
    rate = CompletionRate(clock)
    clock.step(0.5)
    assert rate.per_second(2) == pytest.approx(4.0)


def test_window_closes_after_its_length_and_its_rate_stands(clock: ManualClock) -> None:
    rate = CompletionRate(clock)
    clock.step(2.0)
    assert rate.per_second(10) == pytest.approx(5.0)
    clock.step(0.5)  # the next window is not full yet: the last closed one stands
    assert rate.per_second(30) == pytest.approx(5.0)
    clock.step(0.5)
    assert rate.per_second(30) == pytest.approx(20.0)  # 20 completions in the last 1 s
    clock.step(10.0)  # an idle window does not close: the last measured rate stands
    assert rate.per_second(30) == pytest.approx(20.0)
