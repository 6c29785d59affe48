"""SimApp's timing model and formats, exact under the manual clock (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from headway.core import ManualClock
from headway.http import AbortConnection, Request, Response, StreamingResponse
from headway.sim import FaultConfig, SimApp, SimConfig

CONFIG = SimConfig(
    ttft_base=0.5,
    ttft_per_prompt_token=0.01,
    tokens_per_second=10.0,
    capacity=1,
    default_output_tokens=4,
)


def chat(**extra: Any) -> Request:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}], **extra}
    return Request("POST", "/v1/chat/completions", "", {}, orjson.dumps(body))


async def test_non_stream_latency_is_ttft_plus_decode(clock: ManualClock) -> None:
    app = SimApp(CONFIG, clock=clock)
    start = clock.now()
    task = asyncio.create_task(app(chat()))
    # prompt 100 tokens -> ttft 0.5 + 1.0; decode 4 tokens at 10/s -> 0.4; total 1.9
    await clock.advance(1.89)
    assert not task.done()
    await clock.advance(0.01)
    response = await task
    assert isinstance(response, Response)
    assert clock.now() - start == pytest.approx(1.9)
    body = orjson.loads(response.body)
    assert body["usage"] == {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104}


async def test_queueing_adds_latency_under_load(clock: ManualClock) -> None:
    app = SimApp(CONFIG, clock=clock)
    first = asyncio.create_task(app(chat()))
    second = asyncio.create_task(app(chat()))
    await asyncio.sleep(0)
    assert app.snapshot()["queued"] == 1
    await clock.advance(1.9)
    assert first.done()
    assert not second.done()
    await clock.advance(1.9)
    assert second.done()
    assert app.snapshot() == {
        "active": 0.0,
        "queued": 0.0,
        "served": 2.0,
        "errors": 0.0,
        "faults_injected": 0.0,
    }


async def collect(clock: ManualClock, response: StreamingResponse) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []

    async def consume() -> None:
        async for chunk in response.chunks:
            out.append((round(clock.now() - 1000.0, 6), chunk))

    task = asyncio.create_task(consume())
    while not task.done():
        await clock.advance(0.05)
    return out


async def test_stream_timing_and_format(clock: ManualClock) -> None:
    app = SimApp(CONFIG, clock=clock)
    response = await app(chat(stream=True, stream_options={"include_usage": True}))
    assert isinstance(response, StreamingResponse)
    events = await collect(clock, response)
    times = [t for t, _ in events]
    # role chunk at TTFT (1.5 s); tokens every 0.1 s from there; finish, usage, DONE after
    assert times[:5] == pytest.approx([1.5, 1.5, 1.6, 1.7, 1.8])
    payloads = [e[len(b"data: ") : -2] for _, e in events]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for _, e in events)
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "the quick brown fox"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert all(c["usage"] is None for c in chunks[:-1])
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def test_stall_shifts_later_tokens(clock: ManualClock) -> None:
    config = SimConfig(
        ttft_base=0.5,
        ttft_per_prompt_token=0.0,
        tokens_per_second=10.0,
        default_output_tokens=4,
        faults=FaultConfig(stall_rate=1.0, stall_after_chunks=2, stall_seconds=1.0),
    )
    app = SimApp(config, clock=clock)
    response = await app(chat(stream=True))
    assert isinstance(response, StreamingResponse)
    times = [t for t, _ in await collect(clock, response)]
    # role 0.5, tokens 0.5, 0.6, then the stall: 1.7, 1.8
    assert times[:5] == pytest.approx([0.5, 0.5, 0.6, 1.7, 1.8])


async def test_reset_and_error_faults(clock: ManualClock) -> None:
    app = SimApp(SimConfig(faults=FaultConfig(reset_rate=1.0)), clock=clock)
    with pytest.raises(AbortConnection):
        await app(chat())
    app.faults.update({"reset_rate": 0.0, "error_rate": 1.0, "error_status": 429})
    response = await app(chat())
    assert isinstance(response, Response)
    assert response.status == 429
    assert orjson.loads(response.body)["error"]["type"] == "rate_limit_error"


async def test_malformed_non_stream_body_is_not_json(clock: ManualClock) -> None:
    config = SimConfig(ttft_base=0.1, faults=FaultConfig(malformed_rate=1))
    app = SimApp(config, clock=clock)
    task = asyncio.create_task(app(chat()))
    await clock.advance(1.0)
    response = await task
    assert isinstance(response, Response)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.body)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{}], "max_tokens": 0}, "max_tokens"),
    ],
)
async def test_invalid_requests_are_400(clock: ManualClock, body: Any, param: str) -> None:
    app = SimApp(clock=clock)
    req = Request("POST", "/v1/chat/completions", "", {}, orjson.dumps(body))
    response = await app(req)
    assert isinstance(response, Response)
    assert response.status == 400
    assert orjson.loads(response.body)["error"]["param"] == param


async def test_strict_models(clock: ManualClock) -> None:
    app = SimApp(SimConfig(strict_models=True), clock=clock)
    response = await app(chat())
    assert isinstance(response, Response)
    assert response.status == 404
    assert orjson.loads(response.body)["error"]["code"] == "model_not_found"


async def test_bounded_queue_answers_429(clock: ManualClock) -> None:
    app = SimApp(SimConfig(capacity=1, max_queue=0), clock=clock)
    first = asyncio.create_task(app(chat()))
    await asyncio.sleep(0)
    response = await app(chat())
    assert isinstance(response, Response)
    assert response.status == 429
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert app.snapshot()["active"] == 0
