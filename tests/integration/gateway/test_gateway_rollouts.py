"""Canary rollouts end to end: a real gateway with real sims, driven by the official OpenAI client,
a rollout started and watched through the admin API, the controller judging real traffic.

Short analysis windows (1-1.5 s) with small minimum samples keep each test to a few seconds; sim
fault dice are seeded and users are a fixed sequence, so the traffic is the same on every run
(only the machine's timing noise varies, which the bounds below leave room for).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import BASE_CONFIG, Running, make_config
from headway.gateway import Gateway

MODEL = "sim-small"
TOKEN = "rollout-admin-token-0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]
STABLE_TTFT = 0.03


def metrics(min_samples: int = 30, **latency: Any) -> list[dict[str, Any]]:
    return [
        {"name": "errors", "kind": "error_rate", "critical": True, "min_samples": min_samples},
        {"name": "latency", "kind": "latency", "min_samples": min_samples, **latency},
        {"name": "ttft", "kind": "ttft", "min_samples": min_samples, **latency},
    ]


def spec(
    steps: list[dict[str, Any]] | None = None, interval: float = 1.5, **analysis: Any
) -> dict[str, Any]:
    return {
        "steps": steps
        or [
            {"set_weight": 30},
            {"analysis": {"count": 1}},
            {"set_weight": 60},
            {"analysis": {"count": 1}},
        ],
        "analysis": {"interval": interval, "metrics": metrics(), **analysis},
    }


def rollout_config(
    canary_sim: dict[str, Any] | None = None, *, ttft: float = STABLE_TTFT, **state: Any
) -> Any:
    """sim-small on a stable sim, with a canary pool on a sim that differs by ``canary_sim``.
    One attempt per request: a failed canary attempt is counted against the canary and served
    on stable by the split's fallback (the model's retries would hide it on the canary)."""
    fast = {"models": ["small"], "ttft": ttft, "tokens_per_second": 2000}
    sims = [
        {"name": "s1", **fast, "seed": 1},
        {"name": "c1", **fast, "seed": 2, **(canary_sim or {})},
        *BASE_CONFIG["sims"][2:],
    ]
    pools = [
        {"name": "stable", "endpoints": [{"url": "sim://s1"}]},
        {"name": "canary", "endpoints": [{"url": "sim://c1"}]},
        BASE_CONFIG["pools"][1],
    ]
    models = [
        {
            "name": MODEL,
            "pool": "stable",
            "upstream_model": "small",
            "retries": {"max_attempts": 1},
            "canary": {"pool": "canary", "weight": 0, "sticky": "user"},
        },
        BASE_CONFIG["models"][1],
    ]
    server = {**BASE_CONFIG["server"], "admin_token": TOKEN}
    return make_config(server=server, sims=sims, pools=pools, models=models, state=state)


def admin(
    gw: Running, path: str, body: Any = None, *, method: str | None = None, token: str = TOKEN
) -> tuple[int, Any]:
    """(status, JSON) of an admin API call (blocking: run it in a thread)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        gw.admin_url + path, data=data, method=method or ("GET" if data is None else "POST")
    )
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("x-headway-actor", "tester")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


async def call(gw: Running, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(admin, gw, path, body, **kw)


class Traffic:
    """Clients sending chat completions as users u0, u1, ... until stopped; counts what the
    clients saw."""

    def __init__(self, gw: Running, *, workers: int = 8, pause: float = 0.0) -> None:
        self._client = gw.client()
        self._workers = workers
        self._pause = pause
        self._next = 0
        self.sides: dict[str, int] = {"stable": 0, "canary": 0}
        self.failures: list[BaseException] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._workers)]
        return self

    async def _run(self) -> None:
        while True:
            user = f"u{self._next}"
            self._next += 1
            try:
                raw = await self._client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=MESSAGES, max_tokens=1, user=user
                )
                raw.parse()
                self.sides[raw.headers["x-headway-variant"]] += 1
            except openai.APIError as error:
                self.failures.append(error)
            if self._pause:
                await asyncio.sleep(self._pause)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.close()


async def finished(
    gw: Running, within: float, *, until: Callable[[Any], bool] | None = None
) -> Any:
    """The rollout's status once ``until`` holds (default: promoted or aborted)."""
    until = until or (lambda doc: doc["phase"] in ("promoted", "aborted"))
    deadline = asyncio.get_running_loop().time() + within
    while True:
        status, doc = await call(gw, f"/api/rollouts/{MODEL}")
        assert status == 200, doc
        if until(doc):
            return doc
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"rollout still {doc['phase']} after {within}s: {doc['status']}")
        await asyncio.sleep(0.1)


async def run_rollout(
    gw: Running,
    rollout: dict[str, Any],
    within: float = 20.0,
    until: Callable[[Any], bool] | None = None,
    **traffic: Any,
) -> tuple[Any, Traffic]:
    """Start ``rollout`` under traffic; its status once finished (or ``until`` holds)."""
    load = Traffic(gw, **traffic).start()
    try:
        status, doc = await call(gw, f"/api/rollouts/{MODEL}", rollout)
        assert status == 201, doc
        doc = await finished(gw, within, until=until)
    finally:
        await load.stop()
    return doc, load


def analyses(doc: Any) -> list[Any]:
    return [d["analysis"] for d in doc["decisions"] if d["analysis"] is not None]


async def test_a_canary_with_20_percent_errors_is_aborted_and_clients_never_see_an_error(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(rollout_config({"faults": {"error_rate": 0.2}}))
    doc, load = await run_rollout(gw, spec())
    assert doc["phase"] == "aborted"
    assert doc["weight"] == 0
    abort = doc["decisions"][-1]
    assert abort["action"] == "abort"
    assert abort["by"] == "controller"
    errors = next(m for m in abort["analysis"]["metrics"] if m["name"] == "errors")
    assert errors["verdict"] == "fail"
    assert errors["measured"]["rate_a"] > 0.1
    assert errors["measured"]["rate_b"] == 0
    # The canary never got past its first step: aborted within its first analysis windows.
    assert abort["step"] <= 1
    assert abort["at"] < 4 * 1.5
    # Failed canary attempts were served on stable: no client saw an error, stable had none.
    assert load.failures == []
    split = doc["split"]
    assert split["errors"]["stable"] == 0
    assert split["errors"]["canary"] > 0
    assert split["fallbacks"] == split["errors"]["canary"]
    assert gw.sim("c1").app.served > 0
    # From the abort on, every request goes to stable.
    after = Traffic(gw).start()
    await asyncio.sleep(0.3)
    await after.stop()
    assert after.sides["canary"] == 0
    assert after.sides["stable"] > 0


async def test_a_canary_with_3x_latency_fails_the_latency_gate(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(rollout_config({"ttft": 3 * STABLE_TTFT}))
    doc, load = await run_rollout(gw, spec())
    assert doc["phase"] == "aborted"
    last = doc["decisions"][-1]["analysis"]
    verdicts = {m["name"]: m["verdict"] for m in last["metrics"]}
    assert verdicts == {"errors": "pass", "latency": "fail", "ttft": "fail"}
    latency = next(m for m in last["metrics"] if m["name"] == "latency")
    assert latency["measured"]["median_a"] > 2 * latency["measured"]["median_b"]
    assert latency["measured"]["shift_lower"] > latency["thresholds"]["allowance"]
    assert load.failures == []


async def test_a_healthy_canary_is_promoted_to_100_percent(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(rollout_config())
    doc, load = await run_rollout(gw, spec())
    assert doc["phase"] == "promoted", doc["status"]
    assert doc["weight"] == 100
    assert doc["status"] == "promoted: update the config to make the canary pool stable"
    gates = [a["verdict"] for a in analyses(doc)]
    assert gates.count("pass") >= 2
    assert "fail" not in gates
    assert [s["state"] for s in doc["steps"]] == ["done"] * 4
    assert load.failures == []
    after = Traffic(gw).start()
    await asyncio.sleep(0.3)
    await after.stop()
    assert after.sides == {"stable": 0, "canary": after.sides["canary"]}
    assert after.sides["canary"] > 0


async def test_a_canary_with_the_same_median_and_a_3x_tail_fails(
    start_gateway: Callable[..., Any],
) -> None:
    # 15% of canary requests take 3x as long: the median does not move, the p95 triples. A
    # window at test traffic holds a few hundred samples, enough to bound a p95 at alpha 0.001
    # (a p99 bound needs ~1000 baseline samples a window; bench/rollout.py runs that case).
    # Slower sims than the other tests' keep the machine's timing noise a small part of the
    # baseline's tail.
    base = 0.065
    faults = {"spike_rate": 0.15, "spike_seconds": 2 * base}
    gw: Running = await start_gateway(rollout_config({"faults": faults}, ttft=base))
    rollout = spec(
        [{"set_weight": 50}, {"analysis": {"count": 2}}],
        interval=2.5,
        metrics=metrics(100, tail_quantile=0.95),
    )
    doc, _ = await run_rollout(gw, rollout, workers=12)
    assert doc["phase"] == "aborted", [m["reason"] for a in analyses(doc) for m in a["metrics"]]
    latency = next(m for m in doc["decisions"][-1]["analysis"]["metrics"] if m["name"] == "latency")
    assert latency["verdict"] == "fail"
    measured = latency["measured"]
    assert measured["median_a"] < 1.2 * measured["median_b"]  # the median barely moved
    assert measured["tail_a"] > 2 * measured["tail_b"]
    assert measured["tail_ratio_lower"] > latency["thresholds"]["tail_tolerance"]
    assert "tail tolerance" in latency["reason"]


async def test_a_canary_with_too_little_traffic_is_inconclusive_never_passed(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(rollout_config())
    rollout = spec(
        [{"set_weight": 50}, {"analysis": {"count": 1}}], interval=1.0, inconclusive_limit=2
    )
    doc, load = await run_rollout(
        gw, rollout, 10.0, until=lambda d: d["phase"] != "running", workers=1, pause=0.2
    )
    assert sum(load.sides.values()) > 10  # some traffic, too little to judge
    assert doc["phase"] == "paused"
    assert doc["pause_reason"] == "inconclusive"
    assert doc["weight"] == 50
    gates = [a["verdict"] for a in analyses(doc)]
    assert gates == ["inconclusive"] * 3
    assert "too little data" in doc["last_analysis"]["reason"]


async def test_a_rollout_survives_a_gateway_restart_and_finishes(tmp_path: Path) -> None:
    config = rollout_config(url="memory://", control_url=str(tmp_path / "control.db"))
    steps = [
        {"set_weight": 30},
        {"pause": {"duration": 1.5}},
        {"set_weight": 60},
        {"analysis": {"count": 1}},
    ]
    first = Running(Gateway(config))
    await first.gateway.start(api_port=0, admin_port=0)
    try:
        status, doc = await call(first, f"/api/rollouts/{MODEL}", spec(steps, interval=1.0))
        assert status == 201, doc
        doc = await finished(first, 5.0, until=lambda d: d["step"] == 1)
        assert doc["weight"] == 30
        assert doc["persisted"] is True
    finally:
        await first.gateway.stop(1.0)
    second = Running(Gateway(config))
    await second.gateway.start(api_port=0, admin_port=0)
    load = Traffic(second).start()
    try:
        status, doc = await call(second, f"/api/rollouts/{MODEL}")
        assert status == 200
        assert doc["phase"] == "running"
        assert doc["weight"] == 30  # traffic resumes where it was
        actions = [d["action"] for d in doc["decisions"]]
        assert actions[:2] == ["start", "set_weight"]
        assert "restore" in actions
        doc = await finished(second, 15.0)
        assert doc["phase"] == "promoted", doc["status"]
        assert doc["weight"] == 100
        store = second.gateway.control_store
        assert store is not None
        entries = await store.audit_log()
        assert [(e.actor, e.action, e.target) for e in entries] == [
            ("tester", "rollout.start", f"rollout/{MODEL}")
        ]
    finally:
        await load.stop()
        await second.gateway.stop(1.0)
    assert load.failures == []
