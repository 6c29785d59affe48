"""A consistent-hash ring with virtual nodes, and the stable 64-bit hash it uses.

Each endpoint owns ``round(vnodes_per_weight * weight)`` points (at least one), placed at
``hash64(f"{name}#{i}")``; a key belongs to the owner of the first point at or after
``hash64(key)``, wrapping around. Guarantees: placement depends only on endpoint names, weights
and the key, never on the process (the hash is BLAKE2b, not Python's salted ``hash()``), so every
gateway worker and instance agrees; removing an endpoint moves only the keys it owned (Karger et
al., "Consistent Hashing and Random Trees", 1997).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from hashlib import blake2b
from typing import Any

from ._endpoint import Endpoint

_from_bytes = int.from_bytes


def hash64(data: str) -> int:
    """A stable 64-bit hash of ``data`` (BLAKE2b with an 8-byte digest)."""
    return _from_bytes(blake2b(data.encode(), digest_size=8).digest(), "little")


class HashRing:
    """Points on a 64-bit circle, each owned by an endpoint."""

    def __init__(self, endpoints: Sequence[Endpoint[Any]], vnodes_per_weight: int) -> None:
        placed: list[tuple[int, int]] = []
        for index, ep in enumerate(endpoints):
            count = max(1, round(vnodes_per_weight * ep.weight))
            name = ep.name
            placed.extend((hash64(f"{name}#{i}"), index) for i in range(count))
        # Ties (astronomically unlikely) are broken by list position, deterministically.
        placed.sort()
        self.endpoints = endpoints
        self.total_weight = sum(ep.weight for ep in endpoints)
        self._points = [point for point, _ in placed]
        self._owners = [endpoints[index] for _, index in placed]

    def __len__(self) -> int:
        return len(self._points)

    def owner(self, h: int) -> Endpoint[Any]:
        """The endpoint owning hash ``h``; the ring must not be empty."""
        i = bisect_left(self._points, h)
        return self._owners[i if i < len(self._owners) else 0]

    def walk(self, h: int) -> Iterator[Endpoint[Any]]:
        """Distinct endpoints in ring order from hash ``h``: the owner first, then successors."""
        owners = self._owners
        n = len(owners)
        start = bisect_left(self._points, h)
        seen: set[int] = set()
        total = len(self.endpoints)
        for k in range(n):
            ep = owners[(start + k) % n]
            ident = id(ep)
            if ident not in seen:
                seen.add(ident)
                yield ep
                if len(seen) == total:
                    return
