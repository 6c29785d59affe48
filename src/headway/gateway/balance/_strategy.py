"""The strategy interface, and the weighted "two distinct random choices" every P2C uses.

A strategy chooses one endpoint among the candidates it is given; health filtering is the
endpoint set's job, not the strategy's. ``exclude`` holds the endpoints this request already
tried (Envoy's previous-hosts retry predicate): they are avoided while anything else is left,
and used again only when nothing else is.

Strategies cache per-list precomputations (cumulative weights, the hash ring) keyed on the
identity of the ``endpoints`` list: pass the same list object while its membership and weights
are unchanged, and a new list when they change (:class:`EndpointSet` does this).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from ._endpoint import Endpoint


class Strategy(Protocol):
    """Chooses an endpoint for one request."""

    def pick(
        self,
        endpoints: Sequence[Endpoint[Any]],
        key: str | None = None,
        exclude: Collection[Endpoint[Any]] | None = None,
    ) -> Endpoint[Any] | None:
        """One of ``endpoints`` (``None`` only when it is empty)."""
        ...


def without(
    endpoints: Sequence[Endpoint[Any]], exclude: Collection[Endpoint[Any]]
) -> Sequence[Endpoint[Any]]:
    """``endpoints`` minus ``exclude``, or all of them when that would leave none."""
    rest = [ep for ep in endpoints if ep not in exclude]
    return rest if rest else endpoints


class TwoChoices:
    """Draws two distinct endpoints, each with probability proportional to its weight.

    The second draw is from the remaining weight (sampling without replacement), so two
    endpoints of weights 3 and 1 are both always candidates and the comparison decides.
    Cumulative weights are cached for the last list seen (by identity).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = (rng if rng is not None else random.Random()).random
        self._for: Sequence[Endpoint[Any]] | None = None
        self._cum: list[float] = []
        self._total = 0.0
        self._n = 0
        self._uniform = True

    def _prepare(self, endpoints: Sequence[Endpoint[Any]]) -> None:
        cum: list[float] = []
        total = 0.0
        for ep in endpoints:
            total += ep.weight
            cum.append(total)
        first = endpoints[0].weight
        self._uniform = all(ep.weight == first for ep in endpoints)
        self._cum = cum
        self._total = total
        self._n = len(endpoints)
        self._for = endpoints

    def draw(self, endpoints: Sequence[Endpoint[Any]]) -> tuple[int, int]:
        """Indices of two distinct endpoints; needs ``len(endpoints) >= 2``."""
        if endpoints is not self._for or len(endpoints) != self._n:
            self._prepare(endpoints)
        rand = self._random
        n = self._n
        if self._uniform:
            i = int(rand() * n)
            j = int(rand() * (n - 1))
            return i, (j + 1 if j >= i else j)
        cum = self._cum
        i = bisect_right(cum, rand() * self._total)
        if i >= n:
            i = n - 1
        w = endpoints[i].weight
        # Draw from the weight that is left, then step over endpoint i's own interval.
        y = rand() * (self._total - w)
        if y >= cum[i] - w:
            y += w
        j = bisect_right(cum, y)
        if j >= n:
            j = n - 1
        if j == i:  # only through float rounding at an interval's edge
            j = i - 1 if i else 1
        return i, j
