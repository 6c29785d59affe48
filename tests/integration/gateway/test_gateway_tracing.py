"""OpenTelemetry tracing end to end: real requests from the official client through a real
gateway, spans exported over OTLP/HTTP to a real loopback receiver (tests/otlp.py), and a real
upstream (a simulator behind an HTTP server that records the headers it received)."""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import openai
import orjson
import pytest

from conftest import BASE_CONFIG, Running, make_config
from headway.config import GatewayConfig
from headway.gateway._app import Gateway
from headway.http import HttpServer, Request, Response, StreamingResponse
from headway.sim import SimApp, SimConfig
from otlp import OtlpReceiver, ReceivedSpan, otlp_receiver

StartGateway = Callable[..., Any]


class RecordingUpstream:
    """A simulator that keeps every request's headers, listening on one loopback port per
    :meth:`listen`. It can fail its first ``fail_first`` requests with the simulator's own
    injected 503 fault, or answer its first request ``slow_first`` seconds late."""

    def __init__(self, *, fail_first: int = 0, slow_first: float = 0.0) -> None:
        self.app = SimApp(SimConfig(models=("small",), ttft_base=0.01, tokens_per_second=2000))
        self.headers: list[dict[bytes, bytes]] = []
        self._fail_first = fail_first
        self._slow_first = slow_first
        if fail_first:
            self.app.faults.update({"error_rate": 1.0, "error_status": 503})
        self._servers: list[HttpServer] = []

    async def _handle(self, request: Request) -> Response | StreamingResponse:
        if request.path.endswith("/completions"):
            self.headers.append(dict(request.headers))
            if len(self.headers) > self._fail_first:
                self.app.faults.reset()
            if len(self.headers) == 1 and self._slow_first:
                await asyncio.sleep(self._slow_first)
        return await self.app(request)

    async def listen(self) -> str:
        server = HttpServer(self._handle, name="recording")
        self._servers.append(server)
        port = await server.start("127.0.0.1", 0)
        return f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop(1.0)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Any]]:
    started: list[RecordingUpstream] = []

    async def start(**options: Any) -> tuple[RecordingUpstream, str]:
        server = RecordingUpstream(**options)
        url = await server.listen()
        started.append(server)
        return server, url

    yield start
    for server in started:
        await server.stop()


def tracing(receiver: OtlpReceiver, **options: Any) -> dict[str, Any]:
    return {
        "metrics": False,
        "access_log": False,
        "tracing": {
            "enabled": True,
            "endpoint": receiver.url,
            "batch_delay": 0.05,
            "service_name": "gw-under-test",
            **options,
        },
    }


def recording_config(url: str, observe: dict[str, Any]) -> GatewayConfig:
    """BASE_CONFIG plus model 'rec', served by one recorded upstream (a retry goes back to
    it)."""
    return make_config(
        observe=observe,
        pools=[
            *BASE_CONFIG["pools"],
            {"name": "rec", "endpoints": [{"url": url}], "timeouts": {"ttft": 2.0}},
        ],
        models=[
            *BASE_CONFIG["models"],
            {
                "name": "rec",
                "pool": "rec",
                "upstream_model": "small",
                "retries": {"backoff_base": 0.01, "backoff_cap": 0.02},
            },
        ],
    )


def new_traceparent(sampled: bool = True) -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


async def flush(running: Running) -> None:
    """Spans end when their requests' batch is recorded (observe.batch_delay after the first
    of them ends): record what is waiting, then export."""
    runtime = running.gateway.runtime
    assert runtime is not None
    assert runtime.tracer is not None
    running.gateway.flush_observations()
    assert await asyncio.to_thread(runtime.tracer.force_flush)


def only(spans: list[ReceivedSpan], **match: Any) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, spans)
    return found[0]


def parse_traceparent(value: bytes) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = value.decode().split("-")
    assert version == "00"
    return trace_id, span_id, flags


async def chat(
    client: openai.AsyncOpenAI, model: str, traceparent: str | None = None, **headers: str
) -> Any:
    if traceparent:
        headers["traceparent"] = traceparent
    return await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        extra_headers=headers,
    )


async def test_request_span_tree_attributes_and_inbound_parent(
    receiver: OtlpReceiver, upstream: Callable[..., Any]
) -> None:
    server, url = await upstream()
    sink = io.BytesIO()
    config = recording_config(url, {**tracing(receiver), "access_log": True})
    gateway = Gateway(config, access_log_sink=sink)
    await gateway.start(api_port=0, admin_port=0)
    running = Running(gateway)
    try:
        traceparent, trace_id, client_span = new_traceparent()
        reply = await chat(running.client(), "rec", traceparent, tracestate="vendor=opaque-1")
        await flush(running)
        spans = receiver.trace(trace_id)
        request = only(spans, kind="server")
        admission = only(spans, name="admission")
        attempt = only(spans, kind="client")
        assert len(spans) == 3
        # The caller's span is the parent; admission and the attempt hang under the request.
        assert request.parent_id == client_span
        assert admission.parent_id == request.span_id
        assert attempt.parent_id == request.span_id
        assert request.name == "POST /v1/chat/completions"
        assert request.resource["service.name"] == "gw-under-test"
        a = request.attributes
        assert a["http.request.method"] == "POST"
        assert a["http.route"] == "/v1/chat/completions"
        assert a["http.response.status_code"] == 200
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "rec"
        assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
        assert a["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens == 5
        assert a["headway.tenant"] == "pro"
        assert a["headway.stream"] is False
        assert a["headway.endpoint"] == "rec/ep0"
        assert "error.type" not in a
        assert request.status == "unset"
        assert admission.attributes["headway.priority"] == "critical"
        assert admission.start >= request.start
        assert admission.end <= attempt.start
        assert attempt.name == "POST /chat/completions"
        b = attempt.attributes
        assert b["headway.pool"] == "rec"
        assert b["headway.endpoint"] == "rec/ep0"
        assert b["headway.attempt"] == 1
        assert b["server.address"] == "127.0.0.1"
        assert b["server.port"] == int(url.split(":")[2].split("/")[0])
        assert b["http.response.status_code"] == 200
        assert "headway.retry" not in b
        assert attempt.end <= request.end
        # The upstream got the attempt's own traceparent, not the client's.
        [headers] = server.headers
        assert parse_traceparent(headers[b"traceparent"]) == (trace_id, attempt.span_id, "01")
        assert headers[b"tracestate"] == b"vendor=opaque-1"  # the caller's, passed along
        # The access log line names the trace and the request id the span carries.
        await gateway.stop(1.0)
        line = orjson.loads(sink.getvalue().splitlines()[-1])
        assert line["trace_id"] == trace_id
        assert line["request_id"] == a["headway.request_id"]
    finally:
        await gateway.stop(1.0)


async def test_retry_after_injected_fault_has_two_attempt_spans(
    start_gateway: StartGateway, receiver: OtlpReceiver, upstream: Callable[..., Any]
) -> None:
    server, url = await upstream(fail_first=1)
    running: Running = await start_gateway(recording_config(url, tracing(receiver)))
    traceparent, trace_id, _ = new_traceparent()
    reply = await chat(running.client(), "rec", traceparent)
    assert reply.choices[0].message.content
    await flush(running)
    spans = receiver.trace(trace_id)
    request = only(spans, kind="server")
    attempts = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start)
    assert [s.parent_id for s in attempts] == [request.span_id] * 2
    first, second = attempts
    assert first.status == "error"
    assert first.attributes["error.type"] == "503"
    assert first.attributes["http.response.status_code"] == 503
    assert second.status == "unset"
    assert second.attributes["headway.attempt"] == 2
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["headway.retry"] is True
    assert 0.0 <= second.attributes["headway.retry.backoff"] < 1.0
    assert first.end <= second.start
    assert "retried" in request.attributes["headway.decisions"]
    assert "retried" in request.events
    # Each upstream request carried the traceparent of its own attempt span.
    seen = [parse_traceparent(h[b"traceparent"]) for h in server.headers]
    assert seen == [(trace_id, first.span_id, "01"), (trace_id, second.span_id, "01")]


async def test_stream_span_ends_when_the_stream_ends(
    start_gateway: StartGateway, receiver: OtlpReceiver
) -> None:
    config = make_config(observe=tracing(receiver))
    running: Running = await start_gateway(config)
    traceparent, trace_id, _ = new_traceparent()
    stream = await running.client().chat.completions.create(
        model="sim-small",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": traceparent},
    )
    first_chunk_at = None
    usage = None
    async for chunk in stream:
        if first_chunk_at is None:
            first_chunk_at = time.time_ns()
        if chunk.usage is not None:
            usage = chunk.usage
    assert first_chunk_at is not None
    assert usage is not None
    await flush(running)
    spans = receiver.trace(trace_id)
    request = only(spans, kind="server")
    attempt = only(spans, kind="client")
    assert request.attributes["headway.stream"] is True
    # Usage arrives in the last chunk: the span has it, so it ended after the stream did.
    assert request.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens == 40
    assert request.attributes["headway.time_to_first_token"] > 0
    assert request.end > first_chunk_at
    # The attempt's span covers its whole stream too, not only the wait for the first chunk.
    assert "first_chunk" in attempt.events
    assert attempt.end > first_chunk_at
    assert attempt.end <= request.end


async def test_fallback_span_holds_the_fallback_models_attempts(
    start_gateway: StartGateway, receiver: OtlpReceiver
) -> None:
    models = [
        {"name": "sim-small", "pool": "small", "upstream_model": "small"},
        {
            "name": "sim-large",
            "pool": "large",
            "upstream_model": "large",
            "retries": {"max_attempts": 1},
            "fallbacks": ["sim-small"],
        },
    ]
    running: Running = await start_gateway(make_config(observe=tracing(receiver), models=models))
    running.sim("b1").faults.update({"error_rate": 1.0, "error_status": 503})
    traceparent, trace_id, _ = new_traceparent()
    reply = await chat(running.client(), "sim-large", traceparent)
    assert reply.model == "small"
    await flush(running)
    spans = receiver.trace(trace_id)
    request = only(spans, kind="server")
    fallback = only(spans, name="fallback")
    attempts = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start)
    assert fallback.parent_id == request.span_id
    assert fallback.attributes["headway.fallback.from"] == "sim-large"
    assert [s.attributes["headway.pool"] for s in attempts] == ["large", "small"]
    assert attempts[0].parent_id == request.span_id
    assert attempts[0].status == "error"
    assert attempts[1].parent_id == fallback.span_id
    assert attempts[1].attributes["headway.fallback"] is True
    assert "fell_back" in request.events
    assert request.attributes["gen_ai.request.model"] == "sim-large"


async def test_hedged_attempt_is_marked_and_the_loser_cancelled(
    start_gateway: StartGateway,
    receiver: OtlpReceiver,
    upstream: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two endpoints of one upstream whose first answer (whichever endpoint gets it) is late.
    server, url = await upstream(slow_first=1.0)
    other_url = await server.listen()
    config = make_config(
        observe=tracing(receiver),
        pools=[{"name": "h", "endpoints": [{"url": url}, {"url": other_url}]}],
        models=[{"name": "h", "pool": "h", "upstream_model": "small", "hedge": {"delay": 0.1}}],
        tenants=[BASE_CONFIG["tenants"][0]],
    )
    running: Running = await start_gateway(config)
    traceparent, trace_id, _ = new_traceparent()
    await chat(running.client(), "h", traceparent)
    await flush(running)
    spans = receiver.trace(trace_id)
    request = only(spans, kind="server")
    attempts = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start)
    assert len(attempts) == 2, spans
    primary, hedge = attempts
    assert hedge.attributes["headway.hedge"] is True
    assert "headway.hedge" not in primary.attributes
    assert hedge.start - primary.start >= 90_000_000  # the hedge delay, in ns
    assert primary.attributes.get("headway.cancelled") is True  # it lost the race
    assert hedge.attributes["http.response.status_code"] == 200
    assert "hedged" in request.events
    assert len(server.headers) == 2
    sent = {parse_traceparent(h[b"traceparent"])[1] for h in server.headers}
    assert sent == {primary.span_id, hedge.span_id}
    assert primary.attributes["headway.endpoint"] != hedge.attributes["headway.endpoint"]
    # Every span ended exactly once (the SDK warns about a second end()).
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


async def test_sampling_follows_the_caller_and_the_ratio(
    start_gateway: StartGateway, receiver: OtlpReceiver, upstream: Callable[..., Any]
) -> None:
    server, url = await upstream()
    running: Running = await start_gateway(
        recording_config(url, tracing(receiver, sample_ratio=0.0))
    )
    client = running.client()
    sampled, sampled_trace, _ = new_traceparent(sampled=True)
    unsampled, unsampled_trace, _ = new_traceparent(sampled=False)
    await chat(client, "rec", sampled)
    await chat(client, "rec", unsampled)
    await chat(client, "rec")  # a new trace: ratio 0 keeps none
    await flush(running)
    assert len(receiver.trace(sampled_trace)) == 3  # request, admission, attempt
    assert receiver.trace(unsampled_trace) == []
    assert {s.trace_id for s in receiver.spans} == {sampled_trace}
    # The upstream still gets the trace context, with the sampled flag (bit 0) as decided.
    seen = [parse_traceparent(h[b"traceparent"]) for h in server.headers]
    assert [t for t, _, _ in seen[:2]] == [sampled_trace, unsampled_trace]
    assert [int(flags, 16) & 1 for _, _, flags in seen] == [1, 0, 0]


async def test_refused_request_has_a_failed_admission_span(
    start_gateway: StartGateway, receiver: OtlpReceiver
) -> None:
    running: Running = await start_gateway(make_config(observe=tracing(receiver)))
    client = running.client("sk-free")  # rpm: 3
    for _ in range(3):
        await chat(client, "sim-small")
    traceparent, trace_id, _ = new_traceparent()
    with pytest.raises(openai.RateLimitError):
        await chat(client, "sim-small", traceparent)
    await flush(running)
    spans = receiver.trace(trace_id)
    request = only(spans, kind="server")
    admission = only(spans, name="admission")
    assert [s for s in spans if s.kind == "client"] == []
    assert request.attributes["http.response.status_code"] == 429
    assert request.attributes["error.type"] == "tenant_rpm"
    assert request.status == "unset"  # a 4xx is the client's doing
    assert admission.status == "error"
    assert admission.attributes["error.type"] == "tenant_rpm"
    assert admission.attributes["headway.tenant"] == "free"


async def test_tracing_off_forwards_the_callers_traceparent_unchanged(
    start_gateway: StartGateway, upstream: Callable[..., Any]
) -> None:
    server, url = await upstream()
    running: Running = await start_gateway(recording_config(url, {"metrics": True}))
    assert running.gateway.runtime is not None
    assert running.gateway.runtime.tracer is None
    traceparent, _, _ = new_traceparent()
    await chat(running.client(), "rec", traceparent)
    assert server.headers[0][b"traceparent"] == traceparent.encode()


async def test_stop_flushes_spans_still_waiting_for_their_batch(
    receiver: OtlpReceiver,
) -> None:
    # A batch delay far longer than the test: only the flush in Gateway.stop can send them.
    gateway = Gateway(make_config(observe=tracing(receiver, batch_delay=600)))
    await gateway.start(api_port=0, admin_port=0)
    running = Running(gateway)
    try:
        traceparent, trace_id, _ = new_traceparent()
        await chat(running.client(), "sim-small", traceparent)
        assert receiver.trace(trace_id) == []
    finally:
        await gateway.stop(1.0)
    assert len(receiver.trace(trace_id)) == 3


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_reload_keeps_an_unchanged_tracer_and_flushes_a_replaced_one(
    start_gateway: StartGateway, receiver: OtlpReceiver
) -> None:
    # Spans wait 600 s for their export batch, and outcomes (which end the spans) 1 s for
    # theirs: a retired runtime records what it holds before its tracer can be closed.
    slow_batches = {**tracing(receiver, batch_delay=600), "record_delay": 1.0}
    running: Running = await start_gateway(make_config(observe=slow_batches))
    gateway = running.gateway
    assert gateway.runtime is not None
    first = gateway.runtime.tracer
    traceparent, trace_id, _ = new_traceparent()
    await chat(running.client(), "sim-small", traceparent)
    # Another section changed: the same tracer carries on.
    await gateway.reload(make_config(observe=slow_batches, admission={"max_inflight": 100}))
    assert gateway.runtime.tracer is first
    # Tracing changed: a new tracer; the old one is flushed once its runtime retired, so the
    # span waiting for a 600 s batch arrives now.
    await gateway.reload(make_config(observe=tracing(receiver, service_name="v2")))
    second = gateway.runtime.tracer
    assert second is not None
    assert second is not first
    await eventually(lambda: len(receiver.trace(trace_id)) == 3)
    assert {s.resource["service.name"] for s in receiver.trace(trace_id)} == {"gw-under-test"}
    traceparent, trace_id, _ = new_traceparent()
    await chat(running.client(), "sim-small", traceparent)
    await flush(running)
    assert {s.resource["service.name"] for s in receiver.trace(trace_id)} == {"v2"}
    # Tracing off: no tracer, and the last one is flushed and closed too.
    await gateway.reload(make_config(observe={"metrics": False}))
    assert gateway.runtime.tracer is None
    await eventually(lambda: second not in gateway._tracers)


async def test_a_malformed_traceparent_starts_a_new_trace(
    start_gateway: StartGateway, receiver: OtlpReceiver, upstream: Callable[..., Any]
) -> None:
    server, url = await upstream()
    running: Running = await start_gateway(recording_config(url, tracing(receiver)))
    await chat(running.client(), "rec", "00-not-a-trace-01")
    await flush(running)
    request = only(receiver.spans, kind="server")
    attempt = only(receiver.spans, kind="client")
    assert request.parent_id == ""  # a root: the garbage was not trusted
    trace_id, span_id, _ = parse_traceparent(server.headers[0][b"traceparent"])
    assert (trace_id, span_id) == (request.trace_id, attempt.span_id)
