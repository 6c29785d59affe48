"""Observability wired into the gateway: /metrics on the admin port, the access log, and the
``observe`` switches that take both off the request path."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BASE_CONFIG, Running, make_config
from headway.gateway._app import Gateway
from headway.observe import GatewayMetrics

# Both are off by default (config/_observe.py says why); tests opt in.
OBSERVE_ON = {"metrics": True, "access_log": True}

PROMPT = "purple-elephant-secret-prompt"
BOGUS_MODEL = "my-bogus-model-name"
ACCESS_FIELDS = {
    "ts",
    "request_id",
    "tenant",
    "route",
    "model",
    "endpoint",
    "status",
    "reason",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "stream",
    "decisions",
}
MESSAGES: Any = [{"role": "user", "content": PROMPT}]


async def _traffic(gw: Running) -> None:
    """2 + 1 streamed OK for pro, 3 OK + 1 over-RPM (429) for free, one bad key (401), one
    unknown model (404)."""
    pro = gw.client("sk-pro")
    for _ in range(2):
        await pro.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=5)
    stream = await pro.chat.completions.create(
        model="sim-small",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass
    free = gw.client("sk-free")
    for _ in range(3):
        await free.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=5)
    with pytest.raises(openai.RateLimitError):
        await free.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=5)
    with pytest.raises(openai.AuthenticationError):
        await gw.client("sk-wrong-key").chat.completions.create(
            model="sim-small", messages=MESSAGES
        )
    with pytest.raises(openai.NotFoundError):
        await pro.chat.completions.create(model=BOGUS_MODEL, messages=MESSAGES)


def _get_sync(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["content-type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read().decode()


async def _get(url: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(_get_sync, url)


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for got, v in samples if all(got.get(k) == w for k, w in labels.items()))


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "headway.access"]


async def test_metrics_and_access_log_after_mixed_traffic(
    start_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    gw: Running = await start_gateway(make_config(observe=OBSERVE_ON))
    caplog.set_level(logging.INFO, logger="headway.access")
    await _traffic(gw)
    status, content_type, text = await _get(f"{gw.admin_url}/metrics")
    assert status == 200
    assert content_type == GatewayMetrics.content_type
    assert (await _get(f"{gw.admin_url}/healthz"))[0] == 200
    assert (await _get(f"{gw.admin_url}/status"))[0] == 200
    samples = _samples(text)

    requests = samples["headway_requests_total"]
    ok = {"route": "chat", "model": "sim-small", "status": "200", "reason": "ok"}
    assert _value(requests, tenant="pro", **ok) == 3
    assert _value(requests, tenant="free", **ok) == 3
    assert _value(requests, tenant="free", status="429", reason="tenant_rpm") == 1
    assert (
        _value(requests, tenant="none", model="none", status="401", reason="invalid_api_key") == 1
    )
    assert _value(requests, tenant="pro", model="other", status="404") == 1
    assert sum(v for _, v in requests) == 9

    # Cardinality: client input never becomes a label value.
    for name, rows in samples.items():
        for labels, _ in rows:
            assert BOGUS_MODEL not in labels.values(), name
            assert not any(v.startswith("sk-") for v in labels.values()), name

    ttft = samples["headway_time_to_first_token_seconds_count"]
    assert _value(ttft, model="sim-small") == 1
    assert _value(samples["headway_inter_token_seconds_count"], model="sim-small") >= 1
    completion = samples["headway_completion_tokens_total"]
    assert _value(completion, model="sim-small", tenant="pro") > 0
    assert _value(samples["headway_prompt_tokens_total"], model="sim-small", tenant="free") > 0
    upstream = samples["headway_upstream_requests_total"]
    assert _value(upstream, status="200") == 6
    assert {labels["endpoint"] for labels, _ in upstream} <= {"small/sim://a1", "small/sim://a2"}
    # Scrape-time guard gauges: breakers closed, adaptive limits, tenant-quota rejections.
    breaker = samples["headway_guard_breaker_state"]
    assert {labels["name"] for labels, _ in breaker} == {
        "small/sim://a1",
        "small/sim://a2",
        "large/sim://b1",
    }
    assert all(v == 0 for _, v in breaker)
    assert all(v >= 1 for _, v in samples["headway_guard_endpoint_limit"])
    assert _value(samples["headway_guard_tenant_quota_rejected"], name="tenants") == 1
    assert _value(samples["headway_guard_shed_inflight"], name="admission") == 0
    assert _value(samples["headway_rejections_total"], kind="tenant_quota") == 1

    lines = _access_lines(caplog)
    assert len(lines) == 9
    assert all(set(line) == ACCESS_FIELDS for line in lines)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "headway.access")
    assert PROMPT not in text
    assert "sk-" not in text
    assert BOGUS_MODEL not in text
    assert len({line["request_id"] for line in lines}) == 9
    streamed = [line for line in lines if line["stream"]]
    assert len(streamed) == 1
    assert streamed[0]["status"] == 200
    assert streamed[0]["ttft_ms"] > 0
    assert streamed[0]["endpoint"] in ("small/sim://a1", "small/sim://a2")
    limited = [line for line in lines if line["status"] == 429]
    assert [(x["tenant"], x["reason"], x["decisions"]) for x in limited] == [
        ("free", "tenant_rpm", ["rate_limited"])
    ]
    unknown = [line for line in lines if line["status"] == 404]
    assert [(x["tenant"], x["model"]) for x in unknown] == [("pro", "other")]
    assert [x["tenant"] for x in lines if x["status"] == 401] == [None]
    ok_lines = [x for x in lines if x["status"] == 200 and not x["stream"]]
    assert len(ok_lines) == 5
    assert all(x["completion_tokens"] > 0 and x["ttft_ms"] is None for x in ok_lines)


async def test_observe_off_records_nothing(
    start_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="headway.access")
    gw: Running = await start_gateway(make_config(observe={"metrics": False, "access_log": False}))
    await _traffic(gw)
    assert (await _get(f"{gw.admin_url}/metrics"))[0] == 404
    assert _access_lines(caplog) == []
    samples = _samples(gw.gateway.metrics.render().decode())
    for name in (
        "headway_requests_total",
        "headway_upstream_requests_total",
        "headway_time_to_first_token_seconds_count",
        "headway_completion_tokens_total",
        "headway_rejections_total",
    ):
        assert name not in samples, name


async def test_access_log_only(
    start_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="headway.access")
    gw: Running = await start_gateway(make_config(observe={"metrics": False, "access_log": True}))
    await _traffic(gw)
    await asyncio.sleep(0.2)  # the last batch is written observe.record_delay (10 ms) later
    lines = _access_lines(caplog)
    assert len(lines) == 9
    assert [x["ttft_ms"] > 0 for x in lines if x["stream"]] == [True]
    assert "headway_requests_total" not in _samples(gw.gateway.metrics.render().decode())


async def test_access_log_to_a_buffered_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="headway.access")
    sink = io.BytesIO()
    gateway = Gateway(make_config(observe=OBSERVE_ON), access_log_sink=sink)
    await gateway.start(api_port=0, admin_port=0)
    try:
        await _traffic(Running(gateway))
    finally:
        await gateway.stop(1.0)
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert len(lines) == 9
    assert all(set(line) == ACCESS_FIELDS for line in lines)
    assert _access_lines(caplog) == []  # the stream replaces the logger


async def test_a_long_streams_gaps_are_handed_over_as_it_goes_and_all_counted(
    start_gateway: Callable[..., Any],
) -> None:
    """A stream holds at most STREAM_STAMPS_HELD chunk arrival times; past that it hands the
    gaps so far to the metrics. None is lost or counted twice: the gaps sum to the decode time
    (first to last chunk) that tokens/s divides the completion tokens by."""
    gw: Running = await start_gateway(make_config(observe=OBSERVE_ON))
    runtime = gw.gateway.runtime
    assert runtime is not None
    assert runtime.recorder is not None
    runtime.recorder.stamps_held = 2  # hand over at every chunk
    stream = await gw.client("sk-pro").chat.completions.create(
        model="sim-small",
        messages=MESSAGES,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    completion = 0
    async for chunk in stream:
        if chunk.usage is not None:
            completion = chunk.usage.completion_tokens
    assert completion > 1
    samples = _samples((await _get(f"{gw.admin_url}/metrics"))[2])
    gaps = _value(samples["headway_inter_token_seconds_count"], model="sim-small")
    gap_sum = _value(samples["headway_inter_token_seconds_sum"], model="sim-small")
    tps = _value(samples["headway_output_tokens_per_second_sum"], model="sim-small")
    assert gaps >= 2  # more than one hand-over's worth
    assert gap_sum == pytest.approx(completion / tps, rel=1e-6)


async def test_a_stream_that_breaks_or_is_dropped_is_logged_with_what_ended_it(
    start_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A stream's status line (200) is out before it ends; its outcome is what ended it: the
    upstream's stall maps to its error, a client that goes away to 499 client_closed."""
    caplog.set_level(logging.INFO, logger="headway.access")
    pools = json.loads(json.dumps(BASE_CONFIG["pools"]))
    pools[0]["timeouts"]["stall"] = 0.3
    gw: Running = await start_gateway(make_config(observe=OBSERVE_ON, pools=pools))
    stall = {"stall_rate": 1.0, "stall_after_chunks": 3, "stall_seconds": 5.0}
    for name in ("a1", "a2"):
        gw.sim(name).faults.update(stall)
    stream = await gw.client().chat.completions.create(
        model="sim-small", messages=MESSAGES, max_tokens=10, stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    for name in ("a1", "a2"):
        gw.sim(name).faults.update({"stall_rate": 0.0})

    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.api_port)
    body = json.dumps(
        {"model": "sim-small", "messages": MESSAGES, "max_tokens": 5000, "stream": True}
    ).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-pro\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.readuntil(b"\n\n"), 5.0)  # the first event
    writer.close()
    await writer.wait_closed()
    for _ in range(150):  # up to 3 s: the relay sees the client gone, then the batch is written
        if len(_access_lines(caplog)) >= 2:
            break
        await asyncio.sleep(0.02)
    lines = _access_lines(caplog)
    assert [(x["stream"], x["status"], x["reason"]) for x in lines] == [
        (True, 504, "stall_timeout"),
        (True, 499, "client_closed"),
    ]
    assert all(x["ttft_ms"] > 0 for x in lines)
    samples = _samples((await _get(f"{gw.admin_url}/metrics"))[2])
    assert _value(samples["headway_requests_total"], status="499", reason="client_closed") == 1
