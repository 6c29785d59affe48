"""The dashboard's Rollouts section in a real headless Chromium: a canary rollout judged on real
traffic (a 3x slower canary, aborted by its analysis) and a shadow mirror, as an operator sees
them."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

from test_dashboard import ARTIFACTS, TOKEN, browser

from integration.gateway.conftest import BASE_CONFIG, Running, make_config

__all__ = ["browser"]  # the fixture, shared with test_dashboard

MESSAGES = [{"role": "user", "content": "hello rollout"}]


def _config() -> Any:
    fast = {"models": ["small"], "tokens_per_second": 2000}
    sims = [
        {"name": "s1", **fast, "ttft": 0.02, "seed": 1},
        {"name": "c1", **fast, "ttft": 0.06, "seed": 2},
    ]
    pools = [
        {"name": "stable", "endpoints": [{"url": "sim://s1"}]},
        {"name": "canary", "endpoints": [{"url": "sim://c1"}]},
    ]
    model = {
        "name": "sim-small",
        "pool": "stable",
        "upstream_model": "small",
        "canary": {"pool": "canary", "weight": 0, "sticky": "user"},
        "shadow": {"pool": "canary", "max_per_minute": 6000},
    }
    server = {**BASE_CONFIG["server"], "admin_token": TOKEN}
    return make_config(
        observe={"metrics": True}, server=server, sims=sims, pools=pools, models=[model]
    )


def _start_rollout(admin_url: str) -> int:
    metric = {"min_samples": 20}
    spec = {
        "steps": [{"set_weight": 50}, {"analysis": {"count": 3}}],
        "analysis": {
            "interval": 1.0,
            "metrics": [
                {"name": "errors", "kind": "error_rate", "critical": True, **metric},
                {"name": "latency", "kind": "latency", **metric},
            ],
        },
    }
    request = urllib.request.Request(
        admin_url + "/api/rollouts/sim-small", data=json.dumps(spec).encode(), method="POST"
    )
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as answer:
        return int(answer.status)


async def test_dashboard_shows_rollout_verdicts_and_shadow_diffs(
    start_gateway: Callable[..., Any], browser: Any
) -> None:
    running: Running = await start_gateway(_config())
    client = running.client()
    sent = 0

    async def traffic() -> None:
        nonlocal sent
        while True:
            await client.chat.completions.create(
                model="sim-small", messages=MESSAGES, max_tokens=4, user=f"u{sent}"
            )
            sent += 1

    tasks = [asyncio.create_task(traffic()) for _ in range(6)]
    try:
        assert await asyncio.to_thread(_start_rollout, running.admin_url) == 201
        page = await browser.new_page(viewport={"width": 1400, "height": 1200})
        await page.goto(f"{running.admin_url}/#token={TOKEN}")
        rollout = page.locator('div[data-rollout="sim-small"]')
        await rollout.wait_for(timeout=10_000)
        await page.wait_for_function(
            "() => document.querySelector('div[data-rollout=\"sim-small\"]')"
            ".textContent.includes('aborted')",
            timeout=15_000,
        )
        text = await rollout.inner_text()
        assert "0 / 100" in text
        latency = rollout.locator('tr[data-metric="latency"]')
        assert "fail" in await latency.inner_text()
        assert "median" in await latency.inner_text()
        assert "shift" in await latency.inner_text()
        assert "pass" in await rollout.locator('tr[data-metric="errors"]').inner_text()
        shadow = page.locator('tr[data-shadow="sim-small"]')
        await shadow.wait_for(timeout=10_000)
        assert "sim-small → canary" in await shadow.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-rollouts.png"), full_page=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    assert sent > 0
