"""Power of two choices: least outstanding requests, and peak-EWMA latency cost.

Draw two distinct endpoints at random (weighted), send to the less loaded one. Mitzenmacher
("The Power of Two Choices in Randomized Load Balancing", 2001) shows two random choices cut the
maximum load from ``log n / log log n`` to ``log log n``, nearly as good as asking everyone,
while staying O(1) and avoiding the herd that "always pick the least loaded" causes when many
balancers see the same stale numbers. Finagle's and tower's ``p2c`` balancers are built on it.

- :class:`LeastOutstandingP2C` (the default): load = ``outstanding / weight``.
- :class:`PeakEwma`: load = ``ewma_latency * (outstanding + 1) / weight`` (tower's
  ``load::PeakEwma``, Finagle's ``p2cPeakEwma``): prefers endpoints that answer fast, and reacts
  at once to a slow answer through the peak rule.

Ties go to the first drawn endpoint. Guarantees: never returns an endpoint in ``exclude`` while
another candidate exists; returns ``None`` only for an empty candidate list.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Any

from ._endpoint import Endpoint
from ._strategy import TwoChoices, without


class _TwoChoiceStrategy:
    """Power of two choices: draw two distinct endpoints by weight, keep the better one.

    Subclasses say what "better" means (:meth:`_better`); the drawing, the exclusion of already
    tried endpoints and the small-pool cases are shared."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        rng = rng if rng is not None else random.Random()
        self._choices = TwoChoices(rng)
        # For the lists without the excluded endpoints: keeps the main cache warm.
        self._scratch = TwoChoices(rng)

    def pick(
        self,
        endpoints: Sequence[Endpoint[Any]],
        key: str | None = None,
        exclude: Collection[Endpoint[Any]] | None = None,
    ) -> Endpoint[Any] | None:
        if exclude:
            return self._pick_from(without(endpoints, exclude), self._scratch)
        return self._pick_from(endpoints, self._choices)

    def _pick_from(
        self, endpoints: Sequence[Endpoint[Any]], choices: TwoChoices
    ) -> Endpoint[Any] | None:
        if len(endpoints) < 2:
            return endpoints[0] if endpoints else None
        i, j = choices.draw(endpoints)
        return self._better(endpoints[i], endpoints[j])

    def _better(self, a: Endpoint[Any], b: Endpoint[Any]) -> Endpoint[Any]:
        raise NotImplementedError


class LeastOutstandingP2C(_TwoChoiceStrategy):
    """Of two weighted random endpoints, the one with fewer requests in flight per weight."""

    def _better(self, a: Endpoint[Any], b: Endpoint[Any]) -> Endpoint[Any]:
        # a.outstanding / a.weight <= b.outstanding / b.weight, without dividing.
        return a if a.outstanding * b.weight <= b.outstanding * a.weight else b


class PeakEwma(_TwoChoiceStrategy):
    """Of two weighted random endpoints, the one with the lower expected latency cost."""

    def _better(self, a: Endpoint[Any], b: Endpoint[Any]) -> Endpoint[Any]:
        now = a.clock.now()
        cost_a = a.ewma_at(now) * (a.outstanding + 1) / a.weight
        cost_b = b.ewma_at(now) * (b.outstanding + 1) / b.weight
        return a if cost_a <= cost_b else b
