"""The three states of a circuit breaker, numbered for gauges (``snapshot()["state"]``)."""

from __future__ import annotations

import enum


class BreakerState(enum.IntEnum):
    """Where a breaker is in its cycle; the value is the ``state`` gauge."""

    CLOSED = 0
    """Calls flow; outcomes fill the window; the breaker opens when a rate crosses its threshold."""
    OPEN = 1
    """Calls are refused with ``CircuitOpen`` until the open time has passed."""
    HALF_OPEN = 2
    """A limited number of probe calls decide between closing and opening again."""
