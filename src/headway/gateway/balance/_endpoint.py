"""One upstream endpoint as the balancer sees it: weight, requests in flight, latency, health.

An :class:`Endpoint` carries an opaque ``payload`` (the connection pool the gateway attaches)
and the live numbers the strategies read: ``outstanding`` (requests in flight), a peak-EWMA
latency estimate (see ``_ewma``), and health (ejected until when, breaker open until when).

Protocol per request: ``start = ep.start()`` when the request is sent, then exactly one of
``ep.finish(start, ...)`` (an outcome the caller classified) or ``ep.release()`` (abandoned,
e.g. cancelled by the client: nothing learnt). Guarantees: ``outstanding`` never goes below
zero; a failure never lowers the latency estimate (a fast-failing endpoint must not look fast);
the run of consecutive failures resets on any success; when an endpoint belongs to an
:class:`~headway.gateway.balance.EndpointSet`, reaching the ejection threshold ejects it inline,
within the ``finish`` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from headway.core import REAL_CLOCK, Clock

from ._ewma import decayed, observe

if TYPE_CHECKING:
    from headway.guard.breaker import CircuitBreaker

P = TypeVar("P")

# Finagle p2cPeakEwma decayTime default: 10 s (finagle-core Balancers.scala); tower's
# load::PeakEwma takes the same "decay" parameter from its caller.
DEFAULT_DECAY_SECONDS: Final = 10.0
# The estimate before the first sample. tower's PeakEwma asks its caller for a `default_rtt`;
# Finagle starts at 0 with a penalty for unanswered endpoints. 30 ms is our choice: low enough
# that a new endpoint is tried soon, and replaced by the first real sample (peak rule).
DEFAULT_RTT_SECONDS: Final = 0.03

_INF: Final = math.inf


class Endpoint(Generic[P]):
    """State of one upstream endpoint; generic over the ``payload`` the gateway attaches."""

    def __init__(
        self,
        name: str,
        payload: P,
        *,
        weight: float = 1.0,
        decay_seconds: float = DEFAULT_DECAY_SECONDS,
        default_rtt: float = DEFAULT_RTT_SECONDS,
        breaker: CircuitBreaker | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        if not weight > 0.0 or weight == _INF:
            raise ValueError(f"endpoint {name!r}: weight must be a finite number > 0")
        if not decay_seconds > 0.0:
            raise ValueError(f"endpoint {name!r}: decay_seconds must be > 0")
        self.name = name
        #: ``pool/endpoint`` once in a set: the name used in hook events.
        self.qualified_name = name
        self.payload = payload
        self.weight = float(weight)
        self.tau = float(decay_seconds)
        #: A breaker guarding this endpoint, if any; while it is open the endpoint is unavailable.
        self.breaker = breaker
        self.clock = clock
        #: Requests sent and not yet finished or released.
        self.outstanding = 0
        #: Peak-EWMA latency estimate in seconds as of ``_stamp`` (read with :meth:`ewma_at`).
        self.ewma = float(default_rtt)
        self._stamp = clock.now()
        #: Outcomes recorded, failures among them, and the current run of failures.
        self.requests = 0
        self.failures = 0
        self.consecutive_failures = 0
        #: Ejected while ``now < ejected_until``; ``-inf`` when never ejected.
        self.ejected_until = -_INF
        #: When the last ejection ended (for the decay of ``times_ejected``).
        self.readmitted_at = -_INF
        self.times_ejected = 0
        #: The breaker refuses calls while ``now < breaker_until`` (``inf`` when forced open).
        self.breaker_until = -_INF
        #: Drained by an operator: picked for no new request (in-flight ones finish); set
        #: through :meth:`EndpointSet.drain` so the candidate list is rebuilt.
        self.drained = False
        # Set by the owning EndpointSet: the ejection threshold and who to tell on reaching it.
        self._eject_after = 0
        self._on_streak: Callable[[Endpoint[P]], None] | None = None

    # -- per request --------------------------------------------------------------------------

    def start(self) -> float:
        """A request is being sent here; returns its start time, to pass to :meth:`finish`."""
        self.outstanding += 1
        return self.clock.now()

    def finish(
        self,
        start: float,
        latency: float | None = None,
        ok: bool = True,
        error_kind: str | None = None,
    ) -> None:
        """The request begun at ``start`` ended; ``latency`` defaults to the time since then.

        ``ok`` is the caller's verdict for outlier detection (a 4xx the client caused is ok;
        a 5xx, connect error or timeout is not). ``error_kind`` is informational.
        """
        if self.outstanding > 0:
            self.outstanding -= 1
        now = self.clock.now()
        if latency is None:
            latency = now - start
        self.requests += 1
        elapsed = now - self._stamp
        if ok:
            self.ewma = observe(self.ewma, elapsed, latency, self.tau)
            self._stamp = now
            self.consecutive_failures = 0
            return
        # A failure may raise the estimate but never lower it: fast errors must not attract.
        current = decayed(self.ewma, elapsed, self.tau)
        self.ewma = latency if latency > current else current
        self._stamp = now
        self.failures += 1
        self.consecutive_failures += 1
        if self._on_streak is not None and self.consecutive_failures >= self._eject_after:
            self._on_streak(self)

    def release(self) -> None:
        """The request was abandoned before an outcome: free its slot, learn nothing."""
        if self.outstanding > 0:
            self.outstanding -= 1

    # -- reading --------------------------------------------------------------------------------

    def ewma_at(self, now: float) -> float:
        """The latency estimate (seconds) at ``now``, decayed since the last sample."""
        return decayed(self.ewma, now - self._stamp, self.tau)

    def ejected_at(self, now: float) -> bool:
        return now < self.ejected_until

    def available_at(self, now: float) -> bool:
        """Not ejected and its breaker (if any) not open at ``now``."""
        return now >= self.ejected_until and now >= self.breaker_until

    @property
    def ejected(self) -> bool:
        return self.clock.now() < self.ejected_until

    @property
    def available(self) -> bool:
        return self.available_at(self.clock.now())

    def snapshot(self) -> dict[str, float]:
        """Plain gauges and counters for metrics and the admin API."""
        now = self.clock.now()
        return {
            "outstanding": float(self.outstanding),
            "ewma_ms": self.ewma_at(now) * 1000.0,
            "ejected": 1.0 if now < self.ejected_until else 0.0,
            "times_ejected": float(self.times_ejected),
            "weight": self.weight,
            "available": 1.0 if self.available_at(now) else 0.0,
            "drained": 1.0 if self.drained else 0.0,
            "requests": float(self.requests),
            "failures": float(self.failures),
            "consecutive_failures": float(self.consecutive_failures),
        }

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r}, weight={self.weight:g}, outstanding={self.outstanding})"
