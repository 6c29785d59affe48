"""DDSketch: a mergeable quantile sketch with a relative-error guarantee.

The idea is Masson, Rim and Lee, "DDSketch: A Fast and Fully-Mergeable Quantile Sketch with
Relative-Error Guarantees" (VLDB 2019); the code is ours. With ``gamma = (1 + a) / (1 - a)``
a positive value ``x`` falls in bucket ``i = ceil(log_gamma(x))``, which covers
``(gamma**(i-1), gamma**i]``; the bucket is represented by ``2 * gamma**i / (gamma + 1)``, which
is within a relative error ``a`` of every value in it.

Guarantees: ``quantile(q)`` returns a value within relative error ``alpha`` of the stored
element of rank ``floor(q * (count - 1))``; values at or below ``min_value`` count as zero and
are reported as 0, and the minimum and maximum are exact. Two sketches with the same ``alpha``
merge exactly (the merge equals the sketch of the concatenated streams). Latencies are never
negative, so negative inputs are treated as 0. Memory is bounded by ``max_buckets``: past it
the lowest buckets collapse into one (the high quantiles, which latency tails need, stay
accurate). With the default ``alpha = 0.01`` the range 1 ns .. 1 day needs about 1600
buckets, so the default of 2048 never collapses for latencies.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# DDSketch paper's evaluation and Datadog's default relative accuracy: 1%.
DEFAULT_ALPHA = 0.01
# Our choice: covers 1 ns .. 1 day at alpha = 0.01 (log(1e14) / log(1.0202) ~= 1611 buckets).
DEFAULT_MAX_BUCKETS = 2048
# Values at or below this (seconds) are recorded as 0: 1 ns is below any clock's resolution.
DEFAULT_MIN_VALUE = 1e-9


class DDSketch:
    """Counts of values in logarithmic buckets; add, merge, and read quantiles."""

    __slots__ = (
        "_bins",
        "_gamma",
        "_inv_log_gamma",
        "_max_buckets",
        "_min_value",
        "alpha",
        "count",
        "max",
        "min",
        "sum",
        "zeros",
    )

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        *,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        min_value: float = DEFAULT_MIN_VALUE,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets}")
        self.alpha = alpha
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        self._max_buckets = max_buckets
        self._min_value = min_value
        self._bins: dict[int, int] = {}
        self.zeros = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float, count: int = 1) -> None:
        """Record ``value`` ``count`` times."""
        if value > self._min_value:
            index = math.ceil(math.log(value) * self._inv_log_gamma)
            bins = self._bins
            old = bins.get(index)
            if old is None:
                bins[index] = count
                if len(bins) > self._max_buckets:
                    self._collapse()
            else:
                bins[index] = old + count
        else:
            value = 0.0 if value < 0.0 else value
            self.zeros += count
        self.count += count
        self.sum += value * count
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def add_many(self, values: list[float]) -> None:
        """Record each of ``values`` once: the same result as ``add`` in a loop, at about half
        the cost per value (one tight loop, min/max/sum in C)."""
        if not values:
            return
        bins = self._bins
        if _add_to_bins is not None:
            zeros = _add_to_bins(bins, values, self._inv_log_gamma, self._min_value)
        else:
            zeros = _python_add_to_bins(bins, values, self._inv_log_gamma, self._min_value)
        if len(bins) > self._max_buckets:
            self._collapse()
        lo, hi = min(values), max(values)
        if lo < 0.0:  # negative latencies count as 0 (see ``add``)
            values = [0.0 if v < 0.0 else v for v in values]
            lo, hi = max(lo, 0.0), max(hi, 0.0)
        self.zeros += zeros
        self.count += len(values)
        self.sum += sum(values)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi

    def _collapse(self) -> None:
        """Fold the lowest buckets into the lowest one kept, so ``max_buckets`` holds again."""
        bins = self._bins
        keys = sorted(bins)
        excess = len(keys) - self._max_buckets
        target = keys[excess]
        for key in keys[:excess]:
            bins[target] += bins.pop(key)

    def merge(self, other: DDSketch) -> None:
        """Add every value ``other`` holds; both must use the same ``alpha``."""
        if other.alpha != self.alpha:
            raise ValueError(f"cannot merge sketches with alpha {self.alpha} and {other.alpha}")
        bins = self._bins
        for index, n in other._bins.items():
            bins[index] = bins.get(index, 0) + n
        if len(bins) > self._max_buckets:
            self._collapse()
        self.zeros += other.zeros
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def clear(self) -> None:
        self._bins.clear()
        self.zeros = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0 <= q <= 1); NaN when the sketch is empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """Several quantiles in one pass over the sorted buckets (``qs`` in any order)."""
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return [math.nan] * len(qs)
        order = sorted(range(len(qs)), key=qs.__getitem__)
        out = [0.0] * len(qs)
        keys = sorted(self._bins)
        seen = self.zeros
        k = 0
        last = self.count - 1
        for position in order:
            rank = math.floor(qs[position] * last)
            if rank == last:  # the extremes are kept exactly
                estimate = self.max
            elif rank == 0:
                estimate = self.min
            elif rank < self.zeros:
                estimate = 0.0
            else:
                while seen <= rank:
                    seen += self._bins[keys[k]]
                    k += 1
                estimate = 2.0 * self._gamma ** keys[k - 1] / (self._gamma + 1.0)
            # The true value lies in [min, max]; clamping can only bring the estimate closer.
            out[position] = min(max(estimate, self.min), self.max)
        return out

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"DDSketch(alpha={self.alpha}, count={self.count}, buckets={len(self._bins)})"


def _python_add_to_bins(
    bins: dict[int, int], values: list[float], inv_log_gamma: float, min_value: float
) -> int:
    """The reference loop of :meth:`DDSketch.add_many` (the C one gives the same bins)."""
    get = bins.get
    log = math.log
    ceil = math.ceil
    zeros = 0
    for value in values:
        if value > min_value:
            index = ceil(log(value) * inv_log_gamma)
            bins[index] = get(index, 0) + 1
        else:
            zeros += 1
    return zeros


_add_to_bins: Callable[[dict[int, int], list[float], float, float], int] | None
try:  # built from _speedups.c at install when a C compiler is there (see setup.py)
    from ._speedups import add_to_bins

    _add_to_bins = add_to_bins
except ImportError:  # pragma: no cover - the pure-Python loop runs
    _add_to_bins = None
