"""Change notification shared by the adaptive limit algorithms.

Guarantees: listeners are called synchronously, in subscription order, exactly once per change
of the integer limit, and never when a sample leaves the integer limit unchanged.
"""

from __future__ import annotations

from collections.abc import Callable


class LimitListeners:
    """Base of adaptive algorithms: holds the integer limit and tells subscribers when it moves."""

    def __init__(self, initial: int) -> None:
        self._limit = initial
        self._listeners: list[Callable[[int], None]] = []

    @property
    def limit(self) -> int:
        return self._limit

    def subscribe(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def _set_limit(self, new_limit: int) -> None:
        if new_limit != self._limit:
            self._limit = new_limit
            for listener in self._listeners:
                listener(new_limit)


def check_bounds(initial: int, min_limit: int, max_limit: int) -> None:
    if min_limit < 1:
        raise ValueError(f"min_limit must be >= 1, got {min_limit}")
    if max_limit < min_limit:
        raise ValueError(f"max_limit ({max_limit}) must be >= min_limit ({min_limit})")
    if not min_limit <= initial <= max_limit:
        raise ValueError(f"initial_limit {initial} must lie in [{min_limit}, {max_limit}]")
