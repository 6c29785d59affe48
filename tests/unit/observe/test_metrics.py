"""GatewayMetrics: exposition parses, labels are bounded, hooks and snapshots become metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from headway.core import ManualClock
from headway.observe import LLM_BUCKETS, GatewayMetrics


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def names(metrics: GatewayMetrics) -> set[str]:
    return {f.name for f in text_string_to_metric_families(metrics.render().decode())}


def make(clock: ManualClock) -> GatewayMetrics:
    return GatewayMetrics(models=["gpt-4o", "llama"], tenants=["acme"], clock=clock)


def test_each_gateway_has_its_own_registry(clock: ManualClock) -> None:
    a, b = make(clock), make(clock)  # a second one would clash in a shared registry
    a.request("chat", "gpt-4o", "acme", 200, "ok", 0.5)
    assert a.registry is not b.registry
    got = samples(b)
    key = (
        "headway_requests_total",
        (
            ("model", "gpt-4o"),
            ("reason", "ok"),
            ("route", "chat"),
            ("status", "200"),
            ("tenant", "acme"),
        ),
    )
    assert key not in got
    assert samples(a)[key] == 1.0


def test_external_registry_is_used(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, clock=clock)
    assert metrics.registry is registry


def test_request_counts_and_latency_histogram(clock: ManualClock) -> None:
    metrics = make(clock)
    metrics.request("chat", "gpt-4o", "acme", 200, "ok", 0.3)
    metrics.request("chat", "gpt-4o", "acme", 200, "ok", 1.5)
    metrics.request("chat", "gpt-4o", "acme", 429, "rate_limited", 0.002)
    got = samples(metrics)
    base = (("model", "gpt-4o"), ("route", "chat"), ("tenant", "acme"))

    def req(status: str, reason: str) -> float:
        labels = tuple(sorted((*base, ("status", status), ("reason", reason))))
        return got[("headway_requests_total", labels)]

    assert req("200", "ok") == 2.0
    assert req("429", "rate_limited") == 1.0
    hist = (("model", "gpt-4o"), ("tenant", "acme"))
    assert got[("headway_request_duration_seconds_count", hist)] == 3.0
    assert abs(got[("headway_request_duration_seconds_sum", hist)] - 1.802) < 1e-9
    bucket = "headway_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.0025"), *hist))] == 1.0
    assert got[(bucket, (("le", "0.5"), *hist))] == 2.0
    assert got[(bucket, (("le", "2.0"), *hist))] == 3.0
    assert got[(bucket, (("le", "+Inf"), *hist))] == 3.0


def test_buckets_span_one_millisecond_to_two_minutes(clock: ManualClock) -> None:
    assert LLM_BUCKETS[0] == 0.001
    assert LLM_BUCKETS[-1] == 120.0
    assert list(LLM_BUCKETS) == sorted(LLM_BUCKETS)
    metrics = make(clock)
    metrics.request("chat", "gpt-4o", "acme", 200, "ok", 0.1)
    les = {
        dict(labels)["le"]
        for (name, labels) in samples(metrics)
        if name == "headway_request_duration_seconds_bucket"
    }
    assert les == {repr(b) for b in LLM_BUCKETS} | {"+Inf"}


def test_unknown_tenants_models_and_routes_become_other(clock: ManualClock) -> None:
    metrics = make(clock)
    for i in range(50):  # raw client input must not create series
        metrics.request(f"/v1/x{i}", f"model-{i}", f"tenant-{i}", 200, "ok", 0.1)
        metrics.tokens(f"model-{i}", f"tenant-{i}", 10, 5, 1.0)
    metrics.request("chat", "gpt-4o", None, 401, "unauthenticated", 0.001)
    got = samples(metrics)
    requests = {labels: v for (name, labels), v in got.items() if name == "headway_requests_total"}
    other = (
        ("model", "other"),
        ("reason", "ok"),
        ("route", "other"),
        ("status", "200"),
        ("tenant", "other"),
    )
    none = (
        ("model", "gpt-4o"),
        ("reason", "unauthenticated"),
        ("route", "chat"),
        ("status", "401"),
        ("tenant", "none"),
    )
    assert requests == {other: 50.0, none: 1.0}
    assert got[("headway_prompt_tokens_total", (("model", "other"), ("tenant", "other")))] == 500
    assert len(metrics._request_children) == 2
    text = metrics.render().decode()
    assert "tenant-7" not in text
    assert "model-7" not in text


def test_set_allowed_on_reload(clock: ManualClock) -> None:
    metrics = make(clock)
    metrics.request("chat", "new-model", "acme", 200, "ok", 0.1)
    metrics.set_allowed(models=["new-model"])
    metrics.request("chat", "new-model", "acme", 200, "ok", 0.1)
    got = samples(metrics)
    hist = "headway_request_duration_seconds_count"
    assert got[(hist, (("model", "other"), ("tenant", "acme")))] == 1.0
    assert got[(hist, (("model", "new-model"), ("tenant", "acme")))] == 1.0


def test_tokens_and_output_rate(clock: ManualClock) -> None:
    metrics = make(clock)
    metrics.tokens("llama", "acme", 100, 50, 2.0)
    metrics.tokens("llama", "acme", 0, 0, 0.0)
    got = samples(metrics)
    labels = (("model", "llama"), ("tenant", "acme"))
    assert got[("headway_prompt_tokens_total", labels)] == 100.0
    assert got[("headway_completion_tokens_total", labels)] == 50.0
    assert got[("headway_output_tokens_per_second_sum", (("model", "llama"),))] == 25.0
    assert got[("headway_output_tokens_per_second_count", (("model", "llama"),))] == 1.0


def test_stream_timer_records_ttft_and_gaps(clock: ManualClock) -> None:
    metrics = make(clock)
    timer = metrics.stream("llama", clock.now())
    clock.step(0.25)
    timer.chunk()
    clock.step(0.02)
    timer.chunk()
    clock.step(0.03)
    timer.chunk()
    assert timer.ttft == 0.25
    assert abs(timer.generation_seconds - 0.05) < 1e-9
    got = samples(metrics)
    model = (("model", "llama"),)
    assert got[("headway_time_to_first_token_seconds_sum", model)] == 0.25  # at the first chunk
    assert got[("headway_inter_token_seconds_count", model)] == 0.0  # gaps: when it ends
    timer.done()
    clock.step(0.5)
    timer.chunk()  # a chunk after done() (a caller that looked early): its gap counts later
    timer.done()
    timer.done()  # each gap once
    got = samples(metrics)
    assert got[("headway_inter_token_seconds_count", model)] == 3.0
    assert abs(got[("headway_inter_token_seconds_sum", model)] - 0.55) < 1e-9
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in got.items()
        if name == "headway_inter_token_seconds_bucket" and dict(labels)["model"] == "llama"
    }
    assert buckets["+Inf"] == 3.0
    metrics.first_token("gpt-4o", 0.1)
    metrics.chunk_gap("gpt-4o", 0.01)
    got = samples(metrics)
    assert got[("headway_inter_token_seconds_count", (("model", "gpt-4o"),))] == 1.0


def test_upstream_metrics(clock: ManualClock) -> None:
    metrics = GatewayMetrics(endpoints=["pool-a/ep1"], clock=clock)
    metrics.upstream("pool-a/ep1", 200, 0.4)
    metrics.upstream("http://10.0.0.9:8000", 0, 5.0)
    got = samples(metrics)
    assert got[("headway_upstream_requests_total", (("endpoint", "pool-a/ep1"), ("status", "200")))]
    assert got[("headway_upstream_requests_total", (("endpoint", "other"), ("status", "0")))] == 1
    assert got[("headway_upstream_duration_seconds_sum", (("endpoint", "other"),))] == 5.0


def test_latency_quantiles_from_the_sliding_sketch(clock: ManualClock) -> None:
    metrics = make(clock)
    for i in range(1, 1001):
        metrics.request("chat", "gpt-4o", "acme", 200, "ok", i / 1000)
    metrics.request("chat", "llama", "acme", 200, "ok", 9.0)
    p50, p99, p999 = metrics.latency_quantiles("gpt-4o")
    assert abs(p50 - 0.5) <= 0.01 * 0.5
    assert abs(p99 - 0.99) <= 0.01 * 0.99
    assert abs(p999 - 0.999) <= 0.01 * 0.999
    assert metrics.latency_quantiles("llama", (0.5,)) == [9.0]
    assert metrics.latency_quantiles(None, (1.0,)) == [9.0]
    nan = metrics.latency_quantiles("never-seen", (0.5,))[0]
    assert nan != nan
    clock.step(61.0)
    p50 = metrics.latency_quantiles("gpt-4o", (0.5,))[0]
    assert p50 != p50  # the window has passed


# -- guard hooks ---------------------------------------------------------------------------------


def test_guard_events_become_metrics(clock: ManualClock) -> None:
    metrics = make(clock)
    hooks = metrics.hooks
    hooks.on_event("breaker", "pool-a/ep1", "state.open", 1.0)
    hooks.on_event("breaker", "pool-a/ep1", "rejected", 1.0)
    hooks.on_event("breaker", "pool-a/ep1", "rejected", 1.0)
    hooks.on_event("breaker", "pool-a/ep1", "state.half_open", 2.0)
    hooks.on_event("shed", "admission", "rejected.queue_full")
    hooks.on_event("shed", "admission", "shed.sheddable")
    hooks.on_event("tenant_quota", "tenants", "rejected_rpm", 1.0)
    hooks.on_event("ratelimit", "rl", "rejected", 1.0)
    hooks.on_event("concurrency", "pool-a", "limit", 17.0)
    hooks.on_event("concurrency", "pool-a", "limit", 12.0)
    hooks.on_event("hedge", "h", "hedge.sent", 1)
    hooks.on_event("hedge", "h", "hedge.sent", 2)
    hooks.on_event("hedge", "h", "hedge.won", 2)
    hooks.on_event("retry", "r", "retry", 3)  # value is the attempt number, counted once
    hooks.on_event("retry", "r", "budget_exhausted")
    got = samples(metrics)
    assert got[("headway_breaker_state", (("name", "pool-a/ep1"),))] == 2.0
    transitions = "headway_breaker_transitions_total"
    assert got[(transitions, (("name", "pool-a/ep1"), ("state", "open")))] == 1.0
    assert got[(transitions, (("name", "pool-a/ep1"), ("state", "half_open")))] == 1.0

    def rejected(kind: str, name: str, reason: str) -> float:
        labels = (("kind", kind), ("name", name), ("reason", reason))
        return got[("headway_rejections_total", labels)]

    assert rejected("breaker", "pool-a/ep1", "breaker_open") == 2.0
    assert rejected("shed", "admission", "queue_full") == 1.0
    assert rejected("tenant_quota", "tenants", "rpm") == 1.0
    assert rejected("ratelimit", "rl", "rate_limited") == 1.0
    assert got[("headway_shed_total", (("name", "admission"), ("priority", "sheddable")))] == 1.0
    assert got[("headway_concurrency_limit", (("kind", "concurrency"), ("name", "pool-a")))] == 12
    assert got[("headway_hedges_sent_total", (("name", "h"),))] == 2.0
    assert got[("headway_hedges_won_total", (("name", "h"),))] == 1.0
    assert got[("headway_retries_total", (("name", "r"),))] == 1.0
    events = (("event", "budget_exhausted"), ("kind", "retry"), ("name", "r"))
    assert got[("headway_guard_events_total", events)] == 1.0
    assert len(hooks._actions) == 12


class _Guard:
    def __init__(self, kind: str, name: str, **fields: object) -> None:
        self.kind = kind
        self.name = name
        self.fields = fields

    def snapshot(self) -> dict[str, object]:
        return dict(self.fields)


class _Budget:  # no kind or name of its own
    def __init__(self) -> None:
        self.balance = 3.0

    def snapshot(self) -> dict[str, float]:
        return {"balance": self.balance}


def test_snapshots_are_read_at_scrape_time(clock: ManualClock) -> None:
    metrics = make(clock)
    shed = _Guard("shed", "admission", inflight=4, queue_delay_last=0.012, overloaded=True)
    shed.fields["nested"] = {"x": 1}  # skipped
    budget = _Budget()
    metrics.snapshots.add(shed)
    metrics.snapshots.add(budget, kind="retry_budget", name="pool-a")
    metrics.snapshots.add(shed)  # registering twice does not duplicate
    pools = [_Guard("breaker", "ep1", state=1), _Guard("breaker", "ep2", state=0)]
    metrics.snapshots.add_source(lambda: pools)
    got = samples(metrics)
    assert got[("headway_guard_shed_inflight", (("name", "admission"),))] == 4.0
    assert got[("headway_guard_shed_queue_delay_last", (("name", "admission"),))] == 0.012
    assert got[("headway_guard_shed_overloaded", (("name", "admission"),))] == 1.0
    assert got[("headway_guard_retry_budget_balance", (("name", "pool-a"),))] == 3.0
    assert got[("headway_guard_breaker_state", (("name", "ep1"),))] == 1.0
    assert got[("headway_guard_breaker_state", (("name", "ep2"),))] == 0.0
    assert not any(name.startswith("headway_guard_shed_nested") for name, _ in got)
    budget.balance = 1.5
    pools.pop()
    got = samples(metrics)
    assert got[("headway_guard_retry_budget_balance", (("name", "pool-a"),))] == 1.5
    assert ("headway_guard_breaker_state", (("name", "ep2"),)) not in got
    metrics.snapshots.remove(budget)
    assert "headway_guard_retry_budget_balance" not in names(metrics)


def test_hooks_and_snapshots_never_clash(clock: ManualClock) -> None:
    metrics = make(clock)
    metrics.hooks.on_event("breaker", "ep1", "state.open", 1.0)
    metrics.snapshots.add(_Guard("breaker", "ep1", state=1, transitions=1, rejected=0))
    metrics.request("chat", "gpt-4o", "acme", 200, "ok", 0.1)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    family_names = [f.name for f in families]
    assert len(family_names) == len(set(family_names))
    assert "headway_breaker_state" in family_names
    assert "headway_guard_breaker_state" in family_names
    assert metrics.content_type.startswith("text/plain")
