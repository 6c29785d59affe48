"""The embedded default store: per-key GCRA state in a dict, bounded in memory.

Guarantees:
- Steps are atomic because they never yield: the hot path is a plain function call.
- Memory is bounded twice over. A key whose TAT is not after ``now`` is indistinguishable from
  a fresh key, so it is dropped: an amortised sweep runs once every ``max(1024, len)`` new keys
  (O(1) amortised per new key). And never more than ``max_keys`` keys are held: when full, the
  store first sweeps expired keys (at most once per ``max_keys // 8`` new keys, so a flood of
  live keys cannot make every insert O(n)), then evicts the oldest-inserted key (FIFO, O(1)).
  An evicted key restarts fresh, i.e. it may get one extra burst: the price of bounded memory,
  counted in ``evicted``.
"""

from __future__ import annotations

import math
from typing import Final

from headway.core import REAL_CLOCK, Clock

from ._gcra import Decision, gcra_step
from ._limit_store import SyncLimitStore

# Our choice: ~100 bytes per entry, so 100k tenants/keys cost ~10 MB at most.
DEFAULT_MAX_KEYS: Final = 100_000
# Sweep no more often than every 1024 new keys, so small stores are not swept constantly.
_MIN_SWEEP_INTERVAL: Final = 1024


class MemoryStore(SyncLimitStore):
    """In-process :class:`~headway.store.SyncLimitStore`; not shared between processes."""

    sync = True

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, *, clock: Clock = REAL_CLOCK) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._inserts = 0
        self._sweep_every = _MIN_SWEEP_INTERVAL
        self.errors = 0
        self.evicted = 0

    def admit(
        self, key: str, emission_interval: float, tolerance: float, cost: float, now: float
    ) -> float:
        tats = self._tats
        tat = tats.get(key)
        base = now if tat is None or tat < now else tat
        increment = cost * emission_interval
        new_tat = base + increment
        allow_at = new_tat - tolerance
        if allow_at > now:
            return math.inf if increment > tolerance else allow_at - now
        if tat is None:
            self._insert(key, new_tat, now)
        else:
            tats[key] = new_tat
        return 0.0

    def acquire_nowait(
        self, key: str, emission_interval: float, tolerance: float, cost: float, now: float
    ) -> Decision:
        return self._step(key, emission_interval, tolerance, cost, now, False)

    def adjust_nowait(
        self, key: str, emission_interval: float, tolerance: float, delta: float, now: float
    ) -> Decision:
        return self._step(key, emission_interval, tolerance, delta, now, True)

    async def acquire(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        cost: float = 1.0,
        now: float | None = None,
    ) -> Decision:
        if now is None:
            now = self._clock.now()
        return self._step(key, emission_interval, tolerance, cost, now, False)

    async def adjust(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        delta: float,
        now: float | None = None,
    ) -> Decision:
        if now is None:
            now = self._clock.now()
        return self._step(key, emission_interval, tolerance, delta, now, True)

    def _step(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        cost: float,
        now: float,
        force: bool,
    ) -> Decision:
        tats = self._tats
        tat = tats.get(key)
        new_tat, decision = gcra_step(tat, now, emission_interval, tolerance, cost, force)
        if decision.allowed:
            if new_tat <= now:
                tats.pop(key, None)
            elif tat is None:
                self._insert(key, new_tat, now)
            else:
                tats[key] = new_tat
        return decision

    def _insert(self, key: str, tat: float, now: float) -> None:
        tats = self._tats
        self._inserts += 1
        if self._inserts >= self._sweep_every:
            self.sweep(now)
        if len(tats) >= self.max_keys:
            if self._inserts >= self.max_keys // 8:
                self.sweep(now)
            while len(tats) >= self.max_keys:
                del tats[next(iter(tats))]
                self.evicted += 1
        tats[key] = tat

    def sweep(self, now: float | None = None) -> int:
        """Drop every key that is back to fresh; returns how many were dropped."""
        if now is None:
            now = self._clock.now()
        tats = self._tats
        expired = [key for key, tat in tats.items() if tat <= now]
        for key in expired:
            del tats[key]
        self._inserts = 0
        self._sweep_every = max(_MIN_SWEEP_INTERVAL, len(tats))
        return len(expired)

    def tat(self, key: str) -> float | None:
        """The stored theoretical arrival time of ``key`` (None when fresh or dropped)."""
        return self._tats.get(key)

    def tracked_keys(self) -> int:
        return len(self._tats)

    def __len__(self) -> int:
        return len(self._tats)

    def clear(self) -> None:
        self._tats.clear()

    async def aclose(self) -> None:
        self._tats.clear()

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._tats)}, max_keys={self.max_keys})"
