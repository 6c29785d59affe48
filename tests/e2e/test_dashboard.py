"""The admin dashboard in a real headless Chromium (Debian's, never a downloaded one): a real
gateway serves real traffic from the official openai client, and the page must show it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from integration.gateway.conftest import Running, make_config
from servers import require_binary

TOKEN = "e2e-admin-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = require_binary("chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def _traffic(running: Running, stop: asyncio.Event) -> int:
    """Requests from the official client until ``stop``: unary and streamed, plus refusals
    (the free tenant's 3 RPM runs out), so every chart has something to draw."""
    pro, free = running.client("sk-pro"), running.client("sk-free")
    sent = 0
    messages = [{"role": "user", "content": "hello dashboard"}]
    while not stop.is_set():
        await pro.chat.completions.create(model="sim-small", messages=messages, max_tokens=8)
        stream = await pro.chat.completions.create(
            model="sim-large", messages=messages, max_tokens=8, stream=True
        )
        async for _ in stream:
            pass
        with contextlib.suppress(Exception):
            await free.chat.completions.create(model="sim-small", messages=messages, max_tokens=4)
        sent += 3
        await asyncio.sleep(0.05)
    return sent


async def _non_blank_pixels(page: Any, canvas: str) -> int:
    return int(
        await page.evaluate(
            """(id) => {
                const c = document.getElementById(id);
                const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
                return n;
            }""",
            canvas,
        )
    )


async def test_dashboard_shows_live_traffic(
    start_gateway: Callable[..., Any], browser: Any
) -> None:
    slos = [
        {"name": "chat-availability", "kind": "availability", "objective": 99.9},
        {"name": "chat-latency", "kind": "latency", "objective": 99, "threshold": 0.5},
    ]
    config = make_config(
        observe={"metrics": True},
        server={"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:1", "admin_token": TOKEN},
        slos=slos,
    )
    running: Running = await start_gateway(config)
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(running, stop))
    requests: list[str] = []
    try:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        await page.goto(f"{running.admin_url}/#token={TOKEN}")
        # The token moved to sessionStorage and out of the address bar.
        assert "token" not in page.url
        await page.wait_for_function(
            "() => parseInt(document.getElementById('total-requests').textContent"
            ".replace(/\\D/g, '')) > 0",
            timeout=15_000,
        )
        # Three or more per-second samples drawn on the request-rate and latency charts.
        for chart in ("chart-rate", "chart-latency", "chart-errors"):
            await page.wait_for_function(
                f"() => Number(document.getElementById('{chart}').dataset.points || 0) >= 3",
                timeout=15_000,
            )
        assert await _non_blank_pixels(page, "chart-rate") > 500
        row = page.locator('tr[data-endpoint="small/sim://a1"]')
        assert await row.locator("td.breaker").inner_text() == "closed"
        assert int((await row.locator("td.requests").inner_text()).replace(",", "")) > 0
        assert await row.get_attribute("data-health") == "healthy"
        tenant = page.locator('tr[data-tenant="free"]')
        assert "/ 3" in await tenant.inner_text()  # its RPM meter: used / limit
        assert "closed" in await page.locator("#endpoints").inner_text()
        rps = await page.locator("#kpi-rps").inner_text()
        assert rps.endswith("/s")
        assert await page.locator("#conn-text").inner_text() != "token needed"
        # The SLO section shows each SLO with its burn rates, and nothing is burning.
        slo = page.locator('tr[data-slo="chat-availability"]')
        await slo.wait_for(timeout=10_000)
        assert "99.9% availability" in await slo.inner_text()
        assert "5m" in await slo.locator("td.burns").inner_text()
        assert "ok" in await slo.inner_text()
        assert await page.locator('tr[data-slo="chat-latency"]').count() == 1
        # Let the charts fill a little more, then keep a picture of it.
        await asyncio.sleep(2.0)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    finally:
        stop.set()
        sent = await traffic
    assert sent > 0
    # Nothing reached beyond the admin port (no CDN, no fonts).
    assert requests
    assert all(url.startswith(running.admin_url) for url in requests), requests


async def test_dashboard_asks_for_the_token(
    start_gateway: Callable[..., Any], browser: Any
) -> None:
    config = make_config(
        observe={"metrics": True},
        server={"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:1", "admin_token": TOKEN},
    )
    running: Running = await start_gateway(config)
    client = running.client()
    await client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    page = await browser.new_page()
    await page.goto(running.admin_url + "/")
    await page.wait_for_selector("#login.show", timeout=10_000)
    assert await page.locator("#conn-text").inner_text() == "token needed"
    await page.fill("#token-input", TOKEN)
    await page.click("#login-form button")
    await page.wait_for_function(
        "() => document.getElementById('total-requests').textContent.trim() === '1'",
        timeout=10_000,
    )
    assert not await page.locator("#login.show").count()
