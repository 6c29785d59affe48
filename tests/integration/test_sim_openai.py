"""The simulator through the official ``openai`` client, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from openai import AsyncOpenAI

from headway.sim import FaultConfig, SimConfig, SimServer

FAST = SimConfig(
    ttft_base=0.001,
    ttft_per_prompt_token=0.0,
    tokens_per_second=20_000.0,
    default_output_tokens=5,
    embedding_dims=16,
)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    server = SimServer(FAST)
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=sim.base_url, api_key="sk-test", max_retries=0, timeout=5.0
    ) as c:
        yield c


EXPECTED_5 = "the quick brown fox jumps"


class Http:
    """A one-request-per-connection raw HTTP client (no dependency beyond asyncio)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
        head = f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        writer.write(head.encode() + b"content-length: %d\r\n\r\n" % len(data) + data)
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head_bytes, _, payload = raw.partition(b"\r\n\r\n")
        return int(head_bytes.split()[1]), orjson.loads(payload)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def post(self, path: str, body: object) -> tuple[int, Any]:
        return await self.request("POST", path, body)

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self.request("DELETE", path)


async def test_chat_non_stream(client: AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "x" * 40}]
    )
    assert result.object == "chat.completion"
    assert result.model == "sim-small"
    assert result.choices[0].message.content == EXPECTED_5
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (10, 5)
    assert result.usage.total_tokens == 15


async def test_chat_max_tokens_finishes_with_length(client: AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert result.choices[0].message.content == "the quick brown"
    assert result.choices[0].finish_reason == "length"


async def test_chat_stream_reassembles_with_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sim-large",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_5
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_without_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


async def test_legacy_completions(client: AsyncOpenAI) -> None:
    result = await client.completions.create(model="m", prompt="abcdefgh", max_tokens=2)
    assert result.choices[0].text == "the quick"
    assert result.usage is not None
    assert result.usage.prompt_tokens == 2
    stream = await client.completions.create(model="m", prompt="abc", stream=True)
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == EXPECTED_5


async def test_embeddings_are_deterministic_unit_vectors(client: AsyncOpenAI) -> None:
    # The client asks for base64 by default; the float form is checked too.
    first = await client.embeddings.create(model="e", input=["alpha", "beta"])
    again = await client.embeddings.create(model="e", input="alpha", encoding_format="float")
    assert [d.index for d in first.data] == [0, 1]
    a, b = first.data[0].embedding, first.data[1].embedding
    assert len(a) == 16
    assert a != b
    assert again.data[0].embedding == pytest.approx(a, abs=1e-6)
    assert sum(v * v for v in a) == pytest.approx(1.0, abs=1e-5)
    sized = await client.embeddings.create(model="e", input="alpha", dimensions=8)
    assert len(sized.data[0].embedding) == 8


async def test_models_list(client: AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == ["sim-small", "sim-large"]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_injected_error_status(sim: SimServer, client: AsyncOpenAI, status: int) -> None:
    sim.faults.update({"error_rate": 1.0, "error_status": status, "error_retry_after": 2})
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert info.value.response.headers.get("retry-after") == "2"
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "sim_injected_fault"


async def test_injected_reset_is_a_connection_error(sim: SimServer, client: AsyncOpenAI) -> None:
    sim.faults.update({"reset_rate": 1.0})
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    sim.faults.reset()
    ok = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert ok.choices[0].message.content == EXPECTED_5


async def test_hang_times_out_and_frees_the_server(sim: SimServer) -> None:
    sim.faults.update({"hang_rate": 1.0})
    async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0, timeout=0.2) as short:
        with pytest.raises(openai.APITimeoutError):
            await short.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    for _ in range(500):  # the client's close cancels the hanging handler
        if sim.snapshot()["connections"] == 0:
            break
        await asyncio.sleep(0.01)
    assert sim.snapshot()["connections"] == 0


async def test_malformed_chunk_breaks_the_client_parse(sim: SimServer, client: AsyncOpenAI) -> None:
    sim.faults.update({"malformed_rate": 1.0, "malformed_after_chunks": 2})
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SSE decoder
        async for _ in stream:
            pass


async def test_stall_mid_stream_delays_later_chunks(sim: SimServer, client: AsyncOpenAI) -> None:
    sim.faults.update({"stall_rate": 1.0, "stall_after_chunks": 2, "stall_seconds": 0.3})
    loop = asyncio.get_running_loop()
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    arrivals = [(loop.time(), c.choices[0].delta.content) async for c in stream if c.choices]
    contents = [c for _, c in arrivals]
    assert "".join(c or "" for c in contents) == EXPECTED_5
    # chunk 0 is the role chunk; token 2 is the one held back by the stall
    gap = arrivals[3][0] - arrivals[2][0]
    assert gap >= 0.25


async def test_admin_endpoint_flips_faults(sim: SimServer) -> None:
    http = Http(sim.port)
    status, current = await http.get("/sim/faults")
    assert (status, current["error_rate"]) == (200, 0.0)
    status, changed = await http.post("/sim/faults", {"error_rate": 1.0, "error_status": 503})
    assert (status, changed["error_status"]) == (200, 503)
    status, failed = await http.post("/v1/chat/completions", {"model": "m", "messages": [{}]})
    assert status == 503
    assert set(failed["error"]) == {"message", "type", "code", "param"}
    status, _ = await http.post("/sim/faults", {"error_rate": 2})
    assert status == 400
    status, unknown = await http.post("/sim/faults", {"nope": 1})
    assert status == 400
    assert "nope" in unknown["error"]["message"]
    status, reset = await http.delete("/sim/faults")
    assert reset["error_rate"] == 0.0
    status, _ = await http.post("/v1/chat/completions", {"model": "m", "messages": [{}]})
    assert status == 200
    status, stats = await http.get("/sim/stats")
    assert stats["faults_injected"] == 1


async def test_errors_use_openai_envelope(sim: SimServer) -> None:
    http = Http(sim.port)
    status, bad_json = await http.post("/v1/chat/completions", b"{nope")
    assert status == 400
    assert bad_json["error"]["type"] == "invalid_request_error"
    status, _ = await http.get("/v1/nothing")
    assert status == 404
    status, _ = await http.get("/v1/chat/completions")
    assert status == 405


async def test_capacity_queues_requests_in_order() -> None:
    config = SimConfig(ttft_base=0.05, ttft_per_prompt_token=0.0, tokens_per_second=0.0, capacity=1)
    server = SimServer(config)
    await server.start()
    try:
        async with AsyncOpenAI(
            base_url=server.base_url, api_key="k", max_retries=0, timeout=5.0
        ) as c:
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def one() -> float:
                await c.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}]
                )
                return loop.time() - start

            times = sorted(await asyncio.gather(one(), one(), one()))
        # capacity 1: the third waits for two others (>= 3 x 50 ms in all)
        assert times[2] >= 0.14
        assert server.snapshot()["served"] == 3
    finally:
        await server.stop()


async def test_fault_config_in_constructor_applies() -> None:
    server = SimServer(SimConfig(faults=FaultConfig(error_rate=1.0, error_status=502)))
    await server.start()
    try:
        async with AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
            with pytest.raises(openai.InternalServerError) as info:
                await c.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}]
                )
            assert info.value.status_code == 502
    finally:
        await server.stop()
