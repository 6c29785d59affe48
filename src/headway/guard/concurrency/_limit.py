"""The contract between concurrency-limit *algorithms* and the guards that enforce a limit.

An algorithm only answers "how many requests may be in flight now?" and learns from samples; the
enforcing guards (the bulkhead/limiter in this package, the priority admission queue in
``headway.guard.shed``) own the counting and the waiting. This split is Netflix
concurrency-limits' ``Limit`` / ``Limiter`` split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class LimitAlgorithm(Protocol):
    """Decides the current concurrency limit from measured samples."""

    @property
    def limit(self) -> int:
        """Requests that may be in flight right now (always >= 1)."""
        ...

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> None:
        """Learn from one finished request.

        ``start`` is when it was admitted (clock seconds), ``rtt`` how long it took, ``inflight``
        how many were in flight when it was admitted, ``dropped`` whether it failed in a way that
        signals overload (timeout, 503, rejection by the upstream).
        """
        ...

    def subscribe(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(new_limit)`` whenever the limit changes (for metrics and waiters)."""
        ...


class FixedLimit:
    """A static limit: the bulkhead's algorithm, and the baseline to compare adaptive ones with."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> None:
        return None

    def subscribe(self, listener: Callable[[int], None]) -> None:
        return None

    def __repr__(self) -> str:
        return f"FixedLimit({self._limit})"
