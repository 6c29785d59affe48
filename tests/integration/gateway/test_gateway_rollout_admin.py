"""Operating rollouts on a real gateway: the admin API's rollout routes (validation, access,
commands, audit), the CLI on top of it, /metrics, and reloads while a rollout runs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_gateway_rollouts import MODEL, TOKEN, Traffic, call, finished, rollout_config, spec

from conftest import Running
from headway.cli import main as cli_main
from headway.gateway import Gateway

APPROVAL = [
    {"set_weight": 10},
    {"pause": {}},
    {"set_weight": 50},
    {"analysis": {"count": 1}},
]


async def cli(*argv: str) -> tuple[int, str, str]:
    """``headway ARGV`` in a thread (it blocks on HTTP while the gateway serves here)."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli_main(list(argv))

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


async def test_operator_commands_walk_a_rollout_and_every_write_is_audited(
    start_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="headway.audit")
    gw: Running = await start_gateway(rollout_config())
    path = f"/api/rollouts/{MODEL}"
    status, doc = await call(gw, path, spec(APPROVAL))
    assert status == 201, doc
    doc = await finished(gw, 5.0, until=lambda d: d["phase"] == "paused")
    assert (doc["pause_reason"], doc["weight"], doc["step"]) == ("approval", 10, 1)
    assert [s["state"] for s in doc["steps"]] == ["done", "current", "pending", "pending"]

    status, again = await call(gw, path, spec(APPROVAL))
    assert status == 409
    assert again["error"]["code"] == "rollout_conflict"
    status, refused = await call(gw, path + "/pause", method="POST")
    assert status == 409
    assert "already paused" in refused["error"]["message"]

    status, doc = await call(gw, path + "/resume", {"reason": "looks fine"})
    assert status == 200
    assert doc["phase"] == "running"
    assert doc["weight"] == 50
    resume = next(d for d in doc["decisions"] if d["action"] == "resume")
    assert (resume["by"], resume["reason"]) == ("tester", "looks fine")

    status, doc = await call(gw, path + "/promote", method="POST")
    assert status == 200
    assert (doc["phase"], doc["weight"]) == ("promoted", 100)
    assert doc["status"] == "promoted: update the config to make the canary pool stable"
    _, splits = await call(gw, "/api/splits")
    assert splits["models"][MODEL]["weight"] == 100
    status, _ = await call(gw, path + "/abort", method="POST")
    assert status == 409  # finished

    # A finished rollout may be replaced by a new one; abort takes effect at once.
    status, doc = await call(gw, path, spec([{"set_weight": 40}, {"pause": {"duration": 60}}]))
    assert status == 201
    await finished(gw, 5.0, until=lambda d: d["weight"] == 40)
    status, doc = await call(gw, path + "/abort", {"reason": "drill"})
    assert (status, doc["phase"], doc["weight"]) == (200, "aborted", 0)
    assert [s["state"] for s in doc["steps"]] == ["done", "aborted"]
    load = Traffic(gw).start()
    await asyncio.sleep(0.3)
    await load.stop()
    assert load.sides["canary"] == 0
    assert load.sides["stable"] > 0

    status, listing = await call(gw, "/api/rollouts")
    assert status == 200
    assert listing["store"] is None
    [item] = listing["rollouts"]
    assert item["model"] == MODEL
    assert item["phase"] == "aborted"
    assert [d["action"] for d in item["decisions"]] == ["start", "set_weight", "abort"]
    assert item["decisions_total"] == 3

    audits = [json.loads(r.getMessage()) for r in caplog.records if r.name == "headway.audit"]
    assert [(a["action"], a["target"], a["outcome"]) for a in audits] == [
        ("rollout.start", f"rollout/{MODEL}", "ok"),
        ("rollout.start", f"rollout/{MODEL}", "failed: rollout_conflict"),
        ("rollout.pause", f"rollout/{MODEL}", "failed: rollout_conflict"),
        ("rollout.resume", f"rollout/{MODEL}", "ok"),
        ("rollout.promote", f"rollout/{MODEL}", "ok"),
        ("rollout.abort", f"rollout/{MODEL}", "failed: rollout_conflict"),
        ("rollout.start", f"rollout/{MODEL}", "ok"),
        ("rollout.abort", f"rollout/{MODEL}", "ok"),
    ]


async def test_bad_specs_and_requests_are_refused_with_what_is_wrong(
    start_gateway: Callable[..., Any],
) -> None:
    gw: Running = await start_gateway(rollout_config())
    path = f"/api/rollouts/{MODEL}"
    bad = {
        "steps": [{"set_weight": 150}, {"bogus": 1}],
        "analysis": {"interval": -1, "metrics": [{"name": "x", "kind": "nope"}]},
    }
    status, doc = await call(gw, path, bad)
    assert status == 400
    assert doc["error"]["code"] == "invalid_rollout_spec"
    paths = {e["path"] for e in doc["error"]["errors"]}
    assert {"steps[0].set_weight", "steps[1]", "analysis.interval"} <= paths
    assert "analysis.metrics[0].kind" in paths
    status, doc = await call(gw, path, ["not", "a", "spec"])
    assert (status, doc["error"]["code"]) == (400, "invalid_body")
    status, doc = await call(gw, "/api/rollouts/nope", spec())
    assert (status, doc["error"]["code"]) == (404, "model_not_found")
    status, doc = await call(gw, "/api/rollouts/sim-large", spec())
    assert (status, doc["error"]["code"]) == (409, "no_canary")
    status, doc = await call(gw, "/api/rollouts/sim-large")
    assert (status, doc["error"]["code"]) == (404, "rollout_not_found")
    status, doc = await call(gw, f"{path}/pause", method="POST")
    assert status == 404
    status, doc = await call(gw, "/api/rollouts", method="POST", body={})
    assert status == 405
    # Nothing was started by any of that.
    _, listing = await call(gw, "/api/rollouts")
    assert listing["rollouts"] == []
    # Tokens: reads need one when it is set, writes always.
    status, _ = await call(gw, "/api/rollouts", token="wrong-token-0123456789")
    assert status == 401
    status, _ = await call(gw, path, spec(), token="wrong-token-0123456789")
    assert status == 401
    # No body: the default steps (5% -> 25% -> 50%, one-minute analyses).
    status, doc = await call(gw, path, method="POST")
    assert status == 201
    assert [s["text"] for s in doc["steps"]][:2] == ["set weight 5%", "analysis: 2 passing windows"]
    assert (doc["weight"], doc["analysis"]["interval"]) == (5, 60.0)


async def test_without_an_admin_token_rollouts_are_read_only(
    start_gateway: Callable[..., Any],
) -> None:
    config = rollout_config()
    gw: Running = await start_gateway(
        config.model_copy(update={"server": config.server.model_copy(update={"admin_token": None})})
    )
    status, doc = await call(gw, f"/api/rollouts/{MODEL}", spec())
    assert (status, doc["error"]["code"]) == (403, "admin_token_not_set")
    status, doc = await call(gw, "/api/rollouts")
    assert (status, doc["rollouts"]) == (200, [])


async def test_cli_starts_a_rollout_from_a_yaml_spec_and_shows_its_status(
    start_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    gw: Running = await start_gateway(rollout_config())
    access = ["--url", gw.admin_url, "--token", TOKEN]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"steps": [{"set_weight": 101}]}))
    code, _, err = await cli("rollout", "start", MODEL, "--spec", str(broken), *access)
    assert code == 1
    assert "steps[0].set_weight" in err
    good = tmp_path / "rollout.yaml"
    good.write_text(yaml.safe_dump(spec(interval=1.0)))
    load = Traffic(gw).start()
    try:
        code, out, err = await cli("rollout", "start", MODEL, "--spec", str(good), *access)
        assert code == 0, err
        assert f"{MODEL}  rollout '{MODEL}'" in out
        await finished(gw, 20.0)
    finally:
        await load.stop()
    code, out, _ = await cli("rollout", "status", MODEL, *access)
    assert code == 0
    assert "PROMOTED  weight 100%" in out
    assert "status: promoted: update the config to make the canary pool stable" in out
    assert "✓ 1. set weight 30%" in out
    assert "✓ 4. analysis: 1 passing window" in out
    assert "last analysis" in out
    assert "errors*    PASS" in out
    assert "rate_a=" in out  # measured values
    assert "alpha=0.001" in out  # thresholds
    assert "reason:     " in out
    code, out, _ = await cli("rollout", "status", *access)
    assert code == 0
    assert out.startswith(f"{MODEL}  rollout")
    code, _, err = await cli("rollout", "abort", MODEL, *access)
    assert code == 1
    assert "409" in err
    assert "promoted" in err
    code, _, err = await cli("rollout", "status", MODEL, "--url", gw.admin_url)
    assert code == 1
    assert "token" in err


async def test_metrics_expose_rollout_split_and_verdicts(start_gateway: Callable[..., Any]) -> None:
    config = rollout_config({"ttft": 0.09})
    observe = config.observe.model_copy(update={"metrics": True})
    gw: Running = await start_gateway(config.model_copy(update={"observe": observe}))
    load = Traffic(gw).start()
    try:
        status, _ = await call(gw, f"/api/rollouts/{MODEL}", spec())
        assert status == 201
        await finished(gw, 20.0)
    finally:
        await load.stop()
    text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(gw.admin_url + "/metrics", timeout=5).read().decode()
    )
    lines = set(text.splitlines())
    assert f'headway_rollout_phase{{model="{MODEL}",phase="aborted"}} 1.0' in lines
    assert f'headway_rollout_phase{{model="{MODEL}",phase="running"}} 0.0' in lines
    assert f'headway_rollout_weight_percent{{model="{MODEL}"}} 0.0' in lines
    assert f'headway_split_weight_percent{{model="{MODEL}"}} 0.0' in lines
    assert f'headway_rollout_analyses_total{{model="{MODEL}",verdict="fail"}} 1.0' in lines
    verdict = f'headway_rollout_metric_verdict{{metric="latency",model="{MODEL}",verdict="fail"}}'
    assert f"{verdict} 1.0" in lines
    assert (
        f'headway_rollout_metric_value{{metric="latency",model="{MODEL}",value="median_a"}}' in text
    )
    alpha = f'headway_rollout_metric_threshold{{metric="errors",model="{MODEL}",threshold="alpha"}}'
    assert f"{alpha} 0.001" in lines
    requests = f'headway_split_requests_total{{model="{MODEL}",side="canary"}}'
    canary = next(line for line in lines if line.startswith(requests))
    assert float(canary.split()[-1]) > 0


async def test_a_reload_keeps_a_running_rollout_and_one_without_canary_aborts_it(
    start_gateway: Callable[..., Any],
) -> None:
    config = rollout_config()
    gw: Running = await start_gateway(config)
    status, _ = await call(gw, f"/api/rollouts/{MODEL}", spec(APPROVAL))
    assert status == 201
    await finished(gw, 5.0, until=lambda d: d["phase"] == "paused")
    # A change elsewhere in the config: the split carries over, still driven by the rollout.
    admission = config.admission.model_copy(update={"max_inflight": 100})
    await gw.gateway.reload(config.model_copy(update={"admission": admission}))
    status, doc = await call(gw, f"/api/rollouts/{MODEL}/resume", method="POST")
    assert (status, doc["phase"], doc["weight"]) == (200, "running", 50)
    _, splits = await call(gw, "/api/splits")
    assert splits["models"][MODEL]["weight"] == 50
    assert splits["models"][MODEL]["following"] is True
    # Canary section changed: the rollout drives the new split.
    moved = rollout_config()
    model = moved.models[0]
    canary = model.canary
    assert canary is not None
    new_model = model.model_copy(update={"canary": canary.model_copy(update={"sticky": "tenant"})})
    await gw.gateway.reload(moved.model_copy(update={"models": (new_model, *moved.models[1:])}))
    _, splits = await call(gw, "/api/splits")
    assert splits["models"][MODEL]["weight"] == 50
    # Canary section removed: nothing left to drive, the rollout is aborted.
    plain = model.model_copy(update={"canary": None})
    await gw.gateway.reload(moved.model_copy(update={"models": (plain, *moved.models[1:])}))
    _, doc = await call(gw, f"/api/rollouts/{MODEL}")
    assert (doc["phase"], doc["weight"], doc["split"]) == ("aborted", 0, None)
    assert doc["decisions"][-1]["reason"] == "the reload removed the canary section"


async def test_a_finished_rollout_holds_its_weight_across_restarts_only_for_its_canary(
    tmp_path: Path,
) -> None:
    store = str(tmp_path / "control.db")
    config = rollout_config(url="memory://", control_url=store)

    async def gateway(config: Any) -> Running:
        running = Running(Gateway(config))
        await running.gateway.start(api_port=0, admin_port=0)
        return running

    first = await gateway(config)
    try:
        status, _ = await call(first, f"/api/rollouts/{MODEL}", spec(APPROVAL))
        assert status == 201
        status, doc = await call(first, f"/api/rollouts/{MODEL}/promote", method="POST")
        assert (status, doc["weight"]) == (200, 100)
        # Stopped at once: the acknowledged promotion is saved even if its loop had not yet.
    finally:
        await first.gateway.stop(1.0)
    # Same config: the promotion holds (a restart must not undo it).
    second = await gateway(config)
    try:
        _, splits = await call(second, "/api/splits")
        assert splits["models"][MODEL]["weight"] == 100
        _, doc = await call(second, f"/api/rollouts/{MODEL}")
        assert doc["phase"] == "promoted"
        # A new rollout, left running, then the canary section goes away before the restart.
        status, _ = await call(second, f"/api/rollouts/{MODEL}", spec(APPROVAL))
        assert status == 201
        await asyncio.sleep(0.2)
    finally:
        await second.gateway.stop(1.0)
    model = config.models[0]
    plain = model.model_copy(update={"canary": None})
    third = await gateway(config.model_copy(update={"models": (plain, *config.models[1:])}))
    try:
        _, doc = await call(third, f"/api/rollouts/{MODEL}")
        assert (doc["phase"], doc["weight"]) == ("aborted", 0)
        assert "has no canary section" in doc["decisions"][-1]["reason"]
    finally:
        await third.gateway.stop(1.0)
    # A changed canary section does not inherit an old rollout's weight.
    canary = model.canary
    assert canary is not None
    moved = model.model_copy(update={"canary": canary.model_copy(update={"weight": 5.0})})
    fourth = await gateway(config.model_copy(update={"models": (moved, *config.models[1:])}))
    try:
        _, splits = await call(fourth, "/api/splits")
        assert splits["models"][MODEL]["weight"] == 5.0
        assert splits["models"][MODEL]["following"] is False
    finally:
        await fourth.gateway.stop(1.0)


async def test_a_command_acknowledged_just_before_stop_is_saved(tmp_path: Path) -> None:
    config = rollout_config(url="memory://", control_url=str(tmp_path / "control.db"))
    first = Gateway(config)
    await first.start(api_port=0, admin_port=0)
    try:
        # No await between the commands and the stop: the rollout's loop never got to run, so
        # only the gateway's shutdown can save what the operator was told had happened.
        first.rollouts.start(MODEL, spec(APPROVAL), by="test")
        first.rollouts.command(MODEL, "promote", by="test")
    finally:
        await first.stop(1.0)
    second = Running(Gateway(config))
    await second.gateway.start(api_port=0, admin_port=0)
    try:
        _, doc = await call(second, f"/api/rollouts/{MODEL}")
        assert (doc["phase"], doc["weight"]) == ("promoted", 100)
        _, splits = await call(second, "/api/splits")
        assert splits["models"][MODEL]["weight"] == 100
    finally:
        await second.gateway.stop(1.0)
