"""Per-side request samples of a traffic split, drained window by window for canary analysis.

The analysis compares canary and stable over the *same* window (Kayenta: a concurrent baseline,
never before/after), so each side keeps the counts and latency samples of its requests since the
last drain. Recording sits on the request path: it is O(1), allocates nothing beyond the list
slot, and memory is bounded by a reservoir per metric (Vitter's Algorithm R: after ``n`` values
each has been kept with probability ``capacity / n``, so the sample stays uniform however busy
the window was). Counts are exact; only the latency lists are sampled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DEFAULT_SAMPLE_CAPACITY", "Reservoir", "SideRecorder", "SideWindow", "SplitWindow"]

#: Latency samples kept per side and metric per window (our choice: Mann-Whitney's normal
#: approximation is accurate from ~20 samples, and a p99 needs a few thousand; 4096 floats is
#: 32 KiB per list).
DEFAULT_SAMPLE_CAPACITY = 4096


class Reservoir:
    """A uniform sample of at most ``capacity`` values (Algorithm R)."""

    __slots__ = ("_rng", "capacity", "seen", "values")

    def __init__(self, capacity: int, rng: random.Random) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._rng = rng
        self.values: list[float] = []
        self.seen = 0

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.values[slot] = value

    def take(self) -> list[float]:
        """The sample so far; the reservoir starts empty again."""
        values, self.values, self.seen = self.values, [], 0
        return values


@dataclass(frozen=True, slots=True)
class SideWindow:
    """What one side of a split served during one window."""

    requests: int
    """Requests finished on this side (exact)."""
    errors: int
    """Of those, failed ones: an error raised, a 4xx/5xx answer, or a stream that broke."""
    latencies: list[float]
    """Seconds to the whole answer (a stream: to its end) of successful requests, a uniform
    sample (a failure's latency says how fast it failed, not how fast the side serves)."""
    ttfts: list[float]
    """Seconds to the first byte (a whole answer: its latency), a uniform sample."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class SplitWindow:
    """Stable and canary over the same span of the clock."""

    start: float
    end: float
    weight: float
    """The canary weight (percent) when the window was drained."""
    stable: SideWindow
    canary: SideWindow


class SideRecorder:
    """Counts and samples of one side; ``drain()`` hands over the window and starts the next."""

    __slots__ = ("_errors", "_latencies", "_requests", "_ttfts", "errors_total", "requests_total")

    def __init__(
        self, capacity: int = DEFAULT_SAMPLE_CAPACITY, *, rng: random.Random | None = None
    ) -> None:
        rng = rng if rng is not None else random.Random()
        self._latencies = Reservoir(capacity, rng)
        self._ttfts = Reservoir(capacity, rng)
        self._requests = 0
        self._errors = 0
        #: Since the recorder was made (for status pages; the analysis reads windows).
        self.requests_total = 0
        self.errors_total = 0

    def first_byte(self, ttft: float) -> None:
        """A streamed answer's first chunk arrived after ``ttft`` seconds."""
        self._ttfts.add(ttft)

    def finished(self, latency: float | None, *, error: bool) -> None:
        """A request ended after ``latency`` seconds (None: no meaningful one, e.g. the client
        left); only successful requests' latencies are sampled."""
        self._requests += 1
        self.requests_total += 1
        if error:
            self._errors += 1
            self.errors_total += 1
        elif latency is not None:
            self._latencies.add(latency)

    def drain(self) -> SideWindow:
        window = SideWindow(
            self._requests, self._errors, self._latencies.take(), self._ttfts.take()
        )
        self._requests = 0
        self._errors = 0
        return window
