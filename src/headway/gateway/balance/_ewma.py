"""Peak-EWMA latency estimate: the arithmetic, apart from the endpoint that keeps it.

The estimate is Finagle's ``PeakEwma`` (finagle-core ``Balancers.p2cPeakEwma``) and tower's
``load::PeakEwma``, written in closed form:

- between samples the estimate *forgets*: read at time ``t`` it is
  ``est * exp(-(t - stamp) / tau)``, which is exactly what Finagle's and tower's reads do when
  they fold in a zero sample;
- a sample ``rtt`` above the current (decayed) estimate replaces it at once (the *peak*), so a
  slowing endpoint is avoided immediately;
- a sample at or below it is blended in: ``est' = est * w + rtt * (1 - w)`` with
  ``w = exp(-elapsed / tau)``, so the weight of a new sample grows with the time since the last.

Guarantees: pure functions of their arguments (no clock, no state); ``elapsed`` below zero is
treated as zero, so a clock that does not move never makes the estimate grow.
"""

from __future__ import annotations

import math
from typing import Final

_exp: Final = math.exp


def decayed(estimate: float, elapsed: float, tau: float) -> float:
    """The estimate ``elapsed`` seconds after it was last updated, with no sample since."""
    if elapsed <= 0.0:
        return estimate
    return estimate * _exp(-elapsed / tau)


def observe(estimate: float, elapsed: float, rtt: float, tau: float) -> float:
    """The estimate after a sample ``rtt`` taken ``elapsed`` seconds after the last update."""
    w = _exp(-elapsed / tau) if elapsed > 0.0 else 1.0
    current = estimate * w
    if rtt > current:
        # Peak: a slower sample than we expect is believed at once.
        return rtt
    return current + rtt * (1.0 - w)
