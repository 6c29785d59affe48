"""The decision trail: which guards acted on a request, for its access-log line and its span.

Guards report to :class:`headway.core.Hooks` from inside the request's task (hedges run in
child tasks, which share the request's context), so a hook can append what a guard decided to
the request's ``attributes`` with :func:`headway.core.annotate`. :class:`TrailHooks` does that
for the events an operator reads as a decision; :func:`decision_reasons` turns the attributes
into the access log's ``decisions`` list. Nothing is recorded outside a request.
"""

from __future__ import annotations

from collections.abc import Mapping

from headway.core import annotate

#: The attributes key TrailHooks appends to.
DECISIONS = "decisions"

# (kind, event) -> decision, for exact events.
_EXACT = {
    ("retry", "retry"): "retried",
    ("breaker", "rejected"): "breaker_open",
    ("ratelimit", "rejected"): "rate_limited",
    ("hedge", "hedge.sent"): "hedged",
}
# (kind, event prefix) -> decision.
_PREFIXES = (
    ("shed", "rejected.", "shed"),
    ("concurrency", "rejected.", "shed"),
    ("bulkhead", "rejected.", "shed"),
    ("tenant_quota", "rejected_", "rate_limited"),
)
# Attribute keys set directly by guards (``annotate(key, ...)``) -> decision.
_KEYS = {
    "fallback": "fell_back",
    "cached": "cached",
    "retried": "retried",
    "hedged": "hedged",
    "shed": "shed",
    "rate_limited": "rate_limited",
    "breaker_open": "breaker_open",
}


def decision_for(kind: str, event: str) -> str | None:
    """The decision a guard event stands for, if it is one an access log reports."""
    decision = _EXACT.get((kind, event))
    if decision is not None:
        return decision
    for k, prefix, name in _PREFIXES:
        if kind == k and event.startswith(prefix):
            return name
    return None


class TrailHooks:
    """A :class:`headway.core.Hooks` that annotates the current request with decisions."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], str | None] = {}

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        key = (kind, event)
        try:
            decision = self._cache[key]
        except KeyError:
            decision = self._cache[key] = decision_for(kind, event)
        if decision is not None:
            annotate(DECISIONS, decision)


def decision_reasons(attributes: Mapping[str, object] | None) -> list[str]:
    """The decisions recorded in a request's attributes, first occurrence order, no repeats."""
    if not attributes:
        return []
    out: list[str] = []
    for key, value in attributes.items():
        if key == DECISIONS and isinstance(value, list):
            for item in value:
                if isinstance(item, str) and item not in out:
                    out.append(item)
        else:
            decision = _KEYS.get(key)
            if decision is not None and decision not in out:
                out.append(decision)
    return out
