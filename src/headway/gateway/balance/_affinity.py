"""Prefix affinity: the same key goes to the same endpoint, so its KV cache is reused.

A model server keeps the attention KV cache of recent prompts; sending a conversation (or any
request sharing a long prompt prefix) back to the server that saw it skips recomputing that
prefix. This strategy hashes the request's key (a conversation or user id, or
:func:`prompt_prefix_key`) onto a consistent-hash ring (``_ring``) with points in proportion to
weight, so keys spread evenly and an endpoint leaving only moves its own keys.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2018):
an endpoint may take the request only while ``outstanding < ceil(c * (total + 1) * w / W)``,
where ``total`` is the requests in flight across the candidates and ``w / W`` its weight share;
otherwise the walk moves on along the ring. With ``c > 1`` some endpoint always qualifies, so a
hot key spills to its ring successors instead of overloading one server. HAProxy exposes the
same ``c`` as ``hash-balance-factor``.

Guarantees: with no key it behaves as :class:`LeastOutstandingP2C`; excluded endpoints are
skipped on the walk and used only when nothing else is left; the ring is rebuilt only when the
candidate list object changes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from typing import Any, Final

from ._endpoint import Endpoint
from ._p2c import LeastOutstandingP2C
from ._ring import HashRing, hash64

# Virtual nodes per unit of weight: with 100 points per endpoint the share of keys an endpoint
# owns stays within about 10% of its weight share (the usual ring setting; ketama places 160
# points per server).
DEFAULT_VNODES_PER_WEIGHT: Final = 100
# Bounded-load factor c (Mirrokni et al. 2018): each endpoint may carry up to 25% more than its
# fair share before keys spill over; the brief's choice, a trade between affinity and balance.
DEFAULT_LOAD_FACTOR: Final = 1.25


class PrefixAffinity:
    """Consistent hashing on the request key, with an optional bound on each endpoint's load."""

    def __init__(
        self,
        *,
        load_factor: float | None = DEFAULT_LOAD_FACTOR,
        vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT,
        rng: random.Random | None = None,
    ) -> None:
        if load_factor is not None and not load_factor > 1.0:
            raise ValueError("load_factor must be > 1 (or None for no bound)")
        if vnodes_per_weight < 1:
            raise ValueError("vnodes_per_weight must be >= 1")
        #: ``c`` of consistent hashing with bounded loads; ``None`` turns the bound off.
        self.load_factor = load_factor
        self.vnodes_per_weight = vnodes_per_weight
        self._ring: HashRing | None = None
        self._fallback = LeastOutstandingP2C(rng=rng)

    def ring(self, endpoints: Sequence[Endpoint[Any]]) -> HashRing:
        """The ring over ``endpoints`` (cached while the same list object is passed)."""
        ring = self._ring
        if ring is None or ring.endpoints is not endpoints:
            ring = self._ring = HashRing(endpoints, self.vnodes_per_weight)
        return ring

    def pick(
        self,
        endpoints: Sequence[Endpoint[Any]],
        key: str | None = None,
        exclude: Collection[Endpoint[Any]] | None = None,
    ) -> Endpoint[Any] | None:
        if key is None:
            return self._fallback.pick(endpoints, None, exclude)
        if len(endpoints) < 2:
            return endpoints[0] if endpoints else None
        ring = self.ring(endpoints)
        h = hash64(key)
        owner = ring.owner(h)
        if exclude and owner in exclude:
            return self._walk(ring, h, exclude, _total(endpoints))
        c = self.load_factor
        # An idle endpoint is always within its bound; otherwise check the owner before walking.
        if c is None or owner.outstanding == 0:
            return owner
        total = _total(endpoints)
        if owner.outstanding < math.ceil(c * (total + 1) * owner.weight / ring.total_weight):
            return owner
        return self._walk(ring, h, exclude, total)

    def _walk(
        self,
        ring: HashRing,
        h: int,
        exclude: Collection[Endpoint[Any]] | None,
        total: int,
    ) -> Endpoint[Any]:
        c = self.load_factor
        weight = ring.total_weight
        first_allowed: Endpoint[Any] | None = None
        for ep in ring.walk(h):
            if exclude and ep in exclude:
                continue
            if c is None or ep.outstanding < math.ceil(c * (total + 1) * ep.weight / weight):
                return ep
            if first_allowed is None:
                first_allowed = ep
        # Everything is excluded (retry on a tried endpoint) or, with exclusions, over bound.
        return first_allowed if first_allowed is not None else ring.owner(h)


def _total(endpoints: Sequence[Endpoint[Any]]) -> int:
    total = 0
    for ep in endpoints:
        total += ep.outstanding
    return total
