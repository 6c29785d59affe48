"""DDSketch: a mergeable quantile sketch with a relative-error guarantee.

The idea is Masson, Rim and Lee, "DDSketch: A Fast and Fully-Mergeable Quantile Sketch with
Relative-Error Guarantees" (VLDB 2019); the code is ours. With ``gamma = (1 + a) / (1 - a)``
a positive value ``x`` falls in bucket ``i = ceil(log_gamma(x))``, which covers
``(gamma**(i-1), gamma**i]``; the bucket is represented by ``2 * gamma**i / (gamma + 1)``, which
is within a relative error ``a`` of every value in it.

Storage is the paper's collapsing-lowest dense store: one array of counts for a contiguous run
of buckets, grown as values arrive, spanning at most ``max_buckets`` buckets; past that the
lowest buckets collapse into the lowest one kept. Adding a value is an array increment (in C
when built: ``_speedups.add_to_counts``), where a dict of buckets paid a dict update with new
int objects, ~700 instructions a value.

Guarantees: ``quantile(q)`` returns a value within relative error ``alpha`` of the stored
element of rank ``floor(q * (count - 1))`` as long as the store has not collapsed, and for every
value within ``max_buckets`` buckets of the largest once it has; values at or below
``min_value`` count as zero and are reported as 0, and the minimum and maximum are exact. Two
sketches with the same ``alpha`` merge exactly (the merge equals the sketch of the concatenated
streams). Latencies are never negative, so negative inputs are treated as 0. With the default
``alpha = 0.01`` the 2048 buckets span a ratio of 1.02**2048 (~5e17: 1 ns .. 16 years), so a
latency sketch never collapses; its array holds the run of buckets actually seen (a latency
spread of 1 ms .. 10 s is ~460 buckets, under 4 KiB).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable

from headway.core import chained

# DDSketch paper's evaluation and Datadog's default relative accuracy: 1%.
DEFAULT_ALPHA = 0.01
# Our choice: at alpha = 0.01 a span of 1.0202**2048 (~5e17), far beyond any latency range;
# the array is at most 16 KiB.
DEFAULT_MAX_BUCKETS = 2048
# Values at or below this (seconds) are recorded as 0: 1 ns is below any clock's resolution.
DEFAULT_MIN_VALUE = 1e-9

#: The counts' array type code: signed 64-bit.
COUNTS = "q"

#: Buckets a store grows by beyond the values that made it grow, each side (our choice: at 1%
#: accuracy, 32 buckets are a factor of ~1.9).
ROOM = 32


class DDSketch:
    """Counts of values in logarithmic buckets; add, merge, and read quantiles."""

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
        #: Counts of buckets ``_offset .. _offset + len(_counts) - 1``.
        self._counts = array(COUNTS)
        self._offset = 0
        #: Once the store has collapsed, every bucket below ``_offset`` counts in the first.
        self._collapsed = False
        self.zeros = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float, count: int = 1) -> None:
        """Record ``value`` ``count`` times."""
        if value > self._min_value:
            key = math.ceil(math.log(value) * self._inv_log_gamma)
            self._cover(key, key)
            self._counts[max(key - self._offset, 0)] += count
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
        """Record each of ``values`` once: the same result as ``add`` in a loop, in one pass
        (in C when built)."""
        if not values:
            return
        add = _add_to_counts if _add_to_counts is not None else _python_add_to_counts
        inv, floor = self._inv_log_gamma, self._min_value
        done = add(self._counts, self._offset, self._collapsed, values, inv, floor)
        if len(done) == 2:  # some bucket is outside the array: grow it, then add
            self._cover(*self._with_room(int(done[0]), int(done[1])))
            done = add(self._counts, self._offset, self._collapsed, values, inv, floor)
        zeros, lo, hi, total = done  # type: ignore[misc]  # counted: the 4-tuple
        self.zeros += int(zeros)
        self.count += len(values)
        self.sum += total
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi

    def _with_room(self, lo: int, hi: int) -> tuple[int, int]:
        """``lo..hi`` widened by up to :data:`ROOM` buckets a side, while the store's span stays
        within ``max_buckets``: a batch with a bucket outside the store is counted twice, and
        a store grown to the batch's exact range made most of the next batches grow it again.
        The room is zero buckets, which ``_cover`` drops before it collapses any."""
        counts = self._counts
        first, last = lo, hi
        if len(counts):
            first, last = min(lo, self._offset), max(hi, self._offset + len(counts) - 1)
        room = min(ROOM, (self._max_buckets - (last - first + 1)) // 2)
        return (lo - room, hi + room) if room > 0 else (lo, hi)

    def _cover(self, lo: int, hi: int) -> None:
        """Grow the array to hold buckets ``lo..hi``; past ``max_buckets`` of span, collapse the
        lowest into the lowest one kept (the high quantiles, which latency tails need, stay
        exact)."""
        counts = self._counts
        size = len(counts)
        if size == 0:
            self._offset = lo
            counts.frombytes(bytes(counts.itemsize * (hi - lo + 1)))  # zeros
            size = hi - lo + 1
        else:
            if hi >= self._offset + size:
                counts.frombytes(bytes(counts.itemsize * (hi - self._offset - size + 1)))
                size = len(counts)
            if lo < self._offset and not self._collapsed:
                grow = self._offset - lo
                counts[0:0] = array(COUNTS, bytes(counts.itemsize * grow))
                self._offset = lo
                size += grow
        excess = size - self._max_buckets
        if excess > 0:
            # Zero buckets outside lo..hi go first (a cleared store keeps its span): what is
            # left, and so whether and what collapses, is what a new sketch would hold.
            while excess > 0 and size - 1 > hi - self._offset and counts[-1] == 0:
                counts.pop()
                size -= 1
                excess -= 1
            lead = 0
            if not self._collapsed:
                while lead < excess and lead < lo - self._offset and counts[lead] == 0:
                    lead += 1
            if lead:
                del counts[:lead]
                self._offset += lead
                size -= lead
                excess -= lead
        if excess > 0:
            folded = sum(counts[: excess + 1])
            del counts[:excess]
            counts[0] = folded
            self._offset += excess
            self._collapsed = True

    def merge(self, other: DDSketch) -> None:
        """Add every value ``other`` holds; both must use the same ``alpha``."""
        if other.alpha != self.alpha:
            raise ValueError(f"cannot merge sketches with alpha {self.alpha} and {other.alpha}")
        theirs = other._counts
        # Their non-zero buckets only: a cleared store keeps its span, zeroed (``clear``), and
        # covering that would grow this one, or even collapse it, for nothing.
        first, last = 0, len(theirs) - 1
        while first <= last and theirs[first] == 0:
            first += 1
        while last >= first and theirs[last] == 0:
            last -= 1
        if first <= last:
            self._cover(other._offset + first, other._offset + last)
            mine = self._counts
            shift = other._offset - self._offset
            for i in range(first, last + 1):
                n = theirs[i]
                if n:
                    mine[max(i + shift, 0)] += n
        self.zeros += other.zeros
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def clear(self) -> None:
        """Empty. The store keeps its span, zeroed: a sliding window's next slice mostly falls
        in it, where an empty store made the first batches grow it, and a batch that must
        grow the store is counted twice (``add_many``). What it holds is then the same as a
        new sketch's, zero buckets aside (``_cover`` drops them before it collapses any)."""
        counts = self._counts
        if counts:
            counts[:] = array(COUNTS, bytes(counts.itemsize * len(counts)))
        self._collapsed = False
        self.zeros = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def buckets(self) -> dict[int, int]:
        """The non-empty buckets, by key (for inspection and tests)."""
        offset = self._offset
        return {offset + i: n for i, n in enumerate(self._counts) if n}

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0 <= q <= 1); NaN when the sketch is empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """Several quantiles in one pass over the buckets (``qs`` in any order)."""
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return [math.nan] * len(qs)
        order = sorted(range(len(qs)), key=qs.__getitem__)
        out = [0.0] * len(qs)
        counts = self._counts
        seen = self.zeros
        i = 0
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
                    seen += counts[i]
                    i += 1
                estimate = 2.0 * self._gamma ** (self._offset + i - 1) / (self._gamma + 1.0)
            # The true value lies in [min, max]; clamping can only bring the estimate closer.
            out[position] = min(max(estimate, self.min), self.max)
        return out

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        buckets = sum(1 for n in self._counts if n)
        return f"DDSketch(alpha={self.alpha}, count={self.count}, buckets={buckets})"


AddToCounts = Callable[
    ["array[int]", int, bool, list[float], float, float],
    "tuple[int, float, float, float] | tuple[int, int]",
]


def _python_add_to_counts(
    counts: array[int],
    offset: int,
    collapsed: bool,
    values: list[float],
    inv_log_gamma: float,
    min_value: float,
) -> tuple[int, float, float, float] | tuple[int, int]:
    """The reference of ``_speedups.add_to_counts``: each value above ``min_value`` counts once
    in bucket ``ceil(log(v) * inv_log_gamma)`` (index ``key - offset``; below ``offset`` the
    first, once ``collapsed``); returns how many were at or below ``min_value``, and the
    smallest, largest and sum of the values with negatives as 0. When a bucket is outside the
    array, nothing is counted and ``(lowest, highest)`` key of the values comes back, for the
    caller to grow the array and call again."""
    log = math.log
    ceil = math.ceil
    try:
        keys = [ceil(log(v) * inv_log_gamma) for v in values if v > min_value]
    except OverflowError:  # an infinite value: as the C loop says it
        error = ValueError("value out of range for a sketch")
        raise chained(error, None)  # noqa: B904 - is ``from None`` (mypyc drops ``from``)
    end = offset + len(counts)
    if keys:
        lo, hi = min(keys), max(keys)
        if hi >= end or (lo < offset and not collapsed):
            return lo, hi
    for key in keys:
        counts[max(key - offset, 0)] += 1
    kept = [0.0 if v < 0.0 else float(v) for v in values]
    smallest, largest = min(kept, default=math.inf), max(kept, default=-math.inf)
    return len(values) - len(keys), smallest, largest, sum(kept)


_add_to_counts: AddToCounts | None
try:  # built from _speedups.c at install when a C compiler is there (see setup.py)
    from ._speedups import add_to_counts

    _add_to_counts = add_to_counts
except ImportError:  # pragma: no cover - the pure-Python loop runs
    _add_to_counts = None
