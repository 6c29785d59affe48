"""Opt-in route features and what travels upstream, end to end on real sockets.

- Cache: deterministic requests (temperature 0 or a seed) and embeddings cost one upstream call;
  anything else, and every stream, goes upstream each time; a burst of identical requests is
  coalesced into one call; a fallback model's answer must not be stored as the primary's.
- Hedging: a slow endpoint's answer is raced by a copy sent to another endpoint after the
  hedge delay; streams are never hedged.
- Backpressure: a client that stops reading a long stream stops the upstream's generator (the
  gateway does not buffer the stream), and still gets all of it once it reads again.
- Headers: the endpoint's own API key goes upstream, the client's key never does; trace
  context is forwarded, other client headers are not.

Upstream calls are counted where they land (the sims' request counters, or a tiny recording
upstream), so a feature that silently stops working fails a test. Timing bounds are generous:
they only tell "the hedge won" (~0.1 s) from "waited for the slow endpoint" (>= 1 s).
"""

from __future__ import annotations

import asyncio
import copy
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from conftest import BASE_CONFIG, Running, make_config
from headway.config import GatewayConfig
from headway.core import RecordingHooks
from headway.gateway._app import Gateway
from headway.http import HttpServer, Request, Response, StreamingResponse

StartGateway = Callable[..., Awaitable[Running]]

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def _section(name: str) -> Any:
    return copy.deepcopy(BASE_CONFIG[name])


def _requests(running: Running, *sims: str) -> int:
    """Requests that reached these sims (counted on arrival, so cancelled ones count too)."""
    return sum(int(running.sim(name).snapshot()["requests"]) for name in sims)


def _route(running: Running, model: str) -> Any:
    runtime = running.gateway.runtime
    assert runtime is not None
    return runtime.routes[model]


class Reply:
    """A raw HTTP answer: status and exact body bytes (to compare answers byte for byte)."""

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    def json(self) -> Any:
        return orjson.loads(self.content)


async def _post(
    running: Running, body: dict[str, Any], *, path: str = "/chat/completions", key: str = "sk-pro"
) -> Reply:
    """POST over a fresh connection (``connection: close``), read to EOF."""
    data = orjson.dumps(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.gateway.api_port)
    try:
        writer.write(
            b"POST /v1%s HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (path.encode(), key.encode(), len(data), data)
        )
        raw = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    head, _, content = raw.partition(b"\r\n\r\n")
    assert b"content-length: %d" % len(content) in head.lower(), head
    return Reply(int(head.split(b" ", 2)[1]), content)


# -- cache ---------------------------------------------------------------------------------------


def _cached_config(*, sims: list[dict[str, Any]] | None = None) -> GatewayConfig:
    models = _section("models")
    models[0]["cache"] = {"enabled": True, "ttl": 60}
    assert models[0]["name"] == "sim-small"
    return make_config(models=models, sims=sims or _section("sims"))


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "sim-small", "messages": MESSAGES, "max_tokens": 4, **fields}


@pytest.mark.parametrize("pinned", [{"temperature": 0}, {"seed": 7}], ids=["temp0", "seed"])
async def test_identical_deterministic_requests_cost_one_upstream_call(
    start_gateway: StartGateway, pinned: dict[str, Any]
) -> None:
    running = await start_gateway(_cached_config())
    first = await _post(running, _chat(**pinned))
    second = await _post(running, _chat(**pinned))
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert _requests(running, "a1", "a2") == 1
    snapshot = _route(running, "sim-small").cache.snapshot()
    assert (snapshot["misses"], snapshot["hits"], snapshot["entries"]) == (1, 1, 1)
    # A different deterministic body is a different entry.
    third = await _post(running, _chat(**pinned, max_tokens=5))
    assert third.status_code == 200
    assert third.content != first.content
    assert _requests(running, "a1", "a2") == 2


@pytest.mark.parametrize(
    "fields", [{"temperature": 0.7}, {}], ids=["temp0.7", "default-temperature"]
)
async def test_non_deterministic_requests_are_not_cached(
    start_gateway: StartGateway, fields: dict[str, Any]
) -> None:
    running = await start_gateway(_cached_config())
    for _ in range(2):
        assert (await _post(running, _chat(**fields))).status_code == 200
    assert _requests(running, "a1", "a2") == 2
    snapshot = _route(running, "sim-small").cache.snapshot()
    assert (snapshot["bypassed"], snapshot["entries"]) == (2, 0)


async def test_embeddings_are_cached(start_gateway: StartGateway) -> None:
    running = await start_gateway(_cached_config())
    body = {"model": "sim-small", "input": ["a", "b"]}
    first = await _post(running, body, path="/embeddings")
    second = await _post(running, body, path="/embeddings")
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert len(second.json()["data"]) == 2
    assert _requests(running, "a1", "a2") == 1


async def test_streamed_requests_are_never_cached(start_gateway: StartGateway) -> None:
    running = await start_gateway(_cached_config())
    async with running.client() as client:
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="sim-small", messages=MESSAGES, max_tokens=4, temperature=0, stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert chunks
    assert _requests(running, "a1", "a2") == 2
    snapshot = _route(running, "sim-small").cache.snapshot()
    assert (snapshot["bypassed"], snapshot["entries"], snapshot["hits"]) == (2, 0, 0)


async def test_a_burst_of_identical_requests_is_coalesced_into_one_call(
    start_gateway: StartGateway,
) -> None:
    # A slow first token keeps the one upstream call in flight while the whole burst arrives,
    # so the burst is served by coalescing (not by later cache hits).
    sims = _section("sims")
    for sim in sims:
        sim["ttft"] = 0.5
    running = await start_gateway(_cached_config(sims=sims))
    replies = await asyncio.gather(*(_post(running, _chat(temperature=0)) for _ in range(20)))
    assert [r.status_code for r in replies] == [200] * 20
    assert len({r.content for r in replies}) == 1
    assert _requests(running, "a1", "a2") == 1
    snapshot = _route(running, "sim-small").cache.snapshot()
    assert snapshot["loads"] == 1
    assert snapshot["misses"] + snapshot["hits"] == 20


async def test_cache_is_per_tenant_and_keyed_by_the_user_field(
    start_gateway: StartGateway,
) -> None:
    """The key is (tenant, endpoint, model, exact body): two tenants sending the same
    deterministic body never share an answer (no prompt-cache timing side channel across
    tenants); the OpenAI ``user`` field is part of the body, so different users do not either."""
    running = await start_gateway(_cached_config())
    pro = await _post(running, _chat(temperature=0), key="sk-pro")
    free = await _post(running, _chat(temperature=0), key="sk-free")
    assert pro.status_code == free.status_code == 200
    assert _requests(running, "a1", "a2") == 2  # one upstream call per tenant
    again = await _post(running, _chat(temperature=0), key="sk-free")
    assert again.content == free.content
    assert _requests(running, "a1", "a2") == 2
    alice = await _post(running, _chat(temperature=0, user="alice"))
    bob = await _post(running, _chat(temperature=0, user="bob"))
    assert alice.status_code == bob.status_code == 200
    assert _requests(running, "a1", "a2") == 4


async def test_a_fallback_answer_is_not_cached_as_the_primary_models(
    start_gateway: StartGateway,
) -> None:
    sims = _section("sims")
    sims[2]["faults"] = {"error_rate": 1.0}
    assert sims[2]["name"] == "b1"
    models = _section("models")
    models[1]["fallbacks"] = ["sim-small"]
    models[1]["cache"] = {"enabled": True, "ttl": 60}
    assert models[1]["name"] == "sim-large"
    running = await start_gateway(make_config(sims=sims, models=models))
    body = {"model": "sim-large", "messages": MESSAGES, "max_tokens": 4, "temperature": 0}
    degraded = await _post(running, body)
    assert degraded.status_code == 200
    assert degraded.json()["model"] == "small"  # served by the fallback's upstream
    running.sim("b1").faults.update({"error_rate": 0.0})  # the primary recovers
    recovered = await _post(running, body)
    assert recovered.status_code == 200
    assert recovered.json()["model"] == "large"
    assert running.sim("b1").snapshot()["served"] == 1


# -- hedging ---------------------------------------------------------------------------------


@pytest.fixture
async def start_with_hooks() -> AsyncIterator[Callable[[GatewayConfig], Awaitable[Running]]]:
    """Like ``start_gateway``, with a RecordingHooks the test reads as ``running.hooks``."""
    started: list[Gateway] = []

    async def start(config: GatewayConfig) -> Running:
        gateway = Gateway(config, hooks=RecordingHooks())
        await gateway.start(api_port=0, admin_port=0)
        started.append(gateway)
        return Running(gateway)

    yield start
    for gateway in started:
        await gateway.stop(1.0)


def _hedge_config() -> GatewayConfig:
    """sim-small hedged after 0.1 s; a1 always 1 s slow; affinity on ``user`` so the test
    decides deterministically which endpoint a request tries first."""
    sims = _section("sims")
    sims[0]["faults"] = {"spike_rate": 1.0, "spike_seconds": 1.0}
    assert sims[0]["name"] == "a1"
    pools = _section("pools")
    pools[0]["balancer"] = "prefix"
    pools[0]["affinity"] = {"key": "user"}
    models = _section("models")
    models[0]["hedge"] = {"delay": 0.1}
    return make_config(sims=sims, pools=pools, models=models)


def _user_routed_to(running: Running, endpoint: str) -> str:
    """A ``user`` value the prefix balancer sends to ``endpoint`` first (nothing in flight)."""
    runtime = running.gateway.runtime
    assert runtime is not None
    balancer = runtime.pools["small"].balancer
    for i in range(1000):
        user = f"user-{i}"
        slot = balancer.pick(user)
        if slot is not None and slot.name == endpoint:
            return user
    raise AssertionError(f"no user routed to {endpoint}")


def _hedge_events(running: Running) -> tuple[int, int]:
    hooks = running.gateway._hooks
    assert isinstance(hooks, RecordingHooks)
    counts = hooks.counts
    return counts[("hedge", "sim-small", "hedge.sent")], counts[("hedge", "sim-small", "hedge.won")]


async def _settled_sim(running: Running, name: str) -> None:
    """Wait (briefly) until the sim holds no request: a cancelled loser is released upstream."""
    for _ in range(100):
        if running.sim(name).snapshot()["active"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} still busy after 1 s: {running.sim(name).snapshot()}")


async def test_hedge_to_the_fast_endpoint_wins_over_a_latency_spike(
    start_with_hooks: Callable[[GatewayConfig], Awaitable[Running]],
) -> None:
    running = await start_with_hooks(_hedge_config())
    user = _user_routed_to(running, "sim://a1")
    async with running.client() as client:
        for n in (1, 2):
            started = time.perf_counter()
            reply = await client.chat.completions.create(
                model="sim-small", messages=MESSAGES, max_tokens=4, user=user
            )
            elapsed = time.perf_counter() - started
            assert reply.choices[0].message.content
            # The hedge leaves at 0.1 s and a2 answers in ~15 ms; a1 alone takes >= 1 s.
            assert elapsed < 0.7, elapsed
            assert _hedge_events(running) == (n, n)
            assert _requests(running, "a1") == n
            assert _requests(running, "a2") == n
            # The losing attempt on a1 was cancelled, and a1 released it.
            await _settled_sim(running, "a1")
    assert running.sim("a1").snapshot()["served"] == 0


async def test_no_hedge_when_the_first_endpoint_is_fast(
    start_with_hooks: Callable[[GatewayConfig], Awaitable[Running]],
) -> None:
    running = await start_with_hooks(_hedge_config())
    user = _user_routed_to(running, "sim://a2")
    async with running.client() as client:
        await client.chat.completions.create(
            model="sim-small", messages=MESSAGES, max_tokens=4, user=user
        )
    assert _hedge_events(running) == (0, 0)
    assert (_requests(running, "a1"), _requests(running, "a2")) == (0, 1)


async def test_streamed_requests_are_not_hedged(
    start_with_hooks: Callable[[GatewayConfig], Awaitable[Running]],
) -> None:
    running = await start_with_hooks(_hedge_config())
    user = _user_routed_to(running, "sim://a1")
    async with running.client() as client:
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model="sim-small", messages=MESSAGES, max_tokens=4, user=user, stream=True
        )
        chunks = [chunk async for chunk in stream]
        elapsed = time.perf_counter() - started
    assert chunks
    assert elapsed >= 1.0  # waited out a1's spike: nobody raced it
    assert _hedge_events(running) == (0, 0)
    assert (_requests(running, "a1"), _requests(running, "a2")) == (1, 0)


# -- a recording upstream --------------------------------------------------------------------


class RecordingUpstream:
    """A tiny OpenAI-ish upstream on ``headway.http``: records each request's headers; streams
    ``stream_chunks`` SSE events of ``chunk_bytes`` each for a streamed request, counting the
    events its generator has produced (``produced``) to observe backpressure."""

    def __init__(self, *, stream_chunks: int = 3, chunk_bytes: int = 64) -> None:
        self.seen: list[dict[bytes, bytes]] = []
        self.stream_chunks = stream_chunks
        self.chunk_bytes = chunk_bytes
        self.produced = 0
        self.finished = False
        self.server = HttpServer(self.handle, name="recording-upstream")
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self.port = await self.server.start("127.0.0.1", 0)

    async def handle(self, request: Request) -> Response | StreamingResponse:
        self.seen.append(dict(request.headers))
        body = orjson.loads(request.body)
        if body.get("stream"):
            return StreamingResponse(self._events(body["model"]))
        answer = {
            "id": "chatcmpl-rec",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
        return Response(200, orjson.dumps(answer))

    def event(self, model: str, i: int) -> bytes:
        text = f"{i:08d}".ljust(self.chunk_bytes, "x")
        chunk = {
            "id": "chatcmpl-rec",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def _events(self, model: str) -> AsyncIterator[bytes]:
        for i in range(self.stream_chunks):
            self.produced += 1
            yield self.event(model, i)
        self.finished = True
        yield b"data: [DONE]\n\n"


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.server.stop(0.5)


def _external_config(
    upstream: RecordingUpstream,
    *,
    api_key: str | None = None,
    timeouts: dict[str, float] | None = None,
) -> GatewayConfig:
    """The base config plus model ``ext`` on a pool whose one endpoint is ``upstream``."""
    endpoint: dict[str, Any] = {"url": upstream.base_url}
    if api_key is not None:
        endpoint["api_key"] = api_key
    pool: dict[str, Any] = {"name": "ext", "endpoints": [endpoint]}
    if timeouts is not None:
        pool["timeouts"] = timeouts
    pools = [*_section("pools"), pool]
    models = [*_section("models"), {"name": "ext", "pool": "ext", "upstream_model": "up-model"}]
    return make_config(pools=pools, models=models)


# -- backpressure ----------------------------------------------------------------------------


def _dechunk(data: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 message (``data`` starts at the body)."""
    out = bytearray()
    pos = 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            return bytes(out)
        out += data[pos : pos + size]
        pos += size + 2


async def test_a_client_that_stops_reading_stops_the_upstream(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    # 20000 events of 3 KiB, ~60 MiB: several times what every buffer between the two ends can
    # hold together (measured: ~9 MiB, nearly all of it in loopback kernel socket buffers, which
    # Linux autotunes up to tcp_wmem/tcp_rmem max = 4 + 6 MiB per hop).
    upstream.stream_chunks = 20_000
    upstream.chunk_bytes = 3 * 1024
    total = upstream.stream_chunks
    # A stall timeout well under the pause: a slow *client* must not count as a stalled upstream.
    timeouts = {"ttft": 2.0, "stall": 0.3, "total": 30.0}
    running = await start_gateway(_external_config(upstream, timeouts=timeouts))
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive buffer (set before connect, so no window autotuning) keeps the client's
    # own kernel buffer from absorbing the stream.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", running.gateway.api_port))
        body = orjson.dumps({"model": "ext", "messages": MESSAGES, "stream": True})
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-pro\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        await loop.sock_sendall(sock, head + body)
        # Read nothing: every buffer in between fills up, then the producer must block. Wait
        # until its count holds still for 0.3 s (it fills in ~0.1 s; an unbounded relay would
        # instead run the generator to its end).
        give_up = loop.time() + 5.0
        stable_since, last = loop.time(), -1
        while loop.time() - stable_since < 0.3:
            assert loop.time() < give_up, f"the producer never stopped: {upstream.produced}"
            await asyncio.sleep(0.05)
            if upstream.produced != last:
                stable_since, last = loop.time(), upstream.produced
        assert 0 < last < total * 4 // 10, last
        # Still blocked, well past the pool's 0.3 s stall timeout.
        await asyncio.sleep(0.5)
        assert upstream.produced == last
        received = bytearray()
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10.0)
            if not data:
                break
            received += data
    finally:
        sock.close()
    head_end = received.index(b"\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in bytes(received[:head_end]).lower()
    stream = _dechunk(bytes(received[head_end + 4 :]))
    events = stream.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    assert len(events) - 2 == total
    # Relayed unchanged and in order.
    assert events[0] + b"\n\n" == upstream.event("up-model", 0)
    assert events[total - 1] + b"\n\n" == upstream.event("up-model", total - 1)
    assert upstream.finished
    assert upstream.produced == total


# -- what travels upstream -------------------------------------------------------------------

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_endpoint_key_goes_upstream_never_the_clients(
    start_gateway: StartGateway,
    upstream: RecordingUpstream,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "up-secret-123")
    running = await start_gateway(_external_config(upstream, api_key="${TEST_UPSTREAM_KEY}"))
    async with running.client() as client:
        extra = {
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=abc",
            "x-custom-secret": "do-not-leak",
            "cookie": "session=abc",
            "openai-organization": "org-the-gateway-pays-for",
            "openai-project": "proj-x",
        }
        if stream:
            events = await client.chat.completions.create(
                model="ext", messages=MESSAGES, stream=True, extra_headers=extra
            )
            assert [chunk async for chunk in events]
        else:
            reply = await client.chat.completions.create(
                model="ext", messages=MESSAGES, extra_headers=extra
            )
            assert reply.choices[0].message.content == "ok"
    [headers] = upstream.seen
    # Exactly the endpoint's key: not the client's, and not both joined.
    assert headers[b"authorization"] == b"Bearer up-secret-123"
    assert headers[b"traceparent"] == TRACEPARENT.encode()
    assert headers[b"tracestate"] == b"vendor=abc"
    assert b"x-custom-secret" not in headers
    assert b"cookie" not in headers
    # A tenant must not pick which of the gateway's upstream organizations gets billed.
    assert b"openai-organization" not in headers
    assert b"openai-project" not in headers
    assert not [name for name in headers if name.startswith(b"x-stainless")]
    assert not [name for name, value in headers.items() if b"sk-pro" in value]


async def test_no_endpoint_key_means_no_authorization_upstream(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    running = await start_gateway(_external_config(upstream))
    async with running.client() as client:
        await client.chat.completions.create(
            model="ext", messages=MESSAGES, extra_headers={"x-custom-secret": "do-not-leak"}
        )
    [headers] = upstream.seen
    assert b"authorization" not in headers
    assert b"traceparent" not in headers
    assert b"x-custom-secret" not in headers
    assert not [name for name, value in headers.items() if b"sk-pro" in value]
