"""Guard events (pushed through :class:`headway.core.Hooks`) turned into Prometheus metrics.

Guards push only notable events (a rejection, a state change, a new limit), so the cost that
matters is per event, not per request: the first event of each ``(kind, name, event)`` decides
what it means and binds the labelled child once; later events are one dict lookup and one
``inc``/``set``. Names and events come from code and configuration (guard names, a fixed set of
event strings), so the series they create are bounded.

What each event becomes (everything else counts in ``headway_guard_events_total``):

==========================================  ===============================================
``breaker`` ``state.<s>`` (value = state)    ``headway_breaker_state`` = value and
                                             ``headway_breaker_transitions_total{state}``
any ``rejected``, ``rejected.<r>``,         ``headway_rejections_total{kind,name,reason}``
``rejected_<r>``                             (a bare ``rejected`` takes the kind's reason)
``shed`` ``shed.<priority>``                 ``headway_shed_total{name,priority}``
``limit`` (value = new limit)                ``headway_concurrency_limit{kind,name}``
``hedge`` ``hedge.sent`` / ``hedge.won``     ``headway_hedges_sent_total`` / ``_won_total``
``retry`` ``retry``                          ``headway_retries_total{name}``
==========================================  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

Action = Callable[[float], object]

# What a bare "rejected" means for each kind of guard (the decision an operator reads).
_BARE_REASONS = {
    "breaker": "breaker_open",
    "ratelimit": "rate_limited",
}


class MetricsHooks:
    """A :class:`headway.core.Hooks` that feeds guard events into a registry's metrics."""

    __slots__ = (
        "_actions",
        "breaker_state",
        "breaker_transitions",
        "events",
        "hedges_sent",
        "hedges_won",
        "limit",
        "rejections",
        "retries",
        "shed",
    )

    def __init__(self, registry: CollectorRegistry, *, prefix: str = "headway") -> None:
        self._actions: dict[tuple[str, str, str], Action] = {}
        self.events = Counter(
            f"{prefix}_guard_events",
            "Guard events with no dedicated metric, by guard kind, name and event.",
            ["kind", "name", "event"],
            registry=registry,
        )
        self.rejections = Counter(
            f"{prefix}_rejections",
            "Calls refused by a guard, by guard kind, name and reason.",
            ["kind", "name", "reason"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            f"{prefix}_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ["name"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            f"{prefix}_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["name", "state"],
            registry=registry,
        )
        self.shed = Counter(
            f"{prefix}_shed",
            "Requests shed by admission control, by priority.",
            ["name", "priority"],
            registry=registry,
        )
        self.limit = Gauge(
            f"{prefix}_concurrency_limit",
            "Current (adaptive) concurrency limit.",
            ["kind", "name"],
            registry=registry,
        )
        self.hedges_sent = Counter(
            f"{prefix}_hedges_sent", "Hedged requests sent.", ["name"], registry=registry
        )
        self.hedges_won = Counter(
            f"{prefix}_hedges_won",
            "Hedged requests that answered before the original.",
            ["name"],
            registry=registry,
        )
        self.retries = Counter(
            f"{prefix}_retries", "Retries sent after a failed attempt.", ["name"], registry=registry
        )

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        key = (kind, name, event)
        action = self._actions.get(key)
        if action is None:
            action = self._actions[key] = self._bind(kind, name, event)
        action(value)

    def _bind(self, kind: str, name: str, event: str) -> Action:
        """Decide once what an event means and return the call that records it."""
        if kind == "breaker" and event.startswith("state."):
            gauge = self.breaker_state.labels(name)
            counter = self.breaker_transitions.labels(name, event[6:])

            def transition(value: float) -> None:
                gauge.set(value)
                counter.inc()

            return transition
        reason = _rejection_reason(kind, event)
        if reason is not None:
            return _count(self.rejections.labels(kind, name, reason))
        if kind == "shed" and event.startswith("shed."):
            return _count(self.shed.labels(name, event[5:]))
        if event == "limit":
            return self.limit.labels(kind, name).set
        if kind == "hedge" and event == "hedge.sent":
            return _count(self.hedges_sent.labels(name))
        if kind == "hedge" and event == "hedge.won":
            return _count(self.hedges_won.labels(name))
        if kind == "retry" and event == "retry":
            return _count(self.retries.labels(name))
        return _count(self.events.labels(kind, name, event))


def _rejection_reason(kind: str, event: str) -> str | None:
    if event == "rejected":
        return _BARE_REASONS.get(kind, kind)
    if event.startswith(("rejected.", "rejected_")):
        return event[9:]
    return None


def _count(child: Counter) -> Action:
    """Events carry a measured value (an attempt number, a delay); the count is what matters."""
    inc = child.inc

    def count(value: float) -> None:
        inc()

    return count
