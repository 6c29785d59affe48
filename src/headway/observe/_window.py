"""Latency quantiles over a sliding window: a ring of DDSketches, one per time slice.

A window of ``window_seconds`` is cut into ``slices`` slices of equal length on the clock's
scale; a value goes into the sketch of the slice the clock is in, and a slice's sketch is
cleared when the ring comes round to it again. A read merges the live slices.

Guarantees: a read at time ``t`` covers every value added in the current slice and the
``slices - 1`` before it, i.e. between the last ``window_seconds - slice`` and ``window_seconds``
seconds (the usual rotating-histogram trade-off, as in tower's ``hedge/rotating_histogram``);
nothing older is ever counted. Quantiles keep the sketch's relative accuracy, because merging
DDSketches is exact. Adding costs one clock read and a list append: values wait in a batch
(at most ``BATCH`` of them, and never past the end of their slice) and go into the slice's
sketch in one ``DDSketch.add_many`` when the slice ends, the batch is full, or on a read. No
timers are used.
"""

from __future__ import annotations

import math

from headway.core import REAL_CLOCK, Clock

from ._sketch import DEFAULT_ALPHA, DDSketch

# Our choice: the last minute, in 10 s slices, is what an operator reads as "now"
# (Prometheus' default scrape interval is 1 m and dashboards commonly use rate(...[1m])).
DEFAULT_WINDOW = 60.0
DEFAULT_SLICES = 6
# Our choice: the add that fills the batch folds it in one go (~0.2 us a value), so 64 keeps
# that stall near 15 us per sketch while the per-value cost is the same as with a larger batch
# (1024 put ~200 us per sketch, twice per request, on every 1024th request).
BATCH = 64


class SlidingSketch:
    """Quantiles of the values added in (about) the last ``window_seconds``."""

    def __init__(
        self,
        window_seconds: float = DEFAULT_WINDOW,
        slices: int = DEFAULT_SLICES,
        *,
        alpha: float = DEFAULT_ALPHA,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        if window_seconds <= 0 or not math.isfinite(window_seconds):
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        if slices < 1:
            raise ValueError(f"slices must be at least 1, got {slices}")
        self.window_seconds = window_seconds
        self.slices = slices
        self.alpha = alpha
        self._slice = window_seconds / slices
        self._clock = clock
        self._sketches = [DDSketch(alpha) for _ in range(slices)]
        # The slice number (now // slice length) each ring position currently holds.
        self._epochs = [-1] * slices
        # Values added but not yet in a sketch, all from slice ``_pending_epoch``, which ends
        # at ``_pending_until`` on the clock's scale.
        self._pending: list[float] = []
        self._pending_epoch = -1
        self._pending_until = -math.inf

    def add(self, value: float) -> None:
        self.add_many([value])

    def add_many(self, values: list[float]) -> None:
        """Each of ``values``, with one clock read (the gateway adds a loop turn's run)."""
        pending = self._pending
        if self._clock.now() >= self._pending_until:
            self._fold()
        pending += values
        if len(pending) >= BATCH:
            self._fold()

    @property
    def pending(self) -> list[float]:
        """The values added but not yet in a sketch (always the same list). A batch writer may
        append to it directly, as ``GatewayMetrics``' tally does, while the clock is before
        :meth:`roll`'s answer; it calls :meth:`fold` when the list holds ``BATCH`` values."""
        return self._pending

    def roll(self, now: float) -> float:
        """Fold the pending values if their slice has ended at ``now``; returns when the
        current slice ends (until then, appending to :attr:`pending` is adding)."""
        if now >= self._pending_until:
            self._fold()
        return self._pending_until

    def fold(self) -> None:
        """Put the pending values into their slice's sketch now."""
        self._fold()

    def _fold(self) -> None:
        """Put the batch into its slice's sketch and start a batch for the current slice."""
        pending = self._pending
        if pending:
            epoch = self._pending_epoch
            slot = epoch % self.slices
            if self._epochs[slot] != epoch:
                self._sketches[slot].clear()
                self._epochs[slot] = epoch
            self._sketches[slot].add_many(pending)
            pending.clear()
        epoch = int(self._clock.now() // self._slice)
        self._pending_epoch = epoch
        self._pending_until = (epoch + 1) * self._slice

    def merged(self) -> DDSketch:
        """One sketch of the live window (a copy: the caller may merge it further)."""
        self._fold()
        oldest = int(self._clock.now() // self._slice) - self.slices
        out = DDSketch(self.alpha)
        for epoch, sketch in zip(self._epochs, self._sketches, strict=True):
            if epoch > oldest:
                out.merge(sketch)
        return out

    def quantiles(self, qs: tuple[float, ...] = (0.5, 0.99, 0.999)) -> list[float]:
        return self.merged().quantiles(qs)

    @property
    def count(self) -> int:
        return self.merged().count

    def __repr__(self) -> str:
        return f"SlidingSketch(window_seconds={self.window_seconds}, slices={self.slices})"
