"""SLOs through the real gateway: a sim that fails half its requests burns the availability
SLO's budget, visible in GET /api/slos and in /metrics; 4xx answers are not counted; SLOs work
with metrics off; a reload keeps the history of unchanged SLOs."""

from __future__ import annotations

import asyncio
import copy
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BASE_CONFIG, Running, make_config

MESSAGES: Any = [{"role": "user", "content": "hi"}]
SLOS = [
    {
        "name": "large-availability",
        "kind": "availability",
        "objective": 99.9,
        "model": "sim-large",
        "route": "chat",
    },
    {
        "name": "small-latency",
        "kind": "latency",
        "objective": 99,
        "threshold": 2,
        "model": "sim-small",
    },
]


def config(*, metrics: bool, slos: list[dict[str, Any]] = SLOS) -> Any:
    sims = copy.deepcopy(BASE_CONFIG["sims"])
    sims[2]["faults"] = {"error_rate": 0.5}  # b1, the only endpoint of sim-large, fails half
    models = copy.deepcopy(BASE_CONFIG["models"])
    models[1]["retries"] = {"max_attempts": 1}  # so each failure reaches the client
    return make_config(
        sims=sims, models=models, slos=slos, observe={"metrics": metrics, "access_log": False}
    )


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def slos(gw: Running) -> dict[str, Any]:
    status, body = await asyncio.to_thread(get, gw.admin_url + "/api/slos")
    assert status == 200, body
    return {s["name"]: s for s in json.loads(body)["slos"]}


async def traffic(gw: Running, requests: int) -> int:
    """``requests`` chat calls to sim-large (returns how many failed with a 5xx), three to
    sim-small, and a bad key and an unknown model (4xx, not counted)."""
    client = gw.client()
    statuses: list[int] = []
    for _ in range(requests):
        try:
            await client.chat.completions.create(model="sim-large", messages=MESSAGES, max_tokens=3)
        except openai.APIStatusError as error:
            statuses.append(error.status_code)
    assert all(status >= 500 for status in statuses), statuses
    failed = len(statuses)
    for _ in range(3):
        await client.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=3)
    with pytest.raises(openai.AuthenticationError):
        await gw.client("sk-wrong").chat.completions.create(
            model="sim-large", messages=MESSAGES, max_tokens=3
        )
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    return failed


async def test_sim_errors_burn_the_budget_in_api_and_metrics(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(config(metrics=True))
    failed = await traffic(gw, 20)
    assert 0 < failed < 20
    found = await slos(gw)
    large = found["large-availability"]
    assert large["events"] == {"total": 20, "bad": failed}  # the 401 and 404 are not events
    five = large["windows"][0]
    assert five["window"] == "5m"
    assert five["burn_rate"] == pytest.approx(failed / 20 / 0.001)
    assert large["firing"] == ["page", "ticket"]  # far above 14.4x on every window pair
    assert large["error_budget_remaining"] == pytest.approx(1 - failed / 20 / 0.001)
    small = found["small-latency"]
    assert small["events"] == {"total": 3, "bad": 0}
    assert small["firing"] == []
    assert small["error_budget_remaining"] == 1.0

    status, body = await asyncio.to_thread(get, gw.admin_url + "/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    burn = samples[("headway_slo_burn_rate", (("slo", "large-availability"), ("window", "5m")))]
    assert burn == pytest.approx(five["burn_rate"])
    page = ("headway_slo_alert", (("severity", "page"), ("slo", "large-availability")))
    assert samples[page] == 1.0
    assert samples[("headway_slo_alert", (("severity", "page"), ("slo", "small-latency")))] == 0.0
    budget = samples[("headway_slo_error_budget_remaining", (("slo", "large-availability"),))]
    assert budget == pytest.approx(large["error_budget_remaining"])


async def test_slos_work_with_metrics_off_and_survive_a_reload(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(config(metrics=False))
    failed = await traffic(gw, 10)
    status, _ = await asyncio.to_thread(get, gw.admin_url + "/metrics")
    assert status == 404  # metrics off; the SLOs are still evaluated
    before = await slos(gw)
    assert before["large-availability"]["events"] == {"total": 10, "bad": failed}
    assert before["small-latency"]["events"]["total"] == 3

    changed = copy.deepcopy(SLOS)
    changed[1]["threshold"] = 4  # redefined: starts afresh
    await gw.gateway.reload(config(metrics=False, slos=changed))
    after = await slos(gw)
    assert after["large-availability"]["events"] == {"total": 10, "bad": failed}
    assert after["small-latency"]["events"] == {"total": 0, "bad": 0}

    await gw.gateway.reload(config(metrics=False, slos=[]))
    assert await slos(gw) == {}
