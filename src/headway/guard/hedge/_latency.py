"""A cheap estimate of a recent latency percentile, from two rotating time windows.

The idea is tower's ``hedge/rotating_histogram``: samples are written into the current window
while the percentile is read from the previous, completed one; every ``period`` the windows
rotate. The percentile is computed once per rotation (a sort of at most ``capacity`` samples),
so ``record`` is O(1) and ``estimate`` is O(1) between rotations.

Guarantees: ``estimate()`` is the nearest-rank percentile of the samples recorded in the last
completed window ``[t - period, t)``; it is ``None`` when that window held fewer than
``min_samples`` samples (or when no window has completed yet). A window keeps its most recent
``capacity`` samples, so memory is bounded whatever the traffic.
"""

from __future__ import annotations

import math

from headway.core import REAL_CLOCK, Clock


class RotatingPercentile:
    """The ``percentile`` (0 < p <= 1) of latencies seen in the last completed window."""

    def __init__(
        self,
        percentile: float,
        *,
        period: float = 10.0,
        min_samples: int = 20,
        capacity: int = 1024,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        if not 0 < percentile <= 1:
            raise ValueError(f"percentile must be in (0, 1], got {percentile}")
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        if capacity < 1 or min_samples < 1 or min_samples > capacity:
            raise ValueError("need 1 <= min_samples <= capacity")
        self.percentile = percentile
        self.period = period
        self.min_samples = min_samples
        self.capacity = capacity
        self._clock = clock
        self._samples = [0.0] * capacity
        self._count = 0
        self._value: float | None = None
        self._rotate_at = clock.now() + period

    def _rotate(self, now: float) -> None:
        count = self._count
        if now >= self._rotate_at + self.period:
            # A whole period passed with no rotation, so the last completed window was empty.
            self._value = None
        elif count >= self.min_samples:
            n = min(count, self.capacity)
            ordered = sorted(self._samples[:n])
            self._value = ordered[max(0, math.ceil(self.percentile * n) - 1)]
        else:
            self._value = None
        self._count = 0
        periods = math.floor((now - self._rotate_at) / self.period) + 1
        self._rotate_at += periods * self.period

    def record(self, latency: float) -> None:
        now = self._clock.now()
        if now >= self._rotate_at:
            self._rotate(now)
        self._samples[self._count % self.capacity] = latency
        self._count += 1

    def estimate(self) -> float | None:
        """The percentile of the last completed window, or ``None`` without enough samples."""
        now = self._clock.now()
        if now >= self._rotate_at:
            self._rotate(now)
        return self._value

    def __repr__(self) -> str:
        return f"RotatingPercentile({self.percentile}, period={self.period})"
