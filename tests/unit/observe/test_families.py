"""Plain-number metric families and batched sketch adds: the cheap request path must expose
exactly what prometheus_client's own Counter/Histogram would, and quantiles must not change."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from headway.core import ManualClock
from headway.observe import DDSketch, SlidingSketch
from headway.observe._families import CounterFamily, HistogramFamily
from headway.observe._window import BATCH

BOUNDS = (0.001, 0.01, 0.1, 1.0, 10.0)


def _without_created(text: bytes) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if "_created" not in line)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.one_of(
                st.sampled_from([0.0, 0.001, 0.01, 10.0, 11.0]),  # on and around the bounds
                st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
            ),
        ),
        max_size=40,
    )
)
@settings(max_examples=60, deadline=None)
def test_exposition_equals_prometheus_client(samples: list[tuple[str, float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = CounterFamily("x_requests", "Requests.", ["route"], ours)
    histogram = HistogramFamily("x_seconds", "Latency.", ["route"], ours, buckets=BOUNDS)
    ref_counter = Counter("x_requests", "Requests.", ["route"], registry=theirs)
    ref_histogram = Histogram("x_seconds", "Latency.", ["route"], buckets=BOUNDS, registry=theirs)
    for label, value in samples:
        counter.series((label,)).value += 1
        histogram.series((label,)).observe(value)
        ref_counter.labels(label).inc()
        ref_histogram.labels(label).observe(value)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))


def test_created_samples_are_exported_once_per_series() -> None:
    registry = CollectorRegistry()
    counter = CounterFamily("y", "Y.", ["k"], registry)
    counter.series(("v",)).value += 2
    counter.series(("v",)).value += 1  # the same series, not a new one
    text = generate_latest(registry).decode()
    assert 'y_total{k="v"} 3.0' in text
    assert text.count('y_created{k="v"}') == 1


def test_names_clash_like_prometheus_client() -> None:
    registry = CollectorRegistry()
    CounterFamily("z", "Z.", [], registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("z", "Z again.", registry=registry)


def test_unsorted_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="increasing"):
        HistogramFamily("h", "H.", [], CollectorRegistry(), buckets=(1.0, 0.5))


@given(st.lists(st.floats(min_value=-1.0, max_value=1e6, allow_nan=False), max_size=200))
@settings(max_examples=80, deadline=None)
def test_add_many_equals_adding_one_by_one(values: list[float]) -> None:
    one, many = DDSketch(), DDSketch()
    for value in values:
        one.add(value)
    many.add_many(values)
    assert (many.count, many.zeros, many.min, many.max) == (one.count, one.zeros, one.min, one.max)
    assert many.sum == pytest.approx(one.sum)
    assert many.quantiles((0.0, 0.5, 0.99, 1.0)) == one.quantiles((0.0, 0.5, 0.99, 1.0)) or (
        not values
    )


def test_batched_values_land_in_the_slice_they_were_added_in(clock: ManualClock) -> None:
    window = SlidingSketch(60.0, 6, clock=clock)  # 10 s slices
    window.add(1.0)  # slice 0, still in the batch
    clock.step(10.0)
    window.add(2.0)  # slice 1: folds slice 0's batch first
    clock.step(45.0)  # t = 55: slice 0 is the oldest live slice
    assert window.quantiles((0.0, 1.0)) == [1.0, 2.0]
    clock.step(10.0)  # t = 65: slice 0 has left the window, slice 1 has not
    assert window.quantiles((0.0, 1.0)) == [2.0, 2.0]
    clock.step(10.0)  # t = 75: nothing left
    assert all(math.isnan(q) for q in window.quantiles((0.5,)))


def test_a_full_batch_is_folded_and_still_read(clock: ManualClock) -> None:
    window = SlidingSketch(60.0, 6, clock=clock)
    for i in range(BATCH * 2 + 3):
        window.add(float(i + 1))
    assert window.count == BATCH * 2 + 3
    assert window.quantiles((1.0,)) == [float(BATCH * 2 + 3)]


def test_request_with_usage_counts_like_request_then_tokens(clock: ManualClock) -> None:
    from headway.observe import GatewayMetrics

    folded = GatewayMetrics(models=["m"], tenants=["t"], clock=clock)
    separate = GatewayMetrics(models=["m"], tenants=["t"], clock=clock)
    for metrics in (folded, separate):
        metrics.request("chat", "other-model", None, 401, "invalid_api_key", 0.001)
    folded.request("chat", "m", "t", 200, "ok", 0.5, 12, 30, 0.25)
    folded.request("chat", "m", "t", 200, "ok", 2.0, 5, 20)  # generation defaults to latency
    separate.request("chat", "m", "t", 200, "ok", 0.5)
    separate.tokens("m", "t", 12, 30, 0.25)
    separate.request("chat", "m", "t", 200, "ok", 2.0)
    separate.tokens("m", "t", 5, 20, 2.0)
    assert _without_created(folded.render()) == _without_created(separate.render())
    assert 'headway_completion_tokens_total{model="m",tenant="t"} 50.0' in folded.render().decode()
