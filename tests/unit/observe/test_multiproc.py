"""Merging workers' expositions: counters and histograms sum, gauges stay per worker."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from headway.core import ManualClock
from headway.observe import GatewayMetrics, WorkerExposition, merge_expositions

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(data: bytes) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(data.decode())
        for s in family.samples
    }


def worker(clock: ManualClock, latencies: list[float], limit: float) -> GatewayMetrics:
    metrics = GatewayMetrics(models=["m"], tenants=["t"], clock=clock)
    for seconds in latencies:
        metrics.request("chat", "m", "t", 200, "ok", seconds)
    metrics.hooks.on_event("concurrency", "pool", "limit", limit)
    return metrics


def test_merge_sums_counters_and_histograms_and_labels_gauges(clock: ManualClock) -> None:
    a = worker(clock, [0.1, 0.2], 10.0)
    b = worker(clock, [3.0], 7.0)
    merged = parse(merge_expositions({"w1": a.render().decode(), "w2": b.render().decode()}))
    req = (("model", "m"), ("reason", "ok"), ("route", "chat"), ("status", "200"), ("tenant", "t"))
    assert merged[("headway_requests_total", req)] == 3.0
    hist = (("model", "m"), ("tenant", "t"))
    assert merged[("headway_request_duration_seconds_count", hist)] == 3.0
    assert abs(merged[("headway_request_duration_seconds_sum", hist)] - 3.3) < 1e-9
    assert merged[("headway_request_duration_seconds_bucket", (("le", "0.25"), *hist))] == 2.0
    assert merged[("headway_request_duration_seconds_bucket", (("le", "+Inf"), *hist))] == 3.0
    limit = "headway_concurrency_limit"
    assert merged[(limit, (("kind", "concurrency"), ("name", "pool"), ("worker", "w1")))] == 10.0
    assert merged[(limit, (("kind", "concurrency"), ("name", "pool"), ("worker", "w2")))] == 7.0
    created = [k for k in merged if k[0] == "headway_requests_created"]
    assert len(created) == 1  # timestamps are not summed or split by worker
    assert merged[created[0]] < 2e9


def test_merge_of_one_worker_round_trips(clock: ManualClock) -> None:
    a = worker(clock, [0.1], 3.0)
    alone = parse(merge_expositions({"w1": a.render().decode()}))
    original = parse(a.render())
    assert {k for k in alone if "worker" not in dict(k[1])} == {
        k for k in original if k[0] != "headway_concurrency_limit"
    }


def test_worker_files_publish_scrape_and_expire(tmp_path: Path, clock: ManualClock) -> None:
    wall = [1_000_000.0]
    a = worker(clock, [0.1], 1.0)
    b = worker(clock, [0.2, 0.3], 2.0)
    ea = WorkerExposition(tmp_path, "w1", a.render, wall_clock=lambda: wall[0], max_age=15.0)
    eb = WorkerExposition(tmp_path, "w2", b.render, wall_clock=lambda: wall[0], max_age=15.0)
    eb.publish()
    os.utime(tmp_path / "w2.prom", (wall[0] - 5.0, wall[0] - 5.0))
    hist = ("headway_request_duration_seconds_count", (("model", "m"), ("tenant", "t")))
    assert parse(ea.scrape())[hist] == 3.0
    a.request("chat", "m", "t", 200, "ok", 0.4)  # the scraped worker is always fresh
    assert parse(ea.scrape())[hist] == 4.0
    wall[0] += 11.0  # w2's file is now 16 s old: a dead worker's numbers drop out
    assert parse(ea.scrape())[hist] == 2.0
    eb.close()
    eb.close()  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.prom"]
