"""Canary traffic splits through the real gateway: weights, stickiness, ramping, overrides, the
live weight, the fallback to stable, and the per-side windows the analysis reads."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from conftest import BASE_CONFIG, Running, make_config
from headway.rollout import bucket

MESSAGES = [{"role": "user", "content": "hi"}]
MODEL = "sim-small"


def split_config(
    weight: float = 0.0,
    *,
    sticky: str = "user",
    canary: dict[str, Any] | None = None,
    retries: dict[str, Any] | None = None,
    canary_pool: dict[str, Any] | None = None,
) -> Any:
    sims = [
        *BASE_CONFIG["sims"],
        {"name": "c1", "models": ["small"], "ttft": 0.01, "tokens_per_second": 2000, "seed": 9},
    ]
    pools = [
        *BASE_CONFIG["pools"],
        {
            "name": "canary",
            "endpoints": [{"url": "sim://c1"}],
            "timeouts": {"ttft": 2.0},
            **(canary_pool or {}),
        },
    ]
    small: dict[str, Any] = {
        "name": MODEL,
        "pool": "small",
        "upstream_model": "small",
        "canary": {"pool": "canary", "weight": weight, "sticky": sticky, **(canary or {})},
    }
    if retries is not None:
        small["retries"] = retries
    models = [small, BASE_CONFIG["models"][1]]
    return make_config(sims=sims, pools=pools, models=models)


async def ask(
    client: openai.AsyncOpenAI,
    user: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """The side that answered (``x-headway-variant``)."""
    extra: dict[str, Any] = {"user": user} if user is not None else {}
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=1, extra_headers=headers, **extra
    )
    raw.parse()
    variant = raw.headers.get("x-headway-variant")
    assert variant in ("stable", "canary")
    return str(variant)


async def sides(client: openai.AsyncOpenAI, users: list[str]) -> dict[str, str]:
    """user -> side, 20 requests at a time."""
    out: dict[str, str] = {}
    for start in range(0, len(users), 20):
        batch = users[start : start + 20]
        for user, side in zip(
            batch, await asyncio.gather(*(ask(client, u) for u in batch)), strict=True
        ):
            out[user] = side
    return out


def served(gw: Running, *sims: str) -> int:
    return sum(gw.sim(name).app.served for name in sims)


def expected_canary(users: list[str], percent: float) -> set[str]:
    return {u for u in users if bucket(MODEL, f"user:{u}") < percent * 100}


async def test_weight_zero_sends_nothing_and_a_live_weight_of_100_everything(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(split_config(0))
    client = gw.client()
    users = [f"user-{i}" for i in range(40)]
    assert set((await sides(client, users)).values()) == {"stable"}
    assert served(gw, "c1") == 0
    runtime = gw.gateway.runtime
    assert runtime is not None
    split = runtime.splits[MODEL]
    before = served(gw, "a1", "a2")
    split.set_weight(100)  # no reload: the same runtime serves the next request
    assert set((await sides(client, users)).values()) == {"canary"}
    assert gw.gateway.runtime is runtime
    assert served(gw, "a1", "a2") == before
    assert served(gw, "c1") == 40
    window = split.window()
    assert (window.stable.requests, window.canary.requests) == (40, 40)
    assert (window.stable.errors, window.canary.errors) == (0, 0)
    assert len(window.canary.latencies) == 40
    assert len(window.canary.ttfts) == 40
    assert window.weight == 100


async def test_thirty_percent_is_sticky_and_ramping_up_keeps_canary_users(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(split_config(30))
    client = gw.client()
    users = [f"u{i}" for i in range(400)]
    first = await sides(client, users)
    on_canary = {u for u, side in first.items() if side == "canary"}
    assert 0.23 <= len(on_canary) / len(users) <= 0.37
    assert on_canary == expected_canary(users, 30)
    # The same users again: every one on the side it had.
    again = await sides(client, users[:100])
    assert all(again[u] == first[u] for u in again)
    # Ramping up moves users from stable to canary only.
    runtime = gw.gateway.runtime
    assert runtime is not None
    runtime.splits[MODEL].set_weight(60)
    ramped = await sides(client, users)
    now_canary = {u for u, side in ramped.items() if side == "canary"}
    assert on_canary <= now_canary
    assert 0.53 <= len(now_canary) / len(users) <= 0.67
    assert now_canary == expected_canary(users, 60)


async def test_tenant_stickiness_without_a_user(start_gateway: Callable[..., Any]) -> None:
    tenant_side = "canary" if bucket(MODEL, "tenant:pro") < 5000 else "stable"
    gw: Running = await start_gateway(split_config(50, sticky="tenant"))
    client = gw.client()
    answers = await asyncio.gather(*(ask(client, f"someone-{i}") for i in range(30)))
    assert set(answers) == {tenant_side}


async def test_override_header(start_gateway: Callable[..., Any]) -> None:
    gw: Running = await start_gateway(split_config(0))
    client = gw.client()
    assert await ask(client, "u1", {"x-headway-canary": "always"}) == "canary"
    assert await ask(client, "u1") == "stable"
    runtime = gw.gateway.runtime
    assert runtime is not None
    runtime.splits[MODEL].set_weight(100)
    assert await ask(client, "u1", {"x-headway-canary": "never"}) == "stable"
    assert await ask(client, "u1") == "canary"
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(client, "u1", {"x-headway-canary": "sometimes"})
    assert caught.value.code == "invalid_canary_override"
    assert "expected 'always' or 'never'" in caught.value.message


async def test_a_failing_canary_is_served_on_stable_and_counted_against_the_canary(
    start_gateway: Callable[..., Any],
) -> None:
    # The canary's breaker and outlier detection stay out of it: every request tries it.
    never_trips = {
        "breaker": {"minimum_calls": 1000, "window": 1000},
        "outlier": {"consecutive_failures": 1000},
    }
    gw: Running = await start_gateway(split_config(100, canary_pool=never_trips))
    gw.sim("c1").faults.update({"error_rate": 1.0})
    client = gw.client()
    answers = await asyncio.gather(*(ask(client, f"u{i}") for i in range(20)))
    # Every request was the canary's, failed there, and reached the client from stable.
    assert answers == ["stable"] * 20
    runtime = gw.gateway.runtime
    assert runtime is not None
    split = runtime.splits[MODEL]
    window = split.window()
    assert (window.canary.requests, window.canary.errors) == (20, 20)
    assert window.stable.requests == 0
    assert split.snapshot()["fallbacks"] == 20


async def test_a_canary_behind_an_open_breaker_is_skipped_at_once(
    start_gateway: Callable[..., Any],
) -> None:
    trips = {"breaker": {"minimum_calls": 5, "window": 10, "open_seconds": 30}}
    gw: Running = await start_gateway(split_config(100, canary_pool=trips))
    gw.sim("c1").faults.update({"error_rate": 1.0})
    client = gw.client()
    for i in range(10):  # open the canary's breaker (each one served on stable)
        assert await ask(client, f"u{i}") == "stable"
    runtime = gw.gateway.runtime
    assert runtime is not None
    assert runtime.pools["canary"].balancer.healthy_count == 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = await asyncio.gather(*(ask(client, f"v{i}") for i in range(10)))
    # Not one waits out the breaker's 30 s.
    assert loop.time() - started < 5.0
    assert answers == ["stable"] * 10
    assert runtime.splits[MODEL].snapshot()["canary_unavailable"] >= 10


async def test_without_fallback_the_client_sees_the_canary_error(
    start_gateway: Callable[..., Any],
) -> None:
    config = split_config(100, canary={"fallback_to_stable": False}, retries={"max_attempts": 1})
    gw: Running = await start_gateway(config)
    gw.sim("c1").faults.update({"error_rate": 1.0})
    with pytest.raises(openai.InternalServerError):
        await ask(gw.client(), "u1")
    runtime = gw.gateway.runtime
    assert runtime is not None
    assert runtime.splits[MODEL].window().canary.errors == 1


async def test_streams_carry_the_variant_and_are_timed_to_their_end(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(split_config(100))
    client = gw.client()
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=20, stream=True, user="u1"
    )
    assert raw.headers.get("x-headway-variant") == "canary"
    text = ""
    async for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text
    runtime = gw.gateway.runtime
    assert runtime is not None
    window = runtime.splits[MODEL].window()
    assert window.canary.requests == 1
    assert window.canary.errors == 0
    assert len(window.canary.ttfts) == 1
    assert len(window.canary.latencies) == 1
    assert window.canary.ttfts[0] <= window.canary.latencies[0]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


async def test_a_reload_keeps_the_live_weight_unless_the_canary_section_changed(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(split_config(5))
    runtime = gw.gateway.runtime
    assert runtime is not None
    runtime.splits[MODEL].set_weight(70)
    await gw.gateway.reload(split_config(5))
    reloaded = gw.gateway.runtime
    assert reloaded is not None
    assert reloaded is not runtime
    assert reloaded.splits[MODEL].weight == 70
    await gw.gateway.reload(split_config(10))
    assert gw.gateway.runtime is not None
    assert gw.gateway.runtime.splits[MODEL].weight == 10
    splits = await asyncio.to_thread(_get_json, gw.admin_url + "/api/splits")
    assert splits["models"][MODEL]["weight"] == 10
    assert splits["models"][MODEL]["canary_pool"] == "canary"
