"""Endpoint concurrency limits queue excess requests instead of failing them; reload warnings."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import openai
import pytest

from conftest import BASE_CONFIG, Running, make_config

MESSAGES = [{"role": "user", "content": "hi"}]


def _one_slot_config(**admission: Any) -> Any:
    pools = copy.deepcopy(BASE_CONFIG["pools"])
    pools[1]["concurrency"] = {"algorithm": "fixed", "initial": 1, "min": 1, "max": 1}
    sims = copy.deepcopy(BASE_CONFIG["sims"])
    sims[2]["ttft"] = 0.05
    return make_config(pools=pools, sims=sims, **admission)


async def test_requests_over_the_endpoint_limit_wait_for_room(start_gateway: Any) -> None:
    running: Running = await start_gateway(_one_slot_config())
    sim = running.sim("b1")
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, int(sim.snapshot()["active"]))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    async with running.client() as client:
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(model="sim-large", messages=MESSAGES, max_tokens=2)
                for _ in range(5)
            )
        )
    watcher.cancel()
    assert all(r.choices[0].message.content for r in replies)
    assert peak == 1  # the upstream never saw more than its limit
    assert running.gateway.runtime is not None
    assert running.gateway.runtime.pools["large"].snapshot()["waiting"] == 0


async def test_waiting_for_room_is_bounded_by_the_deadline(start_gateway: Any) -> None:
    running: Running = await start_gateway(_one_slot_config())
    running.sim("b1").faults.update({"spike_rate": 1.0, "spike_seconds": 1.0})
    async with running.client() as client:
        slow = asyncio.create_task(
            client.chat.completions.create(model="sim-large", messages=MESSAGES, max_tokens=1)
        )
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="sim-large",
                messages=MESSAGES,
                max_tokens=1,
                extra_headers={"x-headway-timeout": "0.3"},
            )
        waited = time.monotonic() - started
        await slow
    assert caught.value.status_code == 504
    assert 0.25 <= waited < 0.9


async def test_reload_warns_that_server_settings_need_a_restart(
    start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running: Running = await start_gateway()
    changed = make_config(
        server={**BASE_CONFIG["server"], "drain_timeout": 7},
    )
    with caplog.at_level("WARNING", logger="headway.gateway"):
        await running.gateway.reload(changed)
    assert "server.drain_timeout: 5.0 -> 7.0" in caplog.text
    async with running.client() as client:
        reply = await client.chat.completions.create(model="sim-small", messages=MESSAGES)
    assert reply.choices
