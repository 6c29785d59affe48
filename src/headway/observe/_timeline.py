"""The last minutes of traffic, one sample per second, for the dashboard and ``headway top``.

A :class:`Timeline` keeps a bounded ring of :class:`Sample` values. A sampler task
(:meth:`Timeline.run`, on an injectable clock) reads the gateway's *cumulative* metrics once a
second (:func:`read_totals`: the ``requests`` counter and the request-duration and TTFT
histograms that already exist) and stores the difference from the previous read, divided by the
time between them. So the request path does no extra work at all for the timeline; the cost is
one read per second, proportional to the (bounded) number of label series. The gateway's own
families are summed directly (tens of microseconds) rather than through ``collect()``, which
builds a labelled sample per bucket and cost ~100 us per read on the event loop; any other
collector is read through ``collect()``.

Per-second percentiles come from the histograms' bucket deltas, interpolated within a bucket as
Prometheus' ``histogram_quantile`` does, so they are as coarse as ``LLM_BUCKETS``; the admin
API's headline percentiles come from the 1%-accurate sliding sketches instead.

Guarantees: memory is bounded by ``retention / interval`` samples; a counter that goes down
(never expected, a reset) yields a zero rate rather than a negative one; the first read after
start or after metrics were switched off only sets the baseline.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.registry import Collector

from headway.core import REAL_CLOCK, Clock

from ._families import CounterFamily, HistogramFamily

__all__ = [
    "REFUSAL_REASONS",
    "Sample",
    "Timeline",
    "Totals",
    "bucket_quantile",
    "read_totals",
]

log = logging.getLogger("headway.observe")

# One sample a second: the resolution an operator watching a live chart expects (Grafana's
# live panels and `top` refresh at 1 s).
DEFAULT_INTERVAL = 1.0
# 15 minutes kept: enough to see the start of an incident that paged someone (our choice;
# the dashboard shows the last 5 by default).
DEFAULT_RETENTION = 900.0

#: 503 reasons that mean "refused to protect capacity" (shed), as opposed to a failure; with
#: every 429 they make the shed rate (reasons from headway.guard.shed and .concurrency).
REFUSAL_REASONS = frozenset(
    {
        "shed",
        "queue_full",
        "queue_delay",
        "queue_timeout",
        "deadline",
        "tenant_limit",
        "concurrency_limit",
        "overloaded",
    }
)


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counts at one instant (every field only grows)."""

    requests: float = 0.0
    errors: float = 0.0
    refused: float = 0.0
    #: Upper bounds of the histogram buckets (the last is +inf).
    bounds: tuple[float, ...] = ()
    #: Cumulative request-duration bucket counts, one per bound, summed over all series.
    latency: tuple[float, ...] = ()
    #: Cumulative time-to-first-token bucket counts, one per bound.
    ttft: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One interval's traffic: rates per second, latencies in seconds (None: no request)."""

    t: float
    rps: float
    error_rate: float
    shed_rate: float
    p50: float | None
    p99: float | None
    ttft_p50: float | None
    inflight: int


def _status_class(status: str, reason: str) -> tuple[bool, bool]:
    """(is an error, is a refusal) for one ``requests_total`` series."""
    code = int(status) if status.isdigit() else 0
    refused = code == 429 or (code == 503 and reason in REFUSAL_REASONS)
    return (code >= 500 and not refused, refused)


def _buckets(histogram: Collector) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(histogram, HistogramFamily):
        return histogram.cumulative()
    by_bound: dict[float, float] = {}
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + sample.value
    bounds = tuple(sorted(by_bound))
    return bounds, tuple(by_bound[b] for b in bounds)


def read_totals(requests: Collector, duration: Collector, ttft: Collector) -> Totals:
    """Sum the gateway's request counter and latency histograms over all their series
    (``GatewayMetrics.requests``, ``.duration``, ``.ttft``)."""
    total = errors = refused = 0.0
    if isinstance(requests, CounterFamily):
        status_at = requests.labelnames.index("status")
        reason_at = requests.labelnames.index("reason")
        # Few distinct (status, reason) pairs across many series: classify each pair once.
        by_outcome: dict[tuple[str, str], int] = {}
        for values, count in requests.values():
            outcome = (values[status_at], values[reason_at])
            by_outcome[outcome] = by_outcome.get(outcome, 0) + count
        for (status, reason), count in by_outcome.items():
            total += count
            is_error, is_refused = _status_class(status, reason)
            if is_error:
                errors += count
            elif is_refused:
                refused += count
        return _totals(total, errors, refused, duration, ttft)
    for family in requests.collect():
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            total += sample.value
            is_error, is_refused = _status_class(sample.labels["status"], sample.labels["reason"])
            if is_error:
                errors += sample.value
            elif is_refused:
                refused += sample.value
    return _totals(total, errors, refused, duration, ttft)


def _totals(
    total: float, errors: float, refused: float, duration: Collector, ttft: Collector
) -> Totals:
    latency_bounds, latency = _buckets(duration)
    ttft_bounds, first = _buckets(ttft)
    # A histogram with no series yet has no buckets: count zeros on the other's bounds.
    bounds = latency_bounds or ttft_bounds
    zeros = tuple(0.0 for _ in bounds)
    return Totals(
        float(total),
        float(errors),
        float(refused),
        bounds,
        latency if latency_bounds == bounds else zeros,
        first if ttft_bounds == bounds else zeros,
    )


def bucket_quantile(q: float, bounds: Iterable[float], cumulative: Iterable[float]) -> float | None:
    """The ``q``-quantile of values counted in cumulative histogram buckets, interpolated
    linearly inside its bucket (Prometheus ``histogram_quantile``); None when empty. A quantile
    in the +inf bucket is reported as the largest finite bound."""
    ups = list(bounds)
    counts = list(cumulative)
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    below = 0.0
    lower = 0.0
    for upper, count in zip(ups, counts, strict=True):
        if count >= rank and count > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        below = count
        lower = upper if math.isfinite(upper) else lower
    return lower


def _delta(now: tuple[float, ...], before: tuple[float, ...]) -> tuple[float, ...]:
    if len(now) != len(before):
        return now
    return tuple(max(0.0, a - b) for a, b in zip(now, before, strict=True))


class Timeline:
    """A bounded ring of per-second samples, filled by :meth:`run` (or :meth:`sample`)."""

    def __init__(
        self,
        read: Callable[[], Totals | None],
        *,
        inflight: Callable[[], int] = lambda: 0,
        interval: float = DEFAULT_INTERVAL,
        retention: float = DEFAULT_RETENTION,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        """``read`` returns the cumulative totals now, or None when there are none to read
        (metrics off); ``inflight`` the requests in flight now."""
        if not interval > 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be a positive number of seconds, got {interval}")
        if not retention >= interval:
            raise ValueError("retention must be at least one interval")
        self._read = read
        self._inflight = inflight
        self.interval = interval
        self.retention = retention
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=math.ceil(retention / interval))
        self._last: tuple[float, Totals] | None = None

    def sample(self) -> Sample | None:
        """Read the totals now and record the interval since the previous read."""
        now = self._clock.now()
        totals = self._read()
        if totals is None:
            self._last = None
            return None
        last, self._last = self._last, (now, totals)
        if last is None or now <= last[0]:
            return None
        before = last[1]
        seconds = now - last[0]

        def rate(a: float, b: float) -> float:
            return max(0.0, a - b) / seconds

        latency = _delta(totals.latency, before.latency)
        ttft = _delta(totals.ttft, before.ttft)
        bounds = totals.bounds
        sample = Sample(
            t=now,
            rps=rate(totals.requests, before.requests),
            error_rate=rate(totals.errors, before.errors),
            shed_rate=rate(totals.refused, before.refused),
            p50=bucket_quantile(0.5, bounds, latency),
            p99=bucket_quantile(0.99, bounds, latency),
            ttft_p50=bucket_quantile(0.5, bounds, ttft),
            inflight=self._inflight(),
        )
        self._samples.append(sample)
        return sample

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled. A failing read is logged and
        skipped (the next one starts a new baseline): the sampler never dies silently."""
        while True:
            try:
                self.sample()
            except Exception:
                self._last = None
                log.exception("timeline sample failed")
            await self._clock.sleep(self.interval)

    def samples(self, seconds: float | None = None) -> list[Sample]:
        """The samples of the last ``seconds`` (all kept ones when None), oldest first."""
        if seconds is None:
            return list(self._samples)
        oldest = self._clock.now() - seconds
        return [s for s in self._samples if s.t > oldest]

    def to_json(self, seconds: float | None = None) -> dict[str, Any]:
        """The admin API's ``/api/timeline`` answer: ``t`` are clock times; ``now`` is the
        clock now, so a reader plots ``t - now`` (seconds ago) without trusting wall clocks."""
        return {
            "interval": self.interval,
            "retention": self.retention,
            "now": self._clock.now(),
            "samples": [asdict(s) for s in self.samples(seconds)],
        }

    def __len__(self) -> int:
        return len(self._samples)
