"""CoDel-style overload detection from queueing *delay* (not queue length).

The rule is folly's ``Codel`` (facebook/folly ``folly/executors/Codel.h``; see
shared/reference/overload-and-resilience.md §1.7): the queue is *overloaded* when the minimum
queueing delay seen during the last ``interval`` exceeded ``target``; while overloaded, a request
that has waited ``2 * target`` is dropped. folly found this "slough" rule works better for
services than CoDel's packet schedule of dropping every ``interval/sqrt(n)``. A minimum, not a
mean, is the point: a queue whose delay dipped below target even once in the interval was
draining (a burst), only one that never did is a *standing* queue.

This class only judges; the shedder decides what a sample is and when an interval ends.
"""

from __future__ import annotations

import math
from typing import Final

# folly Codel defaults (folly/executors/Codel.cpp): codel_target_delay 5 ms, codel_interval
# 100 ms. For LLM traffic, where one request runs for seconds, both should be raised.
DEFAULT_TARGET: Final = 0.005
DEFAULT_INTERVAL: Final = 0.1


class QueueDelayDetector:
    """Tracks the minimum queueing delay per interval and whether the queue is standing."""

    def __init__(self, target: float = DEFAULT_TARGET, interval: float = DEFAULT_INTERVAL) -> None:
        if target <= 0 or interval <= 0:
            raise ValueError(f"target and interval must be > 0, got {target}, {interval}")
        self.target = target
        self.interval = interval
        #: folly: while overloaded, drop what waited longer than 2 x target.
        self.drop_after = 2.0 * target
        self.overloaded = False
        #: Minimum delay of the last closed interval (0.0 before the first).
        self.last_min = 0.0
        self._min = math.inf

    def start_interval(self) -> None:
        self._min = math.inf

    def observe(self, delay: float) -> None:
        if delay < self._min:
            self._min = delay

    def close_interval(self) -> bool:
        """Judge the interval that just ended and start the next; True when the state flipped.

        An interval with no sample leaves the state as it was (no evidence either way).
        """
        low = self._min
        self._min = math.inf
        if low == math.inf:
            return False
        self.last_min = low
        overloaded = low > self.target
        changed = overloaded != self.overloaded
        self.overloaded = overloaded
        return changed

    @property
    def load(self) -> float:
        """folly's load estimate: min(1, min delay / (2 x target))."""
        return min(1.0, self.last_min / self.drop_after)
