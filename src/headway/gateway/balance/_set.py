"""An upstream pool's endpoints, their health, and the strategy that picks among them.

:class:`EndpointSet` owns the mechanism around a strategy: which endpoints are candidates now
(not ejected, breaker not open), outlier ejection and readmission (policy in ``_outlier``),
and panic mode. The candidate list is rebuilt only when health changes (an ejection, a breaker
state change, membership or weight) or when the earliest known expiry passes, so ``pick()`` is
a clock read, a comparison and the strategy's own work.

Panic mode (Envoy ``panic_threshold``, default 50%, ref §1.9): when fewer than that share of
the endpoints are available, health is ignored and traffic spreads over all of them, because
sending everything to the few survivors would overload them too and traffic must never go to
zero. Drained endpoints (:meth:`EndpointSet.drain`) are never candidates, not even in panic.
Guarantees: ``pick()`` returns ``None`` only for an empty set or when every endpoint is
drained; readmission happens at exactly the ejection's end time; events go to ``hooks`` with
kind ``"balancer"``: ``ejected`` (value: seconds out), ``readmitted``, ``ejection_overflow``
(the cap stopped an ejection), ``drained``, ``undrained`` under ``pool/endpoint``, and
``panic`` (value 1 on entering, 0 on leaving) under the pool name.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final, Generic, TypeVar

from headway.core import NO_HOOKS, REAL_CLOCK, Clock, Hooks
from headway.guard.breaker import BreakerState, CircuitBreaker

from ._endpoint import Endpoint
from ._outlier import OutlierPolicy
from ._p2c import LeastOutstandingP2C
from ._strategy import Strategy

P = TypeVar("P")

# Envoy panic threshold default: 50% healthy (panic_threshold.rst; ref §0 and §1.9, §4.2).
DEFAULT_PANIC_THRESHOLD: Final = 50.0

_INF: Final = math.inf
_DEFAULT_POLICY: Final = OutlierPolicy()


class EndpointSet(Generic[P]):
    """Holds a pool's endpoints, ejects outliers and picks an endpoint per request."""

    kind = "balancer"

    def __init__(
        self,
        name: str,
        endpoints: Iterable[Endpoint[P]] = (),
        *,
        strategy: Strategy | None = None,
        outlier: OutlierPolicy | None = _DEFAULT_POLICY,
        panic_threshold: float = DEFAULT_PANIC_THRESHOLD,
        rng: random.Random | None = None,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        if not 0.0 <= panic_threshold <= 100.0:
            raise ValueError("panic_threshold must be within [0, 100]")
        self.name = name
        self._rng = rng if rng is not None else random.Random()
        self.strategy: Strategy = (
            strategy if strategy is not None else LeastOutstandingP2C(rng=self._rng)
        )
        #: The ejection policy; ``None`` disables outlier ejection.
        self.outlier = outlier
        self.panic_threshold = panic_threshold
        self._clock = clock
        self._now = clock.now
        self._hooks = hooks
        self._all: list[Endpoint[P]] = []
        self._candidates: list[Endpoint[P]] = []
        self._ejected: list[Endpoint[P]] = []
        self._next_check = -_INF
        #: In panic: fewer than ``panic_threshold`` percent of the endpoints are available.
        self.panic = False
        self.picks = 0
        self.ejections = 0
        self.ejections_overflow = 0
        self.readmissions = 0
        for ep in endpoints:
            self.add(ep)

    # -- membership -----------------------------------------------------------------------------

    def add(self, endpoint: Endpoint[P]) -> Endpoint[P]:
        """Add ``endpoint`` (its breaker, if any, is watched from now on)."""
        if any(ep.name == endpoint.name for ep in self._all):
            raise ValueError(f"pool {self.name!r} already has an endpoint {endpoint.name!r}")
        endpoint.qualified_name = f"{self.name}/{endpoint.name}"
        if self.outlier is not None:
            endpoint._eject_after = self.outlier.consecutive_failures
            endpoint._on_streak = self._on_failure_streak
        breaker = endpoint.breaker
        if breaker is not None:
            breaker.on_state_change(self._breaker_listener(endpoint, breaker))
            self._track_breaker(endpoint, breaker)
        self._all = [*self._all, endpoint]
        self._invalidate()
        return endpoint

    def remove(self, name: str) -> Endpoint[P] | None:
        """Take the endpoint called ``name`` out of rotation; in-flight requests still finish."""
        for ep in self._all:
            if ep.name == name:
                self._all = [other for other in self._all if other is not ep]
                if ep in self._ejected:
                    self._ejected.remove(ep)
                ep._on_streak = None
                self._invalidate()
                return ep
        return None

    def set_weight(self, name: str, weight: float) -> None:
        if not weight > 0.0 or weight == _INF:
            raise ValueError("weight must be a finite number > 0")
        self[name].weight = float(weight)
        # A new candidate list, so strategies recompute their per-list caches.
        self._candidates = []
        self._invalidate()

    def drain(self, name: str) -> Endpoint[P]:
        """Send no new request to ``name``; requests already there finish (Envoy's
        ``/drain_listeners`` and Kubernetes' endpoint termination do the same at their level).

        A drained endpoint is left out of the candidates even in panic mode, and panic is
        judged over the endpoints not drained: draining is an operator's intent, not ill
        health. Draining every endpoint leaves nothing to pick (``pick()`` returns ``None``)."""
        return self._set_drained(name, True)

    def undrain(self, name: str) -> Endpoint[P]:
        """Put a drained endpoint back in rotation (a no-op for one that is not drained)."""
        return self._set_drained(name, False)

    def _set_drained(self, name: str, drained: bool) -> Endpoint[P]:
        ep = self[name]
        if ep.drained != drained:
            ep.drained = drained
            self._hooks.on_event(
                self.kind, ep.qualified_name, "drained" if drained else "undrained", 1.0
            )
            self._invalidate()
        return ep

    def __getitem__(self, name: str) -> Endpoint[P]:
        for ep in self._all:
            if ep.name == name:
                return ep
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self._all)

    @property
    def endpoints(self) -> list[Endpoint[P]]:
        """All endpoints, available or not (a list that is replaced, never mutated)."""
        return self._all

    # -- picking --------------------------------------------------------------------------------

    def pick(
        self, key: str | None = None, exclude: Collection[Endpoint[Any]] | None = None
    ) -> Endpoint[P] | None:
        """An endpoint for one request; ``exclude`` the endpoints this request already tried."""
        if self._now() >= self._next_check:
            self._refresh(self._now())
        self.picks += 1
        return self.strategy.pick(self._candidates, key, exclude)

    @property
    def candidates(self) -> list[Endpoint[P]]:
        """The endpoints ``pick()`` chooses among now (all of them in panic)."""
        self._refresh(self._now())
        return self._candidates

    @property
    def healthy_count(self) -> int:
        """Endpoints available now (not ejected, breaker not open)."""
        now = self._now()
        self._refresh(now)
        return sum(1 for ep in self._all if ep.available_at(now))

    # -- health -----------------------------------------------------------------------------------

    def _invalidate(self) -> None:
        self._next_check = -_INF

    def _refresh(self, now: float) -> None:
        """Readmit expired ejections, recompute candidates, panic and the next expiry."""
        if self._ejected:
            still: list[Endpoint[P]] = []
            for ep in self._ejected:
                if now >= ep.ejected_until:
                    self._readmit(ep)
                else:
                    still.append(ep)
            self._ejected = still
        next_check = _INF
        serving = self._all
        if any(ep.drained for ep in serving):
            serving = [ep for ep in serving if not ep.drained]
        available: list[Endpoint[P]] = []
        for ep in serving:
            if ep.available_at(now):
                available.append(ep)
            else:
                until = max(ep.ejected_until, ep.breaker_until)
                if until < next_check:
                    next_check = until
        total = len(serving)
        panic = total > 0 and len(available) * 100.0 < self.panic_threshold * total
        if panic != self.panic:
            self.panic = panic
            self._hooks.on_event(self.kind, self.name, "panic", 1.0 if panic else 0.0)
        chosen = serving if panic else available
        old = self._candidates
        if len(chosen) != len(old) or any(a is not b for a, b in zip(chosen, old, strict=True)):
            # A new list object only when membership changed: strategies key caches on it.
            self._candidates = list(chosen)
        self._next_check = next_check

    def _readmit(self, ep: Endpoint[P]) -> None:
        ep.consecutive_failures = 0
        ep.readmitted_at = ep.ejected_until
        self.readmissions += 1
        self._hooks.on_event(self.kind, ep.qualified_name, "readmitted", 1.0)

    def _on_failure_streak(self, ep: Endpoint[Any]) -> None:
        policy = self.outlier
        now = self._now()
        if policy is None or now < ep.ejected_until:
            return  # already out: late failures of requests sent before the ejection
        self._refresh(now)
        if not policy.may_eject(len(self._ejected), len(self._all)):
            if ep.consecutive_failures == policy.consecutive_failures:
                self.ejections_overflow += 1
                self._hooks.on_event(self.kind, ep.qualified_name, "ejection_overflow", 1.0)
            return
        times = policy.decayed_times(ep.times_ejected, now - ep.readmitted_at) + 1
        ep.times_ejected = times
        seconds = policy.ejection_seconds(times)
        if policy.max_ejection_jitter > 0.0:
            seconds += self._rng.random() * policy.max_ejection_jitter
        ep.ejected_until = now + seconds
        ep.consecutive_failures = 0
        self._ejected.append(ep)
        self.ejections += 1
        self._hooks.on_event(self.kind, ep.qualified_name, "ejected", seconds)
        self._invalidate()

    def times_ejected(self, ep: Endpoint[Any]) -> int:
        """``ep.times_ejected`` as the policy sees it now (after its decay while admitted)."""
        now = self._now()
        if self.outlier is None or now < ep.ejected_until:
            return ep.times_ejected
        return self.outlier.decayed_times(ep.times_ejected, now - ep.readmitted_at)

    def _breaker_listener(
        self, ep: Endpoint[Any], breaker: CircuitBreaker
    ) -> Callable[[BreakerState, BreakerState], None]:
        def on_change(old: BreakerState, new: BreakerState) -> None:
            self._track_breaker(ep, breaker)

        return on_change

    def sync_breaker(self, ep: Endpoint[Any]) -> None:
        """Re-read ``ep``'s breaker: for changes its listeners do not see (``force_open`` on
        an already open breaker changes no state, so no listener runs)."""
        if ep.breaker is not None:
            self._track_breaker(ep, ep.breaker)

    def _track_breaker(self, ep: Endpoint[Any], breaker: CircuitBreaker) -> None:
        if breaker.state is BreakerState.OPEN:
            wait = breaker.retry_after
            # Forced open: out until an operator says otherwise. Otherwise back in rotation
            # when the open time ends, so a probe can reach it and close the breaker.
            ep.breaker_until = _INF if wait is None else self._now() + wait
        else:
            ep.breaker_until = -_INF
        self._invalidate()

    # -- observation ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        """Pool-level gauges and counters."""
        now = self._now()
        self._refresh(now)
        available = sum(1 for ep in self._all if ep.available_at(now))
        return {
            "endpoints": float(len(self._all)),
            "available": float(available),
            "ejected": float(len(self._ejected)),
            "panic": 1.0 if self.panic else 0.0,
            "outstanding": float(sum(ep.outstanding for ep in self._all)),
            "picks": float(self.picks),
            "ejections": float(self.ejections),
            "ejections_overflow": float(self.ejections_overflow),
            "readmissions": float(self.readmissions),
        }

    def endpoint_snapshots(self) -> dict[str, dict[str, float]]:
        """Per endpoint: outstanding, ewma_ms, ejected, times_ejected, weight, available..."""
        self._refresh(self._now())
        result: dict[str, dict[str, float]] = {}
        for ep in self._all:
            snap = ep.snapshot()
            snap["times_ejected"] = float(self.times_ejected(ep))
            result[ep.name] = snap
        return result

    def __repr__(self) -> str:
        return f"EndpointSet({self.name!r}, endpoints={len(self._all)}, panic={self.panic})"


Balancer = EndpointSet
"""The same class under the name the gateway's pools use."""
