"""Bounded label values: a metric label only ever takes a configured value or ``"other"``.

Every distinct label value is a new time series in Prometheus, kept for as long as the process
lives; a tenant id or model name copied from a request would let any client grow the scrape
without bound. So tenant, model and endpoint labels pass through an :class:`AllowList` built
from configuration, and anything not in it is reported as ``"other"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OTHER = "other"
#: The label value for a request that has no tenant (e.g. it failed authentication).
NONE = "none"


class AllowList:
    """Maps a raw value to itself when configured, else to ``"other"``; one dict lookup."""

    __slots__ = ("_values", "mapping")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: dict[str | None, str] = {v: v for v in values}
        self._values[None] = NONE
        #: The raw -> label dict, for hot paths that inline ``mapping.get(value, OTHER)``.
        self.mapping: Mapping[str | None, str] = self._values

    def __call__(self, value: str | None) -> str:
        return self._values.get(value, OTHER)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    @property
    def values(self) -> frozenset[str]:
        return frozenset(v for k, v in self._values.items() if k is not None)

    def __repr__(self) -> str:
        return f"AllowList({sorted(self.values)!r})"
