"""How long to wait before a retry: exponential backoff with full jitter.

Guarantees: the n-th retry (``attempt`` 0 for the first) waits a uniformly random time in
``[0, min(cap, base * 2**attempt))``; the wait never exceeds ``cap``; with an injected random
source the schedule is exactly reproducible. Full jitter spreads retries of clients that failed
together, so they do not come back together (AWS Architecture Blog, "Exponential Backoff and
Jitter", 2015; Envoy's router uses the same scheme).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Final, Protocol

#: Envoy router retry backoff base: 25 ms (router_filter.rst, "x-envoy-retry-on" backoff).
DEFAULT_BASE: Final = 0.025
#: Envoy router retry backoff cap: 10x the base, 250 ms (router_filter.rst).
DEFAULT_CAP: Final = 0.250


class Backoff(Protocol):
    """Decides the wait before retry number ``attempt`` (0 for the first retry)."""

    def delay(self, attempt: int) -> float: ...


class ExponentialBackoff:
    """Full-jitter exponential backoff: ``uniform(0, min(cap, base * 2**attempt))``."""

    def __init__(
        self,
        base: float = DEFAULT_BASE,
        cap: float = DEFAULT_CAP,
        *,
        random: Callable[[], float] | None = None,
        rng: _random.Random | None = None,
    ) -> None:
        if base < 0 or cap < 0:
            raise ValueError(f"base and cap must be >= 0, got base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        if random is None:
            random = (rng or _random.Random()).random
        self._random = random

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the wait before retry ``attempt``."""
        # 2**64 * any sane base is far past any cap; stopping there avoids float overflow.
        if attempt >= 64:
            return self.cap
        return min(self.cap, self.base * (1 << attempt))

    def delay(self, attempt: int) -> float:
        return self._random() * self.ceiling(attempt)

    def __repr__(self) -> str:
        return f"ExponentialBackoff(base={self.base}, cap={self.cap})"
