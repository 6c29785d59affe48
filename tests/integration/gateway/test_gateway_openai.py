"""The official OpenAI client against a running gateway: the happy paths and each error class."""

from __future__ import annotations

import copy
from typing import Any

import openai
import pytest

from conftest import BASE_CONFIG, Running, make_config

MESSAGES = [{"role": "user", "content": "hello there"}]


async def test_chat_completion_is_relayed(gw: Running) -> None:
    async with gw.client() as client:
        reply = await client.chat.completions.create(
            model="sim-small", messages=MESSAGES, max_tokens=5
        )
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5


async def test_stream_arrives_in_chunks_with_usage(gw: Running) -> None:
    async with gw.client() as client:
        stream = await client.chat.completions.create(
            model="sim-large",
            messages=MESSAGES,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 8
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


async def test_completions_embeddings_and_models(gw: Running) -> None:
    async with gw.client() as client:
        completion = await client.completions.create(
            model="sim-small", prompt="once upon", max_tokens=3
        )
        assert completion.choices[0].text
        embedding = await client.embeddings.create(model="sim-small", input=["a", "b"])
        assert len(embedding.data) == 2
        models = await client.models.list()
    assert sorted(m.id for m in models.data) == ["sim-large", "sim-small"]


async def test_models_list_shows_only_what_the_tenant_may_use(gw: Running) -> None:
    async with gw.client("sk-free") as client:
        models = await client.models.list()
    assert [m.id for m in models.data] == ["sim-small"]


async def test_bad_key_is_401(gw: Running) -> None:
    async with gw.client("sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="sim-small", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"


async def test_unknown_model_is_404(gw: Running) -> None:
    async with gw.client() as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


async def test_model_not_allowed_is_403(gw: Running) -> None:
    async with gw.client("sk-free") as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="sim-large", messages=MESSAGES)


async def test_invalid_body_is_400_naming_the_param(gw: Running) -> None:
    async with gw.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="sim-small",
                messages=[{"content": "no role"}],  # type: ignore[list-item]
            )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "messages[0].role"


async def test_quota_is_429_with_retry_after_the_client_honours(gw: Running) -> None:
    async with gw.client("sk-free") as client:
        for _ in range(3):
            await client.chat.completions.create(model="sim-small", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="sim-small", messages=MESSAGES)
    headers = caught.value.response.headers
    # 3 requests per minute: the next one is admitted 20 s after the first.
    assert 1 <= int(headers["retry-after"]) <= 20
    assert headers["x-headway-reason"] == "tenant_rpm"


async def test_stream_without_usage_settles_tokens_from_the_events_relayed(
    start_gateway: Any,
) -> None:
    tenants = copy.deepcopy(BASE_CONFIG["tenants"])
    tenants[0]["tpm"] = 3000  # refills 50 tokens/s; the whole quota is the burst
    running: Running = await start_gateway(make_config(tenants=tenants))
    async with running.client() as client:
        stream = await client.chat.completions.create(
            model="sim-small", messages=MESSAGES, max_tokens=1000, stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert len(chunks) >= 1000
    assert running.gateway.runtime is not None
    tpm = running.gateway.runtime.tenant_guards._states["pro"].tpm
    assert tpm is not None
    # Charged ~1005 (prompt + one per event), not the 1002 estimated up front minus the default
    # completion size; the rest of the quota refilled for well under 3 s meanwhile.
    remaining = tpm.try_acquire().remaining
    assert 3000 - 1010 <= remaining <= 3000 - 1005 + 150
