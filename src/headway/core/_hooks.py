"""The one hook interface through which guards report what they do.

Two halves, both cheap on the hot path: every guard keeps plain counters that an observer can
*pull* at any time (``snapshot()``), and *pushes* notable events (a rejection and its reason, a
state change, a new limit) to its :class:`Hooks`. No global registry: whoever builds a guard
decides where its events go, so two gateways in one process never mix numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Final, Protocol


class Hooks(Protocol):
    """Receives guard events; the observe layer implements this to feed metrics and logs."""

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        """``kind`` is the primitive (``"breaker"``), ``name`` the instance (``"pool-a/ep1"``),
        ``event`` what happened (``"rejected"``, ``"state.open"``, ``"limit"``), ``value`` a
        count or a measured value (for gauges such as a new concurrency limit)."""
        ...


class Observable(Protocol):
    """A guard whose counters and gauges can be read at any time."""

    kind: str
    name: str

    def snapshot(self) -> Mapping[str, float]: ...


class NoHooks:
    """Discards events; the default, so an unobserved guard pays one no-op call at most."""

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        return None


NO_HOOKS: Final[Hooks] = NoHooks()


class RecordingHooks:
    """Keeps every event, in order and tallied; for tests and for quick debugging."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, float]] = []
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        self.events.append((kind, name, event, value))
        self.counts[(kind, name, event)] += 1

    def names(self, kind: str | None = None) -> list[str]:
        """The event names seen, in order, optionally for one kind of guard."""
        return [e for k, _, e, _ in self.events if kind is None or k == kind]


class FanoutHooks:
    """Sends each event to several hooks (e.g. metrics and an access-log decision trail)."""

    def __init__(self, *targets: Hooks) -> None:
        self._targets = targets

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        for target in self._targets:
            target.on_event(kind, name, event, value)
