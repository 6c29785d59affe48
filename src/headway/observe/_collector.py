"""Guards' ``snapshot()`` counters and gauges, read at scrape time (the pull half of hooks).

Reading at scrape time costs the data path nothing and is always current: a breaker's state, a
retry budget's balance, a queue's delay and the requests in flight are whatever they are when
Prometheus asks. Each numeric field ``f`` of a guard of kind ``k`` named ``n`` is exposed as
the gauge ``headway_guard_<k>_<f>{name="<n>"}``; the ``headway_guard_`` namespace is used by no
pushed metric, so names never clash. Monotonic fields (``rejected``, ``hits``) are exposed as
gauges too, since only the guard knows which fields are counters; ``rate()`` still works on
them. Non-numeric fields (nested snapshots) are skipped; register their parts instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


class SupportsSnapshot(Protocol):
    def snapshot(self) -> Mapping[str, object]: ...


class Named(SupportsSnapshot, Protocol):
    kind: str
    name: str


Source = Callable[[], Iterable[Named]]


class SnapshotCollector(Collector):
    """A prometheus_client collector over registered objects and sources of objects."""

    def __init__(self, *, prefix: str = "headway_guard") -> None:
        self._prefix = prefix
        self._objects: dict[int, tuple[str, str, SupportsSnapshot]] = {}
        self._sources: list[Source] = []

    def add(
        self, obj: SupportsSnapshot, *, kind: str | None = None, name: str | None = None
    ) -> None:
        """Read ``obj.snapshot()`` at every scrape; ``kind``/``name`` default to its own."""
        kind = kind if kind is not None else str(getattr(obj, "kind", type(obj).__name__))
        name = name if name is not None else str(getattr(obj, "name", kind))
        self._objects[id(obj)] = (kind, name, obj)

    def remove(self, obj: SupportsSnapshot) -> None:
        self._objects.pop(id(obj), None)

    def add_source(self, source: Source) -> None:
        """Call ``source()`` at every scrape for the current guards (e.g. after a reload)."""
        self._sources.append(source)

    def _targets(self) -> Iterator[tuple[str, str, SupportsSnapshot]]:
        yield from self._objects.values()
        for source in self._sources:
            for obj in source():
                yield obj.kind, obj.name, obj

    def describe(self) -> Iterable[Metric]:
        # Names depend on what is registered at scrape time; nothing to reserve up front.
        return ()

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        seen: set[tuple[str, str, str]] = set()
        for kind, name, obj in self._targets():
            for field, value in obj.snapshot().items():
                if isinstance(value, bool):
                    value = float(value)
                elif not isinstance(value, int | float):
                    continue
                metric = _UNSAFE.sub("_", f"{self._prefix}_{kind}_{field}")
                if (metric, kind, name) in seen:  # the same guard registered twice
                    continue
                seen.add((metric, kind, name))
                family = families.get(metric)
                if family is None:
                    family = families[metric] = GaugeMetricFamily(
                        metric, f"{kind} snapshot field {field!r}", labels=["name"]
                    )
                family.add_metric([name], float(value))
        return list(families.values())
