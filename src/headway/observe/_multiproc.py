"""One ``/metrics`` for many worker processes: each worker publishes, the scraped one merges.

With SO_REUSEPORT workers a scrape lands on any one of them, so each worker atomically writes
its own exposition to ``<directory>/<worker>.prom`` (every few seconds, and on the scrape it
serves), and the worker that is scraped merges every file younger than ``max_age``.

Why not prometheus_client's multiprocess mode: it swaps the value storage of *every* metric in
the process for mmap files, chosen by an environment variable at import time (global state,
against our one-registry-per-gateway rule), and it cannot carry collectors that read guards'
snapshots at scrape time. Text merge keeps each worker's registry ordinary and private.

Merge rules: counters, histograms and summaries are summed sample by sample (a request counted
in any worker is counted once); gauges keep one series per worker under a ``worker`` label
(a breaker's state or a queue's delay belongs to the process that has it, and summing would lie);
``*_created`` timestamps take the earliest. Trade-off: a worker that dies takes its counts with
it after ``max_age``, which Prometheus' ``rate()`` sees as a counter reset, i.e. a small
undercount, never a spike.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

# Our choice: three missed publishes at the gateway's 5 s interval.
DEFAULT_MAX_AGE = 15.0
_SUFFIX = ".prom"

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class _Families(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def merge_expositions(parts: Mapping[str, str]) -> bytes:
    """Merge text expositions keyed by worker id into one (rules in the module docstring)."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[_SampleKey, float]] = {}
    for worker, text in parts.items():
        for family in text_string_to_metric_families(text):
            metric = merged.get(family.name)
            if metric is None:
                metric = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            slots = values[family.name]
            is_created = family.type == "gauge" and family.name.endswith("_created")
            for sample in family.samples:
                labels = dict(sample.labels)
                if family.type in ("gauge", "unknown", "info") and not is_created:
                    labels["worker"] = worker
                key = (sample.name, tuple(sorted(labels.items())))
                old = slots.get(key)
                if old is None:
                    slots[key] = sample.value
                elif is_created:
                    slots[key] = min(old, sample.value)
                else:
                    slots[key] = old + sample.value
    for name, metric in merged.items():
        for (sample_name, pairs), value in values[name].items():
            metric.add_sample(sample_name, dict(pairs), value)
    return generate_latest(_Families(merged.values()))


class WorkerExposition:
    """One worker's side of the shared directory: publish its own, merge everyone's."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        worker: str,
        render: Callable[[], bytes],
        *,
        max_age: float = DEFAULT_MAX_AGE,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not worker or "/" in worker or worker.startswith("."):
            raise ValueError(f"worker id must be a plain file name, got {worker!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self._render = render
        self.max_age = max_age
        self._wall = wall_clock
        self._path = self.directory / f"{worker}{_SUFFIX}"

    def publish(self) -> bytes:
        """Write this worker's exposition atomically (write a temp file, then rename)."""
        data = self._render()
        tmp = self.directory / f".{self.worker}{_SUFFIX}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self._path)
        return data

    def scrape(self) -> bytes:
        """Everyone's merged metrics: this worker's fresh, the others' as last published."""
        own = self.publish().decode()
        parts = {self.worker: own}
        oldest = self._wall() - self.max_age
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            worker = path.name[: -len(_SUFFIX)]
            if worker == self.worker:
                continue
            try:
                if path.stat().st_mtime < oldest:
                    continue
                parts[worker] = path.read_text()
            except FileNotFoundError:  # the worker removed it as we looked
                continue
        return merge_expositions(parts)

    def close(self) -> None:
        """Withdraw this worker's file (on clean shutdown) so its gauges vanish at once."""
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
