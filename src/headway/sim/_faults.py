"""Runtime-switchable fault injection with a seeded RNG.

Each request draws its fault plan once, on arrival, from one ``random.Random``: one draw per
fault kind in a fixed order, so the same seed and the same request sequence give the same
faults. Plans are small immutable values the request handlers act on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ._config import FaultConfig

__all__ = ["FaultPlan", "Faults"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    error_status: int = 0  # 0 = no error
    retry_after: float | None = None
    extra_latency: float = 0.0
    hang: bool = False
    reset: bool = False
    stall_after: int = -1  # chunk index after which the stream stalls; -1 = no stall
    stall_seconds: float = 0.0
    malformed_after: int = -1  # chunk index replaced by a malformed chunk; -1 = none


NO_FAULT = FaultPlan()


class Faults:
    """The live fault settings; ``update`` swaps them atomically."""

    def __init__(self, config: FaultConfig, seed: int = 0) -> None:
        self._initial = config
        self.config = config
        self._rng = random.Random(seed)
        self.injected = 0

    def update(self, changes: dict[str, Any]) -> FaultConfig:
        """Apply a partial update (``seed`` re-seeds the RNG); ValueError on bad input."""
        changes = dict(changes)
        seed = changes.pop("seed", None)
        config = self.config.updated(changes)
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError("seed must be an integer")
            self._rng.seed(seed)
        self.config = config
        return config

    def reset(self) -> FaultConfig:
        self.config = self._initial
        return self.config

    def plan(self) -> FaultPlan:
        c = self.config
        if not (
            c.error_rate
            or c.spike_rate
            or c.hang_rate
            or c.reset_rate
            or c.stall_rate
            or c.malformed_rate
        ):
            return NO_FAULT
        rand = self._rng.random
        error = rand() < c.error_rate
        spike = rand() < c.spike_rate
        hang = rand() < c.hang_rate
        reset = rand() < c.reset_rate
        stall = rand() < c.stall_rate
        malformed = rand() < c.malformed_rate
        if not (error or spike or hang or reset or stall or malformed):
            return NO_FAULT
        self.injected += 1
        return FaultPlan(
            error_status=c.error_status if error else 0,
            retry_after=c.error_retry_after,
            extra_latency=c.spike_seconds if spike else 0.0,
            hang=hang,
            reset=reset,
            stall_after=c.stall_after_chunks if stall else -1,
            stall_seconds=c.stall_seconds,
            malformed_after=c.malformed_after_chunks if malformed else -1,
        )
