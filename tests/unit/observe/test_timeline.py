"""The per-second traffic timeline: rates and percentiles from cumulative metrics, exact on a
manual clock, bounded memory, and nothing added to the request path."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from headway.core import ManualClock
from headway.observe import (
    LLM_BUCKETS,
    GatewayMetrics,
    Timeline,
    Totals,
    bucket_quantile,
    read_totals,
)


def _metrics(clock: ManualClock) -> GatewayMetrics:
    return GatewayMetrics(models=["m"], tenants=["t"], clock=clock)


def _timeline(metrics: GatewayMetrics, clock: ManualClock, **kw: float) -> Timeline:
    return Timeline(
        lambda: read_totals(metrics.requests, metrics.duration, metrics.ttft),
        inflight=lambda: 3,
        clock=clock,
        **kw,
    )


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    bounds = (0.1, 0.2, 0.4, math.inf)
    # 10 values in (0, 0.1], 10 in (0.1, 0.2], none above.
    cumulative = (10.0, 20.0, 20.0, 20.0)
    assert bucket_quantile(0.5, bounds, cumulative) == pytest.approx(0.1)
    assert bucket_quantile(0.25, bounds, cumulative) == pytest.approx(0.05)
    assert bucket_quantile(0.75, bounds, cumulative) == pytest.approx(0.15)
    assert bucket_quantile(1.0, bounds, cumulative) == pytest.approx(0.2)
    # A quantile in the +inf bucket is the largest finite bound.
    assert bucket_quantile(0.99, bounds, (0.0, 0.0, 1.0, 10.0)) == pytest.approx(0.4)
    assert bucket_quantile(0.5, bounds, (0.0, 0.0, 0.0, 0.0)) is None
    assert bucket_quantile(0.5, (), ()) is None


def test_rates_and_percentiles_per_interval(clock: ManualClock) -> None:
    metrics = _metrics(clock)
    timeline = _timeline(metrics, clock)
    assert timeline.sample() is None  # the first read is the baseline
    for _ in range(8):
        metrics.request("chat", "m", "t", 200, "ok", 0.3)
    metrics.request("chat", "m", "t", 502, "upstream_error", 0.3)
    metrics.request("chat", "m", "t", 503, "shed", 0.001)
    metrics.request("chat", "m", "t", 429, "tenant_rpm", 0.001)
    metrics.request("chat", "m", "t", 503, "circuit_open", 0.001)  # a failure, not shedding
    metrics.first_token("m", 0.05)
    clock.step(2.0)
    sample = timeline.sample()
    assert sample is not None
    assert sample.t == clock.now()
    assert sample.rps == pytest.approx(12 / 2.0)
    assert sample.error_rate == pytest.approx(2 / 2.0)
    assert sample.shed_rate == pytest.approx(2 / 2.0)
    assert sample.inflight == 3
    # 9 of 12 at 0.3 s (bucket (0.25, 0.5]) and 3 at 1 ms: p50 and p99 fall in that bucket.
    assert sample.p50 is not None
    assert 0.25 < sample.p50 <= 0.5
    assert sample.p99 is not None
    assert sample.p50 < sample.p99 <= 0.5
    assert sample.ttft_p50 is not None
    assert 0.025 < sample.ttft_p50 <= 0.05
    # A quiet interval: zero rates, no percentiles (not zero latency).
    clock.step(1.0)
    quiet = timeline.sample()
    assert quiet is not None
    assert (quiet.rps, quiet.error_rate, quiet.shed_rate) == (0.0, 0.0, 0.0)
    assert (quiet.p50, quiet.p99, quiet.ttft_p50) == (None, None, None)
    assert len(timeline) == 2


def test_memory_is_bounded_by_retention(clock: ManualClock) -> None:
    metrics = _metrics(clock)
    timeline = _timeline(metrics, clock, interval=1.0, retention=10.0)
    for _ in range(50):
        metrics.request("chat", "m", "t", 200, "ok", 0.1)
        clock.step(1.0)
        timeline.sample()
    assert len(timeline) == 10
    assert [s.t for s in timeline.samples()] == [clock.now() - 9 + i for i in range(10)]
    assert len(timeline.samples(3.5)) == 4  # t > now - 3.5: now-3 .. now
    doc = timeline.to_json(3.5)
    assert doc["now"] == clock.now()
    assert [s["rps"] for s in doc["samples"]] == [1.0] * 4
    assert set(doc["samples"][0]) == {
        "t",
        "rps",
        "error_rate",
        "shed_rate",
        "p50",
        "p99",
        "ttft_p50",
        "inflight",
    }


def test_metrics_off_records_nothing_and_restarts_the_baseline(clock: ManualClock) -> None:
    metrics = _metrics(clock)
    on = [True]
    timeline = Timeline(
        lambda: read_totals(metrics.requests, metrics.duration, metrics.ttft) if on[0] else None,
        clock=clock,
    )
    timeline.sample()
    on[0] = False
    for _ in range(5):
        metrics.request("chat", "m", "t", 200, "ok", 0.1)
    clock.step(1.0)
    assert timeline.sample() is None
    on[0] = True
    clock.step(1.0)
    assert timeline.sample() is None  # baseline again: the requests while off are not a spike
    clock.step(1.0)
    sample = timeline.sample()
    assert sample is not None
    assert sample.rps == 0.0


def test_a_counter_going_down_gives_zero_not_a_negative_rate(clock: ManualClock) -> None:
    values = [Totals(requests=10.0), Totals(requests=4.0)]
    timeline = Timeline(lambda: values.pop(0), clock=clock)
    timeline.sample()
    clock.step(1.0)
    sample = timeline.sample()
    assert sample is not None
    assert sample.rps == 0.0


def test_read_totals_sums_every_series(clock: ManualClock) -> None:
    metrics = GatewayMetrics(models=["a", "b"], tenants=["x", "y"], clock=clock)
    metrics.request("chat", "a", "x", 200, "ok", 0.01)
    metrics.request("embeddings", "b", "y", 200, "ok", 0.02)
    metrics.request("chat", "zzz", "unknown", 504, "upstream_timeout", 9.0)
    totals = read_totals(metrics.requests, metrics.duration, metrics.ttft)
    assert (totals.requests, totals.errors, totals.refused) == (3.0, 1.0, 0.0)
    assert totals.bounds == (*LLM_BUCKETS, math.inf)
    assert totals.latency[-1] == 3.0
    assert totals.ttft == tuple(0.0 for _ in totals.bounds)  # no stream yet


async def test_run_samples_once_per_interval_until_cancelled(clock: ManualClock) -> None:
    metrics = _metrics(clock)
    timeline = _timeline(metrics, clock)
    task = asyncio.create_task(timeline.run())
    await asyncio.sleep(0)
    for _ in range(5):
        metrics.request("chat", "m", "t", 200, "ok", 0.1)
        await clock.advance(1.0)
    assert len(timeline) == 5
    assert [s.rps for s in timeline.samples()] == [1.0] * 5
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_bad_parameters_are_refused(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="interval"):
        Timeline(lambda: None, interval=0, clock=clock)
    with pytest.raises(ValueError, match="retention"):
        Timeline(lambda: None, interval=2.0, retention=1.0, clock=clock)


async def test_a_failing_read_is_skipped_not_fatal(clock: ManualClock) -> None:
    reads = iter([Totals(requests=0.0), RuntimeError("boom"), Totals(requests=5.0),
                  Totals(requests=7.0)])  # fmt: skip

    def read() -> Totals:
        value = next(reads)
        if isinstance(value, Exception):
            raise value
        return value

    timeline = Timeline(read, clock=clock)
    task = asyncio.create_task(timeline.run())
    await asyncio.sleep(0)
    for _ in range(3):
        await clock.advance(1.0)
    # The failure dropped the baseline: 5 -> 7 is the only interval measured.
    assert [s.rps for s in timeline.samples()] == [2.0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class _Exposed(Collector):
    """Hides a family's type, so ``read_totals`` must go through ``collect()``."""

    def __init__(self, family: Collector) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return self._family.collect()


def test_the_direct_read_equals_the_exposition_read(clock: ManualClock) -> None:
    metrics = _metrics(clock)
    families = (metrics.requests, metrics.duration, metrics.ttft)
    empty = read_totals(*families)
    assert empty == read_totals(*(_Exposed(f) for f in families))
    assert empty.bounds == ()
    assert empty.requests == 0.0
    for status, reason, seconds in [
        (200, "ok", 0.05),
        (200, "ok", 3.0),
        (502, "upstream_error", 0.2),
        (503, "shed", 0.001),
        (429, "rate_limited", 0.001),
        (404, "model_not_found", 0.001),
    ]:
        metrics.request("chat", "m", "t", status, reason, seconds)
    metrics.request("embeddings", "other-model", "t", 200, "ok", 120.0)
    metrics.ttft.series(("m",)).observe(0.3)
    direct = read_totals(*families)
    assert direct == read_totals(*(_Exposed(f) for f in families))
    assert (direct.requests, direct.errors, direct.refused) == (7.0, 1.0, 2.0)
    assert direct.latency[-1] == 7.0
    assert direct.ttft[-1] == 1.0
    assert direct.bounds[-1] == math.inf
