"""A retry budget: retries may add at most ``ratio`` of the traffic, plus a small floor.

This bounds retry amplification for a whole client, not per request (Finagle's ``RetryBudget``;
Envoy's ``retry_budget``; SRE book ch. 21-22). The mechanism is Finagle's leaky token bucket:
each request deposits ``ratio`` tokens, each retry (or hedge) withdraws 1, and every deposit and
withdrawal expires ``ttl`` after it was made; a constant reserve of ``min_retries_per_second *
ttl`` tokens lets lightly loaded clients retry at all.

Guarantees: a withdrawal succeeds only while ``reserve + live deposits - live withdrawals >= 1``,
so within any span in which no entry expires, retries <= ratio * requests + reserve. Time is cut
into ``slices`` equal slices of ``ttl``; an entry made in slice ``k`` expires when slice
``k + slices`` begins (so it lives between ``ttl - ttl/slices`` and ``ttl``). Amounts are kept in
integers, so the accounting is exact, and state is a fixed ring of counters: O(1) memory and
time per call, no allocation. One budget may be shared by several guards (pass the instance).
"""

from __future__ import annotations

from typing import Final

from headway.core import REAL_CLOCK, Clock

# Token amounts are integers in millionths of a retry, so ratios like 0.2 are exact.
_SCALE: Final = 1_000_000

#: Finagle RetryBudget default percentCanRetry 0.2 (RetryBudget.scala); Envoy's budget_percent
#: is also 20% (circuit_breaker.proto).
DEFAULT_RATIO: Final = 0.2
#: Finagle RetryBudget default ttl 10 s (RetryBudget.scala; Linkerd 1 uses the same).
DEFAULT_TTL: Final = 10.0
#: Finagle RetryBudget default minRetriesPerSec 10 (RetryBudget.scala).
DEFAULT_MIN_RETRIES_PER_SECOND: Final = 10.0
#: Finagle's WindowedAdder cuts its window into 10 slices.
DEFAULT_SLICES: Final = 10


class RetryBudget:
    """Token bucket whose tokens expire: ``deposit()`` per request, ``try_withdraw()`` per retry."""

    def __init__(
        self,
        ratio: float = DEFAULT_RATIO,
        *,
        ttl: float = DEFAULT_TTL,
        min_retries_per_second: float = DEFAULT_MIN_RETRIES_PER_SECOND,
        slices: int = DEFAULT_SLICES,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        if ratio < 0:
            raise ValueError(f"ratio must be >= 0, got {ratio}")
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, got {ttl}")
        if min_retries_per_second < 0:
            raise ValueError(f"min_retries_per_second must be >= 0, got {min_retries_per_second}")
        if slices < 1:
            raise ValueError(f"slices must be >= 1, got {slices}")
        self.ratio = ratio
        self.ttl = ttl
        self.min_retries_per_second = min_retries_per_second
        self._clock = clock
        self._deposit = round(ratio * _SCALE)
        self._reserve = round(min_retries_per_second * ttl * _SCALE)
        self._slice = ttl / slices
        self._buckets = [0] * slices
        self._index = 0
        self._live = 0  # sum of the buckets: live deposits minus live withdrawals
        self._epoch = int(clock.now() // self._slice)
        self.deposits = 0
        self.withdrawals = 0
        self.refused = 0

    def _roll(self, epoch: int) -> None:
        """Expire the slices that ended before slice ``epoch`` began."""
        buckets = self._buckets
        n = len(buckets)
        gap = epoch - self._epoch
        self._epoch = epoch
        if gap >= n:
            for i in range(n):
                buckets[i] = 0
            self._live = 0
            return
        index = self._index
        live = self._live
        for _ in range(gap):
            index = (index + 1) % n
            live -= buckets[index]
            buckets[index] = 0
        self._index = index
        self._live = live

    def deposit(self) -> None:
        """Credit one request: ``ratio`` retries become available for ``ttl``."""
        epoch = int(self._clock.now() // self._slice)
        if epoch != self._epoch:
            self._roll(epoch)
        amount = self._deposit
        self._buckets[self._index] += amount
        self._live += amount
        self.deposits += 1

    def try_withdraw(self) -> bool:
        """Take one retry's worth of tokens if available; False means do not retry."""
        epoch = int(self._clock.now() // self._slice)
        if epoch != self._epoch:
            self._roll(epoch)
        if self._live + self._reserve < _SCALE:
            self.refused += 1
            return False
        self._buckets[self._index] -= _SCALE
        self._live -= _SCALE
        self.withdrawals += 1
        return True

    @property
    def balance(self) -> float:
        """Retries that could be taken right now (may be fractional)."""
        epoch = int(self._clock.now() // self._slice)
        if epoch != self._epoch:
            self._roll(epoch)
        return (self._live + self._reserve) / _SCALE

    def snapshot(self) -> dict[str, float]:
        return {
            "balance": self.balance,
            "deposits": self.deposits,
            "withdrawals": self.withdrawals,
            "refused": self.refused,
        }

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, ttl={self.ttl}, "
            f"min_retries_per_second={self.min_retries_per_second})"
        )
