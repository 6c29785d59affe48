"""Gradient2: a delay-based concurrency limit driven by short- vs long-term latency.

Modelled on Netflix concurrency-limits ``Gradient2Limit`` (HEAD 78a74b9). While the recent
latency stays within ``rtt_tolerance`` of the long-term average, the limit creeps up by at most
``queue_size * smoothing`` per sample; when recent latency rises above it (queueing somewhere),
the limit shrinks by up to half per sample before smoothing. Guarantees: the limit always lies in
``[min_limit, max_limit]`` and never grows while the service is app-limited (fewer than half the
limit in flight).

The sample's ``rtt`` is whatever latency the caller measures. For LLM traffic, where a request's
time grows with the tokens it produces, pass latency *per output token* (or time to first token)
rather than the whole request's time, so long answers are not mistaken for queueing (reference
doc section 4.4). The limiter measures whole-call time; feed ``on_sample`` yourself to normalise.
"""

from __future__ import annotations

from collections.abc import Callable

from ._listeners import LimitListeners, check_bounds


class _ExpAverage:
    """Exponential moving average with factor 2/(window+1), a plain mean for the first
    ``warmup`` samples (as Netflix's ExpAvgMeasurement, warmup window 10)."""

    def __init__(self, window: int, warmup: int) -> None:
        self._factor = 2.0 / (window + 1)
        self._warmup = warmup
        self._count = 0
        self._sum = 0.0
        self.value = 0.0

    def add(self, sample: float) -> float:
        if self._count < self._warmup:
            self._count += 1
            self._sum += sample
            self.value = self._sum / self._count
        else:
            self.value += (sample - self.value) * self._factor
        return self.value


class Gradient2Limit(LimitListeners):
    """Shrink the limit as recent latency rises above the long-term latency; grow it slowly
    while it does not."""

    def __init__(
        self,
        *,
        # Netflix Gradient2Limit.Builder defaults: initialLimit 20, minLimit 20,
        # maxConcurrency 200 (concurrency-limits HEAD 78a74b9). Allow min_limit=1 for LLM
        # upstreams whose real capacity may be a handful of requests.
        initial_limit: int = 20,
        min_limit: int = 20,
        max_limit: int = 200,
        # Netflix Gradient2Limit.Builder: smoothing 0.2.
        smoothing: float = 0.2,
        # Netflix Gradient2Limit.Builder: queueSize 4 (constant, or a function of the limit).
        queue_size: int | Callable[[int], float] = 4,
        # Netflix Gradient2Limit.Builder: rttTolerance 1.5 (a 1.5x rise is tolerated).
        rtt_tolerance: float = 1.5,
        # Netflix Gradient2Limit.Builder: longWindow 600 samples (ExpAvgMeasurement, warmup 10).
        long_window: int = 600,
        # Netflix HEAD uses the last sample as the short-term RTT (window 1). LLM latencies are
        # noisy, so a short EWMA (e.g. 10) is offered; 1 reproduces Netflix exactly.
        short_window: int = 1,
        # Netflix Gradient2Limit: when longRtt / shortRtt > 2 the long RTT is multiplied by 0.95
        # per sample, so the baseline recovers quickly after a period of overload.
        drift_decay: float = 0.95,
    ) -> None:
        check_bounds(initial_limit, min_limit, max_limit)
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must lie in (0, 1], got {smoothing}")
        if rtt_tolerance < 1.0:
            raise ValueError(f"rtt_tolerance must be >= 1.0, got {rtt_tolerance}")
        if long_window < 1 or short_window < 1:
            raise ValueError("long_window and short_window must be >= 1")
        super().__init__(initial_limit)
        self._estimate = float(initial_limit)
        self._min = min_limit
        self._max = max_limit
        self._smoothing = smoothing
        # Decided once: callable() per sample is a builtin looked up and called every time.
        self._queue_fn: Callable[[int], float] | None = (
            None if isinstance(queue_size, int) else queue_size
        )
        self._queue_fixed = float(queue_size) if isinstance(queue_size, int) else 0.0
        self._tolerance = rtt_tolerance
        self._short = _ExpAverage(short_window, warmup=1)
        self._long = _ExpAverage(long_window, warmup=10)
        self._drift_decay = drift_decay

    @property
    def estimate(self) -> float:
        """The unrounded limit estimate (``limit`` is its integer part)."""
        return self._estimate

    @property
    def short_rtt(self) -> float:
        return self._short.value

    @property
    def long_rtt(self) -> float:
        return self._long.value

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> None:
        estimate = self._estimate
        queue_fn = self._queue_fn
        queue = self._queue_fixed if queue_fn is None else queue_fn(int(estimate))
        short_rtt = self._short.add(rtt)
        long_rtt = self._long.add(rtt)
        if short_rtt <= 0.0:
            return  # a zero-time sample says nothing about queueing
        # Drift: after a long overload the long-term RTT can sit far above the current one;
        #   if long_rtt / short_rtt > 2: long_rtt *= drift_decay
        if long_rtt / short_rtt > 2.0:
            self._long.value = long_rtt * self._drift_decay
        # App-limited: with fewer than half the limit in flight, latency says nothing about
        # whether more concurrency would fit, so do not move.
        if inflight < estimate / 2:
            return
        # Update rule (Netflix Gradient2Limit._update), with the pre-decay long_rtt:
        #   gradient  = clamp(rtt_tolerance * long_rtt / short_rtt, 0.5, 1.0)
        #   new_limit = limit * gradient + queue_size
        #   limit     = limit * (1 - smoothing) + new_limit * smoothing
        #   limit     = clamp(limit, min_limit, max_limit)
        gradient = max(0.5, min(1.0, self._tolerance * long_rtt / short_rtt))
        new_limit = estimate * gradient + queue
        smoothing = self._smoothing
        estimate = estimate * (1.0 - smoothing) + new_limit * smoothing
        estimate = max(float(self._min), min(float(self._max), estimate))
        self._estimate = estimate
        self._set_limit(int(estimate))

    def __repr__(self) -> str:
        return f"Gradient2Limit(limit={self._limit}, estimate={self._estimate:.2f})"
