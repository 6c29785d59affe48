"""AccessLog and the decision trail: one safe JSON line per request, decisions in order."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from headway.core import (
    Context,
    ManualClock,
    Priority,
    UpstreamError,
    annotate,
    request_context,
)
from headway.guard.fallback import Fallback
from headway.observe import AccessLog, TrailHooks, decision_for, decision_reasons

WALL = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z

API_KEY = "sk-live-SECRET-abc123"
PROMPT = "my password is hunter2, please summarise"


def line(buffer: io.BytesIO) -> dict[str, object]:
    [raw] = buffer.getvalue().splitlines()
    parsed = orjson.loads(raw)
    assert isinstance(parsed, dict)
    return parsed


def test_record_writes_one_json_line() -> None:
    out = io.BytesIO()
    log = AccessLog(out, clock=lambda: WALL)
    log.record(
        request_id="abc",
        tenant="acme",
        model="gpt-4o",
        endpoint="pool-a/ep1",
        route="chat",
        status=200,
        latency=1.2345678,
        ttft=0.25,
        prompt_tokens=12,
        completion_tokens=34,
        stream=True,
        attributes={"fallback": ["upstream_error"], "decisions": ["retried", "retried"]},
    )
    assert out.getvalue().endswith(b"\n")
    assert line(out) == {
        "ts": "2023-11-14T22:13:20.250000Z",
        "request_id": "abc",
        "tenant": "acme",
        "route": "chat",
        "model": "gpt-4o",
        "endpoint": "pool-a/ep1",
        "status": 200,
        "reason": None,
        "latency_ms": 1234.568,
        "ttft_ms": 250.0,
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "stream": True,
        "decisions": ["fell_back", "retried"],
    }


def test_refusal_line_has_reason_and_no_ttft() -> None:
    out = io.BytesIO()
    AccessLog(out, clock=lambda: WALL).record(
        request_id="r1", tenant="acme", model="m", status=429, latency=0.001,
        reason="tenant_rpm", attributes={"decisions": ["rate_limited"]},
    )  # fmt: skip
    got = line(out)
    assert got["status"] == 429
    assert got["reason"] == "tenant_rpm"
    assert got["ttft_ms"] is None
    assert got["decisions"] == ["rate_limited"]
    assert got["stream"] is False


def test_secrets_and_prompts_never_appear(clock: ManualClock) -> None:
    out = io.BytesIO()
    log = AccessLog(out, clock=clock.now)
    ctx = Context(tenant="acme", request_id="r2", attributes={})
    # Attributes may hold anything a guard put there; only decisions are logged from them.
    ctx.attributes["headers"] = {"authorization": f"Bearer {API_KEY}"}
    ctx.attributes["messages"] = [{"role": "user", "content": PROMPT}]
    ctx.attributes["decisions"] = ["shed", PROMPT[:3] and "cached"]
    log.record(
        request_id=ctx.request_id, tenant=ctx.tenant, model=PROMPT * 10, status=404,
        latency=0.0, attributes=ctx.attributes,
    )  # fmt: skip
    raw = out.getvalue().decode()
    assert API_KEY not in raw
    assert "hunter2" not in raw
    assert "Bearer" not in raw
    assert line(out)["model"] == "invalid"
    assert line(out)["decisions"] == ["shed", "cached"]


@pytest.mark.parametrize(
    ("allowed", "model", "logged"),
    [
        (
            None,
            "meta-llama/Llama-3.1-8B-Instruct:q4@main",
            "meta-llama/Llama-3.1-8B-Instruct:q4@main",
        ),
        (None, "gpt-5-turbo", "gpt-5-turbo"),
        (None, "x" * 101, "invalid"),
        (None, "gpt 4", "invalid"),
        (["gpt-4o"], "gpt-4o", "gpt-4o"),
        (["gpt-4o"], "gpt-5-turbo", "other"),
    ],
)
def test_model_names_are_bounded(allowed: list[str] | None, model: str, logged: str) -> None:
    out = io.BytesIO()
    log = AccessLog(out, clock=lambda: WALL, models=allowed)
    log.record(request_id="m", tenant="t", model=model, status=404, latency=0.0)
    assert line(out)["model"] == logged


def test_disabled_log_formats_nothing() -> None:
    class Exploding(io.BytesIO):
        def write(self, data: object) -> int:
            raise AssertionError("must not write")

    def clock() -> float:
        raise AssertionError("must not read the clock")

    log = AccessLog(Exploding(), clock=clock, enabled=False)
    assert not log.active
    log.record(request_id="x", tenant="t", model="m", status=200, latency=0.1)


def test_logger_sink_respects_its_level(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("headway.test.access")
    log = AccessLog(logger, clock=lambda: WALL)
    with caplog.at_level(logging.WARNING, logger="headway.test.access"):
        assert not log.active
        log.record(request_id="x", tenant="t", model="m", status=200, latency=0.1)
        assert caplog.records == []
    with caplog.at_level(logging.INFO, logger="headway.test.access"):
        assert log.active
        log.record(request_id="y", tenant="t", model="m", status=200, latency=0.1)
    [record] = caplog.records
    assert orjson.loads(record.getMessage())["request_id"] == "y"


def test_text_stream_sink() -> None:
    out = io.StringIO()
    AccessLog(out, clock=lambda: WALL).record(
        request_id="t", tenant=None, model=None, status=401, latency=0.0005
    )
    got = orjson.loads(out.getvalue())
    assert got["tenant"] is None
    assert got["latency_ms"] == 0.5
    assert got["decisions"] == []


# -- the decision trail --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "event", "decision"),
    [
        ("retry", "retry", "retried"),
        ("retry", "budget_exhausted", None),
        ("breaker", "rejected", "breaker_open"),
        ("breaker", "state.open", None),
        ("ratelimit", "rejected", "rate_limited"),
        ("tenant_quota", "rejected_tpm", "rate_limited"),
        ("shed", "rejected.queue_full", "shed"),
        ("shed", "shed.default", None),  # the rejected.* event of the same refusal suffices
        ("concurrency", "rejected.concurrency_limit", "shed"),
        ("hedge", "hedge.sent", "hedged"),
        ("concurrency", "limit", None),
    ],
)
def test_decision_for(kind: str, event: str, decision: str | None) -> None:
    assert decision_for(kind, event) == decision


def test_trail_hooks_annotate_the_current_request() -> None:
    hooks = TrailHooks()
    hooks.on_event("retry", "r", "retry")  # outside a request: nothing, no error
    with request_context(priority=Priority.DEFAULT) as ctx:
        hooks.on_event("retry", "r", "retry", 1)
        hooks.on_event("retry", "r", "retry", 2)
        hooks.on_event("concurrency", "c", "limit", 3)
        hooks.on_event("breaker", "b", "rejected")
        annotate("fallback", "circuit_open")
        assert ctx.attributes["decisions"] == ["retried", "retried", "breaker_open"]
        assert decision_reasons(ctx.attributes) == ["retried", "breaker_open", "fell_back"]


async def test_fallback_guard_trail_reaches_the_log() -> None:
    async def primary(request: str) -> str:
        raise UpstreamError("down", status=503)

    async def backup(request: str) -> str:
        return "ok"

    guard = Fallback(backup)
    out = io.BytesIO()
    with request_context(request_id="r9") as ctx:
        assert await guard.call(primary, "req") == "ok"
        AccessLog(out, clock=lambda: WALL).record(
            request_id=ctx.request_id, tenant=None, model="m", status=200, latency=0.1,
            attributes=ctx.attributes,
        )  # fmt: skip
    assert line(out)["decisions"] == ["fell_back"]


def test_decision_reasons_ignores_unknown_keys() -> None:
    assert decision_reasons(None) == []
    assert decision_reasons({"route_key": ["x"], "decisions": "not-a-list"}) == []
