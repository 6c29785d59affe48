"""Failure behaviour end to end: the official OpenAI client, real sockets, real simulated
upstreams whose faults are flipped at run time.

Each test checks what a client sees (every request answered, the right error class, quickly) and
what the upstreams saw (how many attempts reached them), so a guard that silently stops working
fails a test. Timing bounds are generous multiples of the configured timeouts: the machine is
small and shared, and a bound only has to tell "cut by the gateway" from "waited for the
client's own 10 s timeout".
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from conftest import BASE_CONFIG, Running, make_config
from headway.config import GatewayConfig

StartGateway = Callable[..., Awaitable[Running]]

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def _section(name: str) -> Any:
    return copy.deepcopy(BASE_CONFIG[name])


def _small_pool(data: list[dict[str, Any]]) -> dict[str, Any]:
    return next(p for p in data if p["name"] == "small")


def _requests(running: Running, *sims: str) -> int:
    """Requests that reached these sims (counted on arrival, so hung ones count too)."""
    return sum(int(running.sim(name).snapshot()["requests"]) for name in sims)


def _endpoint(running: Running, pool: str, name: str) -> dict[str, Any]:
    assert running.gateway.runtime is not None
    snapshot = running.gateway.runtime.pools[pool].snapshot()
    endpoint: dict[str, Any] = next(e for e in snapshot["endpoints"] if e["name"] == name)
    return endpoint


async def _assert_settled(running: Running) -> None:
    """Nothing leaked: no request in flight, no admission slot, no endpoint slot held.

    Polled briefly: a stream's bookkeeping ends just after its last byte went out."""
    runtime = running.gateway.runtime
    assert runtime is not None
    held: list[float] = []
    for _ in range(100):
        held = [runtime.inflight, runtime.admission.snapshot()["inflight"]]
        held += [
            slot.outstanding for pool in runtime.pools.values() for slot in pool.balancer.endpoints
        ]
        if not any(held):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still held after 1 s: {held}")


def _timeouts_config(**timeouts: float) -> GatewayConfig:
    pools = _section("pools")
    _small_pool(pools)["timeouts"] = {"ttft": 2.0, "stall": 2.0, "total": 10.0, **timeouts}
    return make_config(pools=pools)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


async def _chat(client: openai.AsyncOpenAI, model: str = "sim-small", **options: Any) -> Any:
    return await client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=options.pop("max_tokens", 3), **options
    )


async def _collect(stream: Any, into: list[str]) -> None:
    """Append each streamed text delta to ``into`` until the stream ends (or raises)."""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            into.append(chunk.choices[0].delta.content)


# -- 1. errors eject the endpoint; traffic moves to the healthy one -------------------------------


async def test_failing_endpoint_is_ejected_and_traffic_moves(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    running.sim("a1").faults.update({"error_rate": 1.0})  # a1 answers 500 to everything
    concurrency = 4
    gate = asyncio.Semaphore(concurrency)

    async def one(client: openai.AsyncOpenAI) -> str | None:
        async with gate:
            reply = await _chat(client)
            content: str | None = reply.choices[0].message.content
            return content

    async with running.client() as client:
        answers = await asyncio.gather(*(one(client) for _ in range(40)))

    # Every request succeeded: a 500 before the first byte is retried on a2.
    assert all(answers)
    assert running.sim("a2").snapshot()["served"] == 40
    a1 = _endpoint(running, "small", "sim://a1")
    assert a1["ejected"] == 1.0 or a1["breaker"] == "open"
    # The pool config ejects after 5 consecutive failures (and the breaker opens after 5 calls
    # at 100% failures); requests already on their way may still arrive: one per other slot.
    a1_requests = _requests(running, "a1")
    assert 5 <= a1_requests <= 5 + concurrency - 1
    assert running.sim("a1").snapshot()["errors"] == a1_requests
    # The admin API tells the same story.
    status = await asyncio.to_thread(_get_json, running.admin_url + "/status")
    pool = next(p for p in status["pools"] if p["pool"] == "small")
    listed = {e["name"]: e for e in pool["endpoints"]}
    assert listed["sim://a1"]["available"] == 0.0
    assert listed["sim://a2"]["available"] == 1.0
    await _assert_settled(running)


# -- 2. a hung upstream is cut by the time-to-first-token timeout ---------------------------------

TTFT = 0.3


async def test_hung_endpoint_is_cut_by_ttft_and_retried(start_gateway: StartGateway) -> None:
    running = await start_gateway(_timeouts_config(ttft=TTFT, stall=TTFT))
    running.sim("a1").faults.update({"hang_rate": 1.0})

    async def timed(client: openai.AsyncOpenAI) -> float:
        start = time.perf_counter()
        await _chat(client)
        return time.perf_counter() - start

    async with running.client() as client:
        # Concurrent arrivals spread over both endpoints (least outstanding of two), so some
        # requests try a1 first.
        took = await asyncio.gather(*(timed(client) for _ in range(6)))
    assert _requests(running, "a1") >= 1
    assert running.sim("a2").snapshot()["served"] == 6
    # One TTFT timeout plus the answer from a2: far below the client's 10 s.
    assert max(took) < TTFT + 1.0
    await _assert_settled(running)


async def test_all_endpoints_hung_is_504_within_ttft_per_attempt(
    start_gateway: StartGateway,
) -> None:
    running = await start_gateway(_timeouts_config(ttft=TTFT, stall=TTFT))
    for name in ("a1", "a2"):
        running.sim(name).faults.update({"hang_rate": 1.0})
    attempts = 3  # retries.max_attempts default
    async with running.client() as client:
        start = time.perf_counter()
        with pytest.raises(openai.InternalServerError) as caught:
            await _chat(client)
        took = time.perf_counter() - start
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert caught.value.response.headers["x-headway-reason"] == "ttft_timeout"
    # Every attempt reached a sim (both endpoints, then one of them again: no untried is left)
    # and was cut at TTFT; backoffs add at most 0.25 s each. Not the client's 10 s.
    assert _requests(running, "a1") >= 1
    assert _requests(running, "a2") >= 1
    assert _requests(running, "a1", "a2") == attempts
    assert TTFT * attempts <= took < TTFT * attempts + 1.0
    await _assert_settled(running)


# -- 3. a stall mid-stream ends the stream with an error event ------------------------------------


async def test_stall_mid_stream_ends_with_error_event(start_gateway: StartGateway) -> None:
    running = await start_gateway(_timeouts_config(stall=TTFT))
    stall = {"stall_rate": 1.0, "stall_after_chunks": 3, "stall_seconds": 5.0}
    for name in ("a1", "a2"):
        running.sim(name).faults.update(stall)
    received: list[str] = []
    async with running.client() as client:
        start = time.perf_counter()
        stream = await _chat(client, stream=True, max_tokens=10)
        with pytest.raises(openai.APIError) as caught:
            await _collect(stream, received)
        took = time.perf_counter() - start
        # The first three tokens arrived before the stall; the stall was cut at the stall timeout.
        assert len(received) == 3
        assert not isinstance(caught.value, openai.APIStatusError)  # status 200 was sent already
        body = caught.value.body
        assert isinstance(body, dict)
        assert body["code"] == "upstream_timeout"
        assert took < TTFT + 1.0
        await _assert_settled(running)

        # The gateway keeps serving: clear the fault, the next stream is whole.
        for name in ("a1", "a2"):
            running.sim(name).faults.update({"stall_rate": 0.0})
        stream = await _chat(client, stream=True, max_tokens=5)
        text = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert len("".join(text).split()) == 5
    await _assert_settled(running)


# -- 4. over capacity the lowest priority is shed, critical traffic keeps its latency -------------


async def test_overload_sheds_sheddable_and_keeps_critical_fast(
    start_gateway: StartGateway,
) -> None:
    sims = _section("sims")
    for sim in sims:
        sim["ttft"] = 0.2  # a slow model: each request holds its admission slot ~0.2 s
    tenants = _section("tenants")
    tenants.append({"name": "batch", "keys": ["sk-batch"], "priority": "sheddable"})
    config = make_config(
        sims=sims,
        tenants=tenants,
        # CoDel's delay judgement is kept out of this test (target above every queueing delay
        # here): what is tested is the queue's rule that the lowest priority goes first.
        admission={
            "max_inflight": 4,
            "max_queue": 4,
            "queue_target_delay": 1.0,
            "queue_interval": 2.0,
        },
    )
    running = await start_gateway(config)

    async def timed(client: openai.AsyncOpenAI) -> float:
        start = time.perf_counter()
        await _chat(client, max_tokens=1)
        return time.perf_counter() - start

    async def sheddable(client: openai.AsyncOpenAI) -> openai.InternalServerError | None:
        try:
            await _chat(client, max_tokens=1)
        except openai.InternalServerError as error:
            return error
        return None

    async with running.client() as critical, running.client("sk-batch") as batch:
        unloaded = statistics.median([await timed(critical) for _ in range(3)])
        flood = [asyncio.create_task(sheddable(batch)) for _ in range(30)]
        await asyncio.sleep(0.05)  # the flood holds every slot and fills the queue
        latencies = await asyncio.gather(*(timed(critical) for _ in range(3)))
        outcomes = await asyncio.gather(*flood)

    shed = [error for error in outcomes if error is not None]
    # At most 4 in flight and 4 queued were ever admitted; the rest were refused at once.
    assert len(shed) >= 30 - 8
    for error in shed:
        assert error.status_code == 503
        assert int(error.response.headers["retry-after"]) >= 1
        assert error.response.headers["x-headway-reason"] == "queue_full"
    # Critical requests jumped the queue: at most one service time of waiting for a slot.
    assert statistics.median(latencies) < 3 * unloaded + unloaded
    assert max(latencies) < 3 * unloaded + unloaded + 0.5
    await _assert_settled(running)


# -- 5. fallback to another model -----------------------------------------------------------------


async def test_fallback_serves_from_the_next_model(start_gateway: StartGateway) -> None:
    models = _section("models")
    next(m for m in models if m["name"] == "sim-large")["fallbacks"] = ["sim-small"]
    running = await start_gateway(make_config(models=models))
    running.sim("b1").faults.update({"error_rate": 1.0, "error_status": 503})
    async with running.client() as client:
        for _ in range(3):
            reply = await _chat(client, model="sim-large")
            assert reply.model == "small"  # answered by the fallback's upstream model
        assert _requests(running, "b1") >= 3  # each request tried its own model first

        # The fallback fails too: an error answer at once, not a hang.
        for name in ("a1", "a2"):
            running.sim(name).faults.update({"error_rate": 1.0})
        start = time.perf_counter()
        with pytest.raises(openai.InternalServerError) as caught:
            await _chat(client, model="sim-large")
        took = time.perf_counter() - start
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-headway-reason"] == "upstream_error"
    assert took < 2.0
    await _assert_settled(running)


# -- 6. the retry budget bounds amplification -----------------------------------------------------


# The budget's tokens live 10 s (Finagle's ttl), so its floor is min_retries_per_second x 10
# retries. Cases: no floor; a floor of exactly one retry.
@pytest.mark.parametrize(("min_retries_per_second", "floor"), [(0, 0), (0.1, 1)])
async def test_retry_budget_bounds_upstream_attempts(
    start_gateway: StartGateway, min_retries_per_second: float, floor: int
) -> None:
    pools = _section("pools")
    small = _small_pool(pools)
    # Neither the breaker nor outlier ejection may step in: every attempt must reach a sim, so
    # the sims' counters measure the retry layer alone.
    small["breaker"] = {"minimum_calls": 100, "window": 100}
    small["outlier"] = {"consecutive_failures": 1000}
    models = _section("models")
    # 20% of requests may be retried: each request deposits 0.2 of a retry, a retry takes 1
    # whole one while deposits + floor - retries >= 1 (exact integer amounts, sequential
    # requests), so N requests make exactly floor(0.2 N + floor) retries.
    models[0]["retries"] = {
        "budget_percent": 20,
        "min_retries_per_second": min_retries_per_second,
    }
    running = await start_gateway(make_config(pools=pools, models=models))
    for name in ("a1", "a2"):
        running.sim(name).faults.update({"error_rate": 1.0})
    requests = 12
    async with running.client() as client:
        for _ in range(requests):
            with pytest.raises(openai.InternalServerError) as caught:
                await _chat(client)
            assert caught.value.status_code == 502
    attempts = _requests(running, "a1", "a2")
    # Without a budget it would be 3 attempts per request (36); here 14 and 15.
    assert attempts == requests + (requests * 20 + floor * 100) // 100
    await _assert_settled(running)
