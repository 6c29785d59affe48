"""Sliding windows of call outcomes, the statistics a circuit breaker decides on.

Two shapes, as in Resilience4j: the last *N calls* (:class:`CountWindow`) and the last *N seconds*
(:class:`TimeWindow`). Both keep running totals (calls, failures, slow calls), so recording an
outcome and reading a rate are O(1) (the time window's expiry is amortised O(1): each bucket is
cleared at most once per second that passes). Totals are exact integers; with a manual clock the
time window is exact too, because a call belongs to the whole second ``floor(now)``.
"""

from __future__ import annotations

import enum
import math
from typing import Final, Protocol

#: Outcome bits kept per call (count window) so an evicted call can be subtracted exactly.
_FAILED: Final = 1
_SLOW: Final = 2


class WindowType(enum.Enum):
    """Which calls the failure and slow-call rates are computed over."""

    COUNT_BASED = "count_based"
    """The last ``window_size`` calls."""
    TIME_BASED = "time_based"
    """The calls of the last ``window_size`` whole seconds (per-second buckets)."""


class Window(Protocol):
    """Running totals over a window of outcomes."""

    calls: int
    failures: int
    slow_calls: int

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one finished call; ``now`` is the clock reading at its end."""
        ...

    def record_success(self, now: float) -> None:
        """``record(False, False, now)``, the common case, made cheap."""
        ...

    def expire(self, now: float) -> None:
        """Drop calls that have left the window by ``now`` (a no-op for count windows)."""
        ...

    def reset(self) -> None:
        """Forget every call."""
        ...


class CountWindow:
    """The last ``size`` outcomes in a ring buffer; the oldest drops out as a new one comes in."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self.size = size
        self._ring = bytearray(size)
        self._next = 0
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        index = self._next
        # Slots not yet written hold 0, so evicting them changes nothing.
        old = self._ring[index]
        self.failures += failed - (old & _FAILED)
        self.slow_calls += slow - (old >> 1)
        self._ring[index] = failed | (slow << 1)
        if self.calls != self.size:
            self.calls += 1
        index += 1
        self._next = 0 if index == self.size else index

    def record_success(self, now: float) -> None:
        index = self._next
        old = self._ring[index]
        if old:
            self.failures -= old & _FAILED
            self.slow_calls -= old >> 1
            self._ring[index] = 0
        if self.calls != self.size:
            self.calls += 1
        index += 1
        self._next = 0 if index == self.size else index

    def expire(self, now: float) -> None:
        return None

    def reset(self) -> None:
        self._ring = bytearray(self.size)
        self._next = 0
        self.calls = self.failures = self.slow_calls = 0


class TimeWindow:
    """Per-second buckets for the last ``seconds`` whole seconds, with running totals.

    A call ending at clock time ``t`` lands in second ``floor(t)``; at time ``now`` the window
    holds the seconds ``floor(now) - seconds + 1 .. floor(now)``.
    """

    def __init__(self, seconds: int) -> None:
        if seconds < 1:
            raise ValueError("window size must be at least 1 second")
        self.size = seconds
        self._bucket_calls = [0] * seconds
        self._bucket_failures = [0] * seconds
        self._bucket_slow = [0] * seconds
        #: The latest second any bucket has been advanced to; buckets cover (head-size, head].
        self._head: int | None = None
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0

    def expire(self, now: float) -> None:
        second = math.floor(now)
        head = self._head
        if head is None:
            self._head = second
            return
        if second <= head:
            return
        size = self.size
        # Clear the buckets of the seconds that just entered the window (they hold data from
        # ``size`` seconds earlier); at most ``size`` of them however long the gap.
        for s in range(head + 1, head + 1 + min(second - head, size)):
            index = s % size
            self.calls -= self._bucket_calls[index]
            self.failures -= self._bucket_failures[index]
            self.slow_calls -= self._bucket_slow[index]
            self._bucket_calls[index] = 0
            self._bucket_failures[index] = 0
            self._bucket_slow[index] = 0
        self._head = second

    def record(self, failed: bool, slow: bool, now: float) -> None:
        self.expire(now)
        # A monotonic clock never goes back, so the call belongs to the head second.
        index = self._head % self.size  # type: ignore[operator]
        self._bucket_calls[index] += 1
        self.calls += 1
        if failed:
            self._bucket_failures[index] += 1
            self.failures += 1
        if slow:
            self._bucket_slow[index] += 1
            self.slow_calls += 1

    def record_success(self, now: float) -> None:
        self.expire(now)
        self._bucket_calls[self._head % self.size] += 1  # type: ignore[operator]
        self.calls += 1

    def reset(self) -> None:
        size = self.size
        self._bucket_calls = [0] * size
        self._bucket_failures = [0] * size
        self._bucket_slow = [0] * size
        self._head = None
        self.calls = self.failures = self.slow_calls = 0


def make_window(kind: WindowType, size: int) -> CountWindow | TimeWindow:
    """The window for a configuration: ``size`` calls or seconds."""
    if kind is WindowType.COUNT_BASED:
        return CountWindow(size)
    return TimeWindow(size)
