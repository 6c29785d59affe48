"""Per-side sample windows: exact counts, bounded uniform samples, drained window by window."""

from __future__ import annotations

import random

import pytest

from headway.rollout import Reservoir, SideRecorder


def test_reservoir_is_bounded_and_uniform() -> None:
    rng = random.Random(7)
    kept_low = 0
    for _ in range(200):
        reservoir = Reservoir(100, rng)
        for value in range(1000):
            reservoir.add(float(value))
        values = reservoir.take()
        assert len(values) == 100
        assert len(set(values)) == 100
        kept_low += sum(v < 500 for v in values)
        assert reservoir.take() == []
        assert reservoir.seen == 0
    # Each value is kept with probability 100/1000: half the sample from the first half.
    assert kept_low / (200 * 100) == pytest.approx(0.5, abs=0.02)


def test_reservoir_keeps_everything_below_capacity() -> None:
    reservoir = Reservoir(10, random.Random(0))
    for value in (3.0, 1.0, 2.0):
        reservoir.add(value)
    assert reservoir.take() == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        Reservoir(0, random.Random(0))


def test_recorder_counts_exactly_and_drains() -> None:
    recorder = SideRecorder(capacity=8, rng=random.Random(1))
    for i in range(20):
        recorder.first_byte(0.01 * i)
        recorder.finished(0.1 * i, error=i % 5 == 0)
    recorder.finished(None, error=False)  # a client that left: counted, no latency
    window = recorder.drain()
    assert window.requests == 21
    assert window.errors == 4
    assert window.error_rate == pytest.approx(4 / 21)
    assert len(window.latencies) == 8
    assert len(window.ttfts) == 8
    # Failed requests' latencies are not latency samples.
    assert all(round(v / 0.1) % 5 != 0 for v in window.latencies)
    empty = recorder.drain()
    assert (empty.requests, empty.errors, empty.latencies, empty.ttfts) == (0, 0, [], [])
    assert empty.error_rate is None
    assert (recorder.requests_total, recorder.errors_total) == (21, 4)
