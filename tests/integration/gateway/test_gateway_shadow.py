"""Shadow traffic through the real gateway: mirrors never touch the client's answer, the caps
hold, diff rates tell an identical candidate from a different one, and the noise floor."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import openai

from conftest import BASE_CONFIG, Running, make_config
from headway.gateway._app import Gateway
from headway.gateway._shadow import ShadowMirror

MESSAGES = [{"role": "user", "content": "hi"}]
MODEL = "sim-small"
FAST = {"ttft": 0.01, "tokens_per_second": 2000}


def shadow_config(
    shadow: dict[str, Any] | None = None,
    *,
    candidate: dict[str, Any] | None = None,
    noise: dict[str, Any] | None = None,
) -> Any:
    sims = [
        *BASE_CONFIG["sims"],
        {"name": "c1", "models": ["small"], "seed": 11, **FAST, **(candidate or {})},
        {"name": "n1", "models": ["small"], "seed": 12, **FAST, **(noise or {})},
    ]
    pools = [
        *BASE_CONFIG["pools"],
        {"name": "candidate", "endpoints": [{"url": "sim://c1"}], "timeouts": {"ttft": 5.0}},
        {"name": "noise", "endpoints": [{"url": "sim://n1"}]},
    ]
    settings = {
        "pool": "candidate",
        "noise_pool": "noise",
        "max_per_minute": 6000,
        **(shadow or {}),
    }
    small = {"name": MODEL, "pool": "small", "upstream_model": "small", "shadow": settings}
    return make_config(sims=sims, pools=pools, models=[small, BASE_CONFIG["models"][1]])


def mirror_of(gw: Running) -> ShadowMirror:
    runtime = gw.gateway.runtime
    assert runtime is not None
    return runtime.shadows[MODEL]


async def ask(client: openai.AsyncOpenAI, **options: Any) -> str:
    answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES, **options)
    content = answer.choices[0].message.content
    assert content
    return content


async def settled(mirror: ShadowMirror) -> None:
    """Wait until no mirror is in flight."""
    async with asyncio.timeout(10):
        await mirror.wait_idle()
    assert mirror.inflight == 0


async def test_an_identical_candidate_differs_nowhere(start_gateway: Callable[..., Any]) -> None:
    gw: Running = await start_gateway(shadow_config())
    mirror = mirror_of(gw)
    async with gw.client() as client:
        for _ in range(10):
            await ask(client)
    await settled(mirror)
    snapshot = mirror.snapshot()
    assert snapshot["mirrored"] == 10
    assert snapshot["noise_mirrored"] == 10
    assert gw.sim("c1").app.served == 10
    assert gw.sim("n1").app.served == 10
    for side in ("candidate", "noise"):
        rates = snapshot[side]["diff_rates"]
        assert snapshot[side]["comparisons"] == 10
        for dimension in ("status", "schema", "fields", "length", "text"):
            assert rates[dimension] == 0.0, (side, dimension)
    assert snapshot["relative_diff_rates"]["text"] == 0.0


async def test_a_different_candidate_shows_against_a_quiet_noise_floor(
    start_gateway: Callable[..., Any],
) -> None:
    # The candidate writes a quarter as much as stable does (64 tokens by default).
    gw: Running = await start_gateway(shadow_config(candidate={"default_output_tokens": 16}))
    mirror = mirror_of(gw)
    async with gw.client() as client:
        for _ in range(10):
            await ask(client)
    await settled(mirror)
    snapshot = mirror.snapshot()
    candidate = snapshot["candidate"]["diff_rates"]
    assert candidate["length"] == 1.0
    assert candidate["text"] == 1.0
    assert candidate["fields"] == 1.0
    assert candidate["status"] == 0.0
    assert candidate["schema"] == 0.0
    assert snapshot["noise"]["diff_rates"]["text"] == 0.0
    assert snapshot["relative_diff_rates"]["text"] == 1.0
    assert snapshot["candidate"]["length_ratio_mean"] < 0.5


async def test_the_noise_floor_discounts_differences_stable_already_has(
    start_gateway: Callable[..., Any],
) -> None:
    # Stable's second copy differs from stable just as the candidate does: nothing is left.
    short = {"default_output_tokens": 16}
    gw: Running = await start_gateway(shadow_config(candidate=short, noise=short))
    mirror = mirror_of(gw)
    async with gw.client() as client:
        for _ in range(8):
            await ask(client)
    await settled(mirror)
    snapshot = mirror.snapshot()
    assert snapshot["candidate"]["diff_rates"]["text"] == 1.0
    assert snapshot["noise"]["diff_rates"]["text"] == 1.0
    assert snapshot["relative_diff_rates"]["text"] == 0.0
    assert snapshot["relative_diff_rates"]["length"] == 0.0


async def test_a_failing_candidate_never_reaches_the_client(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(shadow_config())
    gw.sim("c1").faults.update({"error_rate": 1.0})
    mirror = mirror_of(gw)
    async with gw.client() as client:
        answers = [await ask(client) for _ in range(10)]
    await settled(mirror)
    assert len(set(answers)) == 1
    snapshot = mirror.snapshot()
    assert snapshot["candidate_failures"] == 10
    assert snapshot["candidate"]["diff_rates"]["status"] == 1.0
    assert snapshot["noise"]["diff_rates"]["status"] == 0.0
    assert snapshot["relative_diff_rates"]["status"] == 1.0


async def test_a_hanging_candidate_neither_slows_clients_nor_outlives_shutdown() -> None:
    config = shadow_config({"max_concurrency": 2, "timeout": 60})
    gateway = Gateway(config)
    await gateway.start(api_port=0, admin_port=0)
    gw = Running(gateway)
    try:
        async with gw.client() as client:
            baseline = []
            loop = asyncio.get_running_loop()
            for _ in range(5):
                started = loop.time()
                await client.chat.completions.create(
                    model="sim-large", messages=MESSAGES, max_tokens=4
                )
                baseline.append(loop.time() - started)
            gw.sim("c1").faults.update({"hang_rate": 1.0})
            mirror = mirror_of(gw)
            timings = []
            for _ in range(10):
                started = loop.time()
                await ask(client, max_tokens=4)
                timings.append(loop.time() - started)
        # Two mirrors hang (the concurrency bound), the rest are skipped, nobody waits.
        assert mirror.inflight == 2
        snapshot = mirror.snapshot()
        assert snapshot["mirrored"] == 2
        assert snapshot["skipped"]["concurrency"] == 8
        assert max(timings) < 1.0, timings
        assert sorted(timings)[5] < 5 * max(sorted(baseline)[2], 0.02), (timings, baseline)
    finally:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await gateway.stop(1.0)
    # Shutdown cancelled the hanging mirrors instead of waiting out their 60 s.
    assert loop.time() - started < 10.0
    assert mirror.inflight == 0


async def test_the_per_minute_cap(start_gateway: Callable[..., Any]) -> None:
    gw: Running = await start_gateway(shadow_config({"max_per_minute": 5}))
    mirror = mirror_of(gw)
    async with gw.client() as client:
        for _ in range(15):
            await ask(client, max_tokens=2)
    await settled(mirror)
    snapshot = mirror.snapshot()
    # A burst of one minute's worth, then one every 12 s: the test is over long before.
    assert snapshot["mirrored"] == 5
    assert snapshot["skipped"]["rate"] == 10
    assert gw.sim("c1").app.served == 5


async def test_sampling_and_streams(start_gateway: Callable[..., Any]) -> None:
    gw: Running = await start_gateway(shadow_config({"sample": 0.0}))
    mirror = mirror_of(gw)
    async with gw.client() as client:
        for _ in range(5):
            await ask(client, max_tokens=2)
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=2, stream=True
        )
        async for _ in stream:
            pass
    snapshot = mirror.snapshot()
    assert snapshot["mirrored"] == 0
    assert snapshot["skipped"]["sample"] == 5
    assert snapshot["skipped"]["stream"] == 1
    assert gw.sim("c1").app.served == 0


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


async def test_admin_api_reports_shadows(start_gateway: Callable[..., Any]) -> None:
    gw: Running = await start_gateway(shadow_config({"noise_pool": None}))
    async with gw.client() as client:
        await ask(client, max_tokens=2)
    await settled(mirror_of(gw))
    document = await asyncio.to_thread(_get_json, gw.admin_url + "/api/shadow")
    entry = document["models"][MODEL]
    assert entry["mirrored"] == 1
    assert entry["pool"] == "candidate"
    assert entry["noise"] is None
    assert entry["relative_diff_rates"] is None
    assert entry["candidate"]["comparisons"] == 1
