"""Batched recording (the gateway's path) gives exactly what one call per request gives."""

from __future__ import annotations

import io

import orjson
import pytest
from observe_records import Done
from prometheus_client.parser import text_string_to_metric_families

from headway.core import ManualClock
from headway.observe import AccessLog, GatewayMetrics, SlidingSketch
from headway.observe._window import BATCH as SKETCH_BATCH

WALL = 1_700_000_000.25


MIXED = [
    Done("chat", "gpt-4o", "acme", 200, "ok", 0.3, 12, 9, 0.3),
    Done("chat", "gpt-4o", "acme", 200, "ok", 1.7, 5, 0, 1.7),
    Done("chat", "llama", "acme", 200, "ok", 0.02, 3, 40, 0.5),  # a stream: its own decode time
    Done("chat", "gpt-4o", "acme", 429, "tenant_rpm", 0.001),
    Done("embeddings", "not-configured", None, 200, "ok", 0.05, 7, None, 0.05),
    Done("chat", "gpt-4o", "acme", 200, "ok", 0.4, 12, 9, 0.4),
]


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the ``_created`` stamps (the wall time a series was made)."""
    families = text_string_to_metric_families(metrics.render().decode())
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families
        for s in f.samples
        if not s.name.endswith("_created")
    }


def make(clock: ManualClock) -> GatewayMetrics:
    return GatewayMetrics(models=["gpt-4o", "llama"], tenants=["acme"], clock=clock)


def test_a_batch_counts_what_one_call_per_request_counts(clock: ManualClock) -> None:
    one, many = make(clock), make(clock)
    for d in MIXED:
        one.request(
            d.route, d.model, d.tenant, d.status, d.reason, d.latency, d.prompt, d.completion,
            d.generation,
        )  # fmt: skip
    many.record_requests(MIXED)
    assert samples(many) == samples(one)
    for model in (None, "gpt-4o", "llama", "other"):
        assert many.latency_quantiles(model) == one.latency_quantiles(model)
    # ``request`` is itself a batch of one, so check the numbers themselves too.
    got = samples(many)
    ok = (("model", "gpt-4o"), ("reason", "ok"), ("route", "chat"), ("status", "200"))
    assert got[("headway_requests_total", (*ok, ("tenant", "acme")))] == 3
    duration = (("model", "gpt-4o"), ("tenant", "acme"))
    assert got[("headway_request_duration_seconds_count", duration)] == 4
    assert abs(got[("headway_request_duration_seconds_sum", duration)] - 2.401) < 1e-9
    assert got[("headway_prompt_tokens_total", duration)] == 29
    assert got[("headway_completion_tokens_total", duration)] == 18
    llama = (("model", "llama"), ("tenant", "acme"))
    assert got[("headway_completion_tokens_total", llama)] == 40
    # tokens/s of the stream divides by its decode time (0.5 s), not its latency: 80 tokens/s.
    assert got[("headway_output_tokens_per_second_sum", (("model", "llama"),))] == 80.0
    assert many.latency_quantiles("llama", (0.5,))[0] == pytest.approx(0.02, rel=0.02)
    other = (("model", "other"), ("tenant", "none"))
    assert got[("headway_request_duration_seconds_count", other)] == 1
    assert ("headway_completion_tokens_total", other) not in got  # no usage, no token series


def test_sketch_add_many_equals_add_and_respects_slices(clock: ManualClock) -> None:
    one = SlidingSketch(60.0, 6, clock=clock)
    many = SlidingSketch(60.0, 6, clock=clock)
    values = [0.001 * (i + 1) for i in range(150)]  # more than one fold's batch
    for v in values[:100]:
        one.add(v)
    many.add_many(values[:100])
    clock.step(10.0)  # a new slice: the first values age out together in both
    for v in values[100:]:
        one.add(v)
    many.add_many(values[100:])
    assert many.quantiles((0.5, 0.99)) == one.quantiles((0.5, 0.99))
    clock.step(55.0)  # only the second slice's values are still in the window
    assert many.merged().count == one.merged().count == 50


def test_write_outcomes_writes_what_record_writes_in_finish_order() -> None:
    direct, batched = io.BytesIO(), io.BytesIO()
    log = AccessLog(direct, clock=lambda: WALL, models=["gpt-4o", "llama"])
    batch_log = AccessLog(batched, clock=lambda: WALL, models=["gpt-4o", "llama"])
    attrs = {"decisions": ["retried", "fell_back"]}
    done = [
        Done("chat", "gpt-4o", "acme", 200, "ok", 0.0012345, 12, 9, endpoint="p/ep0",
             request_id="r1", attributes=attrs, trace_id="t1"),
        Done("chat", "pasted prompt", None, 401, "invalid_api_key", 0.0001, request_id="r2"),
        Done("chat", "llama", "acme", 200, "ok", 2.5, 3, 40, 2.0, "p/ep1", 0.25, True, "r3"),
    ]  # fmt: skip
    for d in done:
        log.record(
            request_id=d.request_id, tenant=d.tenant, model=d.model, status=d.status,
            latency=d.latency, endpoint=d.endpoint, route=d.route, ttft=d.ttft,
            prompt_tokens=d.prompt, completion_tokens=d.completion, stream=d.stream,
            reason=d.reason, attributes=d.attributes, trace_id=d.trace_id,
        )  # fmt: skip
    batch_log.write_outcomes(done)
    assert batched.getvalue() == direct.getvalue()
    lines = [orjson.loads(x) for x in batched.getvalue().splitlines()]
    assert [x["request_id"] for x in lines] == ["r1", "r2", "r3"]
    assert lines[0]["decisions"] == ["retried", "fell_back"]
    assert lines[0]["trace_id"] == "t1"
    assert "trace_id" not in lines[1]
    assert lines[1]["model"] == "other"  # client input outside the allow-list is not logged
    assert lines[2]["ttft_ms"] == 250.0
    assert lines[2]["stream"] is True
    assert {x["ts"] for x in lines} == {"2023-11-14T22:13:20.250000Z"}


def test_write_outcomes_on_a_disabled_log_writes_nothing() -> None:
    sink = io.BytesIO()
    log = AccessLog(sink, clock=lambda: WALL, enabled=False)
    log.write_outcomes([Done("chat", "m", "t", 200, "ok", 0.1, request_id="r")])
    assert sink.getvalue() == b""


def test_attempts_batch_counts_each_endpoint_and_status(clock: ManualClock) -> None:
    metrics = GatewayMetrics(endpoints=["p/ep0", "p/ep1"], clock=clock)
    metrics.record_attempts(
        [("p/ep0", 200, 0.01), ("p/ep0", 200, 0.03), ("p/ep1", 503, 0.002), ("p/ep0", 200, 0.02)]
    )
    metrics.upstream("p/ep1", 0, 0.5)  # one attempt alone goes the same way
    got = samples(metrics)
    ok = ("headway_upstream_requests_total", (("endpoint", "p/ep0"), ("status", "200")))
    assert got[ok] == 3
    assert got[("headway_upstream_requests_total", (("endpoint", "p/ep1"), ("status", "503")))] == 1
    assert got[("headway_upstream_requests_total", (("endpoint", "p/ep1"), ("status", "0")))] == 1
    ep0 = (("endpoint", "p/ep0"),)
    assert got[("headway_upstream_duration_seconds_count", ep0)] == 3
    assert abs(got[("headway_upstream_duration_seconds_sum", ep0)] - 0.06) < 1e-12
    assert metrics.endpoint_latency_quantiles("p/ep0", (0.5,))[0] == pytest.approx(0.02, rel=0.02)
    assert metrics.endpoint_latency_quantiles("p/ep1", (1.0,))[0] == pytest.approx(0.5, rel=0.02)


def test_batch_latencies_land_in_the_slice_they_were_recorded_in(clock: ManualClock) -> None:
    """Latencies go straight into their sketch's pending values, so the sketches roll before
    a batch that comes after their slice ended: a batch after a long quiet spell must count
    as now, not in the stale slice (which would drop it from the window at once)."""
    metrics = make(clock)
    a = Done("chat", "llama", "acme", 200, "ok", 1.0)
    b = Done("chat", "llama", "acme", 200, "ok", 2.0)
    metrics.record_requests([a])
    clock.step(100.0)  # the window (60 s) has passed with nothing recorded
    metrics.record_requests([b] * 3)
    assert metrics.latency_quantiles("llama", (0.0, 1.0)) == [
        pytest.approx(2.0, rel=0.02),
        pytest.approx(2.0, rel=0.02),
    ]
    clock.step(30.0)
    metrics.record_requests([a] * (SKETCH_BATCH + 5))  # fills a fold's batch mid-call
    assert metrics.latency_quantiles("llama", (0.0, 1.0)) == [
        pytest.approx(1.0, rel=0.02),
        pytest.approx(2.0, rel=0.02),
    ]
    clock.step(45.0)  # b's slice has left the window; a's has not
    assert metrics.latency_quantiles("llama", (0.0, 1.0)) == [
        pytest.approx(1.0, rel=0.02),
        pytest.approx(1.0, rel=0.02),
    ]
    metrics.record_attempts([("p/e", 200, 0.5)])
    clock.step(100.0)
    metrics.record_attempts([("p/e", 200, 0.25)])
    assert metrics.endpoint_latency_quantiles("p/e", (1.0,)) == [pytest.approx(0.25, rel=0.02)]
