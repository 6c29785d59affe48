"""The recent completion rate, for ``retry_after`` hints by Little's law.

"You are N places from the front; requests finish at R per second; try again in N / R seconds."
The rate is measured over windows of at least ``window`` seconds (Netflix WindowedLimit's
default minimum window is 1 s, concurrency-limits HEAD 78a74b9) from a running count of
completions the owner keeps anyway, so measuring costs nothing on the request path: the work
happens only when a hint is asked for, i.e. on a rejection.
"""

from __future__ import annotations

from typing import Final

from headway.core import Clock

DEFAULT_WINDOW: Final = 1.0


class CompletionRate:
    """Completions per second over the last full window (or the current partial one)."""

    def __init__(self, clock: Clock, window: float = DEFAULT_WINDOW) -> None:
        self._clock = clock
        self._window = window
        self._mark_time = clock.now()
        self._mark_count = 0
        self._rate = 0.0

    def per_second(self, completed: int) -> float:
        """The rate given the owner's running count of completions; 0.0 while unknown.

        A window closes once it is ``window`` long and saw completions; until then the last
        closed window's rate stands, or, before any, the current window's partial rate.
        """
        now = self._clock.now()
        elapsed = now - self._mark_time
        done = completed - self._mark_count
        if done > 0 and elapsed >= self._window:
            self._rate = done / elapsed
            self._mark_time = now
            self._mark_count = completed
        elif self._rate == 0.0 and done > 0 and elapsed > 0:
            return done / elapsed
        return self._rate
