from __future__ import annotations

import pytest

from headway.guard.breaker import CountWindow, TimeWindow, WindowType, make_window


def test_count_window_keeps_last_n_outcomes() -> None:
    w = CountWindow(3)
    w.record(True, False, 0.0)
    w.record(False, True, 0.0)
    assert (w.calls, w.failures, w.slow_calls) == (2, 1, 1)
    w.record_success(0.0)
    assert (w.calls, w.failures, w.slow_calls) == (3, 1, 1)
    w.record_success(0.0)  # evicts the failure
    assert (w.calls, w.failures, w.slow_calls) == (3, 0, 1)
    w.record(True, True, 0.0)  # evicts the slow call
    assert (w.calls, w.failures, w.slow_calls) == (3, 1, 1)
    w.reset()
    assert (w.calls, w.failures, w.slow_calls) == (0, 0, 0)
    w.record_success(0.0)
    assert (w.calls, w.failures, w.slow_calls) == (1, 0, 0)


def test_time_window_buckets_by_whole_second() -> None:
    w = TimeWindow(3)
    w.record(True, False, 10.0)
    w.record(False, True, 10.9)
    w.record_success(11.5)
    assert (w.calls, w.failures, w.slow_calls) == (3, 1, 1)
    w.expire(12.99)  # seconds 10, 11, 12 still in
    assert (w.calls, w.failures, w.slow_calls) == (3, 1, 1)
    w.expire(13.0)  # second 10 leaves
    assert (w.calls, w.failures, w.slow_calls) == (1, 0, 0)
    w.record(True, False, 13.2)
    w.expire(100.0)  # a long gap clears everything
    assert (w.calls, w.failures, w.slow_calls) == (0, 0, 0)
    w.record(True, False, 100.0)
    assert (w.calls, w.failures) == (1, 1)
    w.reset()
    assert w.calls == 0


def test_make_window_and_validation() -> None:
    assert isinstance(make_window(WindowType.COUNT_BASED, 5), CountWindow)
    assert isinstance(make_window(WindowType.TIME_BASED, 5), TimeWindow)
    with pytest.raises(ValueError, match="at least 1"):
        CountWindow(0)
    with pytest.raises(ValueError, match="at least 1"):
        TimeWindow(0)
