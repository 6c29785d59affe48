"""The admin API on a real gateway: access rules, status, timeline, reload and drain."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import BASE_CONFIG, Running, make_config
from headway.config import parse_config
from headway.gateway._app import Gateway
from servers import free_port

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MESSAGES = [{"role": "user", "content": "hello"}]


def _call_sync(url: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    body = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, head, raw = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, dict(error.headers), error.read()
    ctype = head.get("content-type", "")
    return status, head, json.loads(raw) if ctype.startswith("application/json") else raw


async def call(
    running: Running, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    return await asyncio.to_thread(
        _call_sync, running.admin_url + path, method, dict(headers or {})
    )


def _with_token(**overrides: Any) -> Any:
    server = {**BASE_CONFIG["server"], "admin_token": TOKEN}
    return make_config(server=server, observe={"metrics": True}, **overrides)


def _endpoint(status: dict[str, Any], qualified: str) -> dict[str, Any]:
    for pool in status["pools"]:
        for ep in pool["endpoints"]:
            if ep["qualified"] == qualified:
                return dict(ep)
    raise KeyError(qualified)


def _assert_openai_error(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert "type" in body["error"]


# -- access --------------------------------------------------------------------------------------


async def test_without_a_token_reads_are_open_and_writes_refused(
    start_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    running: Running = await start_gateway(make_config(observe={"metrics": True}))
    for path in ("/healthz", "/readyz", "/metrics", "/api/status", "/api/timeline", "/status"):
        assert (await call(running, path))[0] == 200, path
    caplog.set_level(logging.INFO, logger="headway.audit")
    for path in ("/api/reload", "/api/endpoints/small/ep0/drain"):
        status, _, body = await call(running, path, "POST")
        assert status == 403
        _assert_openai_error(body, "admin_token_not_set")
        assert "server.admin_token" in body["error"]["message"]
        # Even a bearer token is no use when none is configured.
        assert (await call(running, path, "POST", AUTH))[0] == 403
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "headway.audit"]
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("reload", "refused_no_token"),
        ("reload", "refused_no_token"),
        ("drain", "refused_no_token"),
        ("drain", "refused_no_token"),
    ]
    assert audit[2]["target"] == "small/ep0"
    assert all(isinstance(a["time"], float) for a in audit)
    # Nothing was drained.
    status = (await call(running, "/api/status"))[2]
    assert not _endpoint(status, "small/sim://a1")["drained"]


async def test_with_a_token_reads_need_it_and_probes_do_not(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(_with_token())
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        assert (await call(running, path))[0] == 200, path
    for path in ("/api/status", "/api/timeline", "/status"):
        status, head, body = await call(running, path)
        assert status == 401, path
        _assert_openai_error(body, "invalid_admin_token")
        assert head.get("www-authenticate") == "Bearer"
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert (await call(running, path, headers=wrong))[0] == 401
        assert (await call(running, path, headers={"Authorization": TOKEN}))[0] == 401
        assert (await call(running, path, headers=AUTH))[0] == 200
        lower = {"authorization": f"bearer {TOKEN}"}
        assert (await call(running, path, headers=lower))[0] == 200


async def test_unknown_paths_404_and_wrong_methods_405(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(_with_token())
    for path in ("/nope", "/api", "/api/statusx", "/api/endpoints/small/ep0/explode"):
        status, _, body = await call(running, path, headers=AUTH)
        assert status == 404, path
        _assert_openai_error(body, "not_found")
    for path, method, allowed in (
        ("/api/reload", "GET", "POST"),
        ("/api/status", "POST", "GET"),
        ("/api/endpoints/small/ep0/drain", "GET", "POST"),
        ("/healthz", "POST", "GET"),
    ):
        status, head, body = await call(running, path, method, AUTH)
        assert status == 405, path
        _assert_openai_error(body, "method_not_allowed")
        assert head.get("allow") == allowed


async def test_the_dashboard_page_is_self_contained(start_gateway: Callable[..., Any]) -> None:
    running: Running = await start_gateway(_with_token())
    status, head, body = await call(running, "/")
    assert status == 200
    assert head["content-type"].startswith("text/html")
    assert "connect-src 'self'" in head["content-security-policy"]
    page = body.decode()
    for part in ("/api/status", "/api/timeline", "/api/slos", "<canvas"):
        assert part in page
    for outside in ("http://", "https://", "//cdn"):  # nothing from elsewhere
        assert outside not in page
    assert (await call(running, "/dashboard"))[2] == body


# -- reads -------------------------------------------------------------------------------------


async def test_status_reports_endpoints_tenants_and_config(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(_with_token())
    pro, free = running.client("sk-pro"), running.client("sk-free")
    for _ in range(6):
        await pro.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=4)
    await free.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=4)
    status, _, doc = await call(running, "/api/status", headers=AUTH)
    assert status == 200
    assert doc["traffic"]["requests"] == 7
    assert doc["traffic"]["errors"] == 0
    latency = doc["traffic"]["latency"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"] < 5
    small = next(p for p in doc["pools"] if p["name"] == "small")
    assert [ep["name"] for ep in small["endpoints"]] == ["sim://a1", "sim://a2"]
    assert sum(ep["requests"] for ep in small["endpoints"]) == 7
    for ep in small["endpoints"]:
        assert ep["health"] == "healthy"
        assert ep["breaker"] == "closed"
        assert ep["inflight"] == 0
        assert ep["limit"] > 0
        if ep["requests"]:
            assert 0 < ep["latency"]["p50"] <= ep["latency"]["p999"] < 5
    large = next(p for p in doc["pools"] if p["name"] == "large")
    assert large["endpoints"][0]["latency"] is None  # no attempt there: no made-up numbers
    tenants = {t["name"]: t for t in doc["tenants"]}
    assert tenants["free"]["rpm"]["limit"] == 3
    assert tenants["free"]["rpm"]["used"] == pytest.approx(1.0, abs=0.05)
    assert tenants["free"]["priority"] == "sheddable"
    assert tenants["pro"]["rpm"] is None
    assert tenants["pro"]["inflight"] == 0
    config = doc["config"]
    assert len(config["hash"]) == 16
    assert config["source"] == "(embedded)"
    assert config["reloads"] == 0
    assert doc["admin"] == {"token_set": True}


async def test_status_without_metrics_says_so(start_gateway: Callable[..., Any]) -> None:
    running: Running = await start_gateway(make_config())
    await running.client().chat.completions.create(
        model="sim-small", messages=MESSAGES, max_tokens=4
    )
    doc = (await call(running, "/api/status"))[2]
    assert doc["traffic"]["metrics"] is False
    assert "requests" not in doc["traffic"]
    assert all(ep["latency"] is None for p in doc["pools"] for ep in p["endpoints"])
    assert sum(ep["requests"] for p in doc["pools"] for ep in p["endpoints"]) == 1
    timeline = (await call(running, "/api/timeline"))[2]
    assert timeline["metrics"] is False
    assert timeline["samples"] == []


@pytest.mark.slow
async def test_timeline_samples_real_traffic_every_second(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(_with_token())
    client = running.client()
    for _ in range(3):  # the sampler's baseline, then traffic across at least two samples
        for _ in range(5):
            await client.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=4)
        await asyncio.sleep(1.0)
    await asyncio.sleep(0.2)
    _, _, doc = await call(running, "/api/timeline", headers=AUTH)
    samples = doc["samples"]
    assert doc["interval"] == 1.0
    assert len(samples) >= 2
    busy = [s for s in samples if s["rps"] > 0]
    assert busy
    # 15 requests were sent; each sample covers about one second of them.
    assert sum(s["rps"] for s in samples) == pytest.approx(15, rel=0.25)
    assert all(s["error_rate"] == 0 and s["shed_rate"] == 0 for s in samples)
    assert all(0 < s["p50"] <= s["p99"] < 5 for s in busy)
    assert all(b["t"] > a["t"] for a, b in itertools.pairwise(samples))
    assert all(s["t"] <= doc["now"] for s in samples)
    short = (await call(running, "/api/timeline?seconds=1.5", headers=AUTH))[2]["samples"]
    assert 1 <= len(short) < len(samples)
    for bad in ("0", "-1", "nan", "x"):
        status, _, body = await call(running, f"/api/timeline?seconds={bad}", headers=AUTH)
        assert status == 400
        assert body["error"]["param"] == "seconds"


# -- reload --------------------------------------------------------------------------------------


def _write_yaml(path: Path, data: dict[str, Any]) -> str:
    text = yaml.safe_dump(data)
    path.write_text(text)
    return text


async def _start_from_file(path: Path, data: dict[str, Any]) -> Gateway:
    text = _write_yaml(path, data)
    gateway = Gateway(parse_config(text, source=str(path)), config_path=str(path))
    await gateway.start(api_port=0, admin_port=0)
    return gateway


async def test_reload_applies_a_good_file_and_rejects_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="headway.audit")
    data = {**BASE_CONFIG, "server": {**BASE_CONFIG["server"], "admin_token": TOKEN}}
    path = tmp_path / "headway.yaml"
    gateway = await _start_from_file(path, data)
    running = Running(gateway)
    try:
        before = (await call(running, "/api/status", headers=AUTH))[2]["config"]
        assert before["source"] == str(path)
        assert (await call(running, "/api/reload", "POST"))[0] == 401
        # A good file: the free tenant's quota changes, live.
        tenants = [dict(t) for t in data["tenants"]]
        tenants[1]["rpm"] = 50
        _write_yaml(path, {**data, "tenants": tenants})
        status, _, body = await call(running, "/api/reload", "POST", AUTH)
        assert status == 200, body
        assert body["reloaded"] is True
        assert body["changes"] == ["tenants['free'].rpm: 3 -> 50"]
        assert body["config"]["reloads"] == 1
        assert body["config"]["hash"] != before["hash"]
        assert gateway.config.tenants[1].rpm == 50
        status_doc = (await call(running, "/api/status", headers=AUTH))[2]
        assert {t["name"]: t for t in status_doc["tenants"]}["free"]["rpm"]["limit"] == 50
        good_hash = body["config"]["hash"]
        # A bad file: 400 with every error, and nothing changes.
        broken = {**data, "tenants": tenants, "models": [{"name": "m", "pool": "nope"}]}
        broken["server"] = {**data["server"], "workers": 0}
        _write_yaml(path, broken)
        status, _, body = await call(running, "/api/reload", "POST", AUTH)
        assert status == 400
        _assert_openai_error(body, "invalid_config")
        paths = {e["path"] for e in body["error"]["errors"]}
        assert "server.workers" in paths
        assert any(p.startswith("models[0]") for p in paths), paths
        assert "server.workers" in body["error"]["message"]
        assert gateway.config.tenants[1].rpm == 50
        after = (await call(running, "/api/status", headers=AUTH))[2]["config"]
        assert (after["hash"], after["reloads"]) == (good_hash, 1)
        # The API still serves.
        reply = await running.client().chat.completions.create(
            model="sim-small", messages=MESSAGES, max_tokens=4
        )
        assert reply.choices[0].message.content
    finally:
        await gateway.stop(1.0)
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "headway.audit"]
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("reload", "unauthorized"),
        ("reload", "ok"),
        ("reload", "failed: invalid_config"),
    ]
    assert all(a["target"] == str(path) for a in audit)


async def test_reload_with_the_embedded_config_says_there_is_no_file(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(_with_token())
    status, _, body = await call(running, "/api/reload", "POST", AUTH)
    assert status == 409
    _assert_openai_error(body, "no_config_file")
    assert "no file" in body["error"]["message"]


# -- drain -------------------------------------------------------------------------------------


async def test_drain_moves_traffic_off_and_in_flight_requests_finish(
    start_gateway: Callable[..., Any],
) -> None:
    # Slow generation (50 tokens/s) so a stream is still running when its endpoint is drained.
    sims = [dict(s, tokens_per_second=50) for s in BASE_CONFIG["sims"]]
    running: Running = await start_gateway(_with_token(sims=sims))
    client = running.client()
    stream = await client.chat.completions.create(
        model="sim-small", messages=MESSAGES, max_tokens=40, stream=True
    )
    chunks = [await stream.__anext__()]
    doc = (await call(running, "/api/status", headers=AUTH))[2]
    busy = next(
        ep for p in doc["pools"] if p["name"] == "small" for ep in p["endpoints"] if ep["inflight"]
    )
    other = "sim://a2" if busy["name"] == "sim://a1" else "sim://a1"
    status, _, body = await call(running, f"/api/endpoints/small/{busy['id']}/drain", "POST", AUTH)
    assert status == 200
    assert body == {"pool": "small", "endpoint": busy["name"], "drained": True, "inflight": 1}
    # New requests all go to the other endpoint while the stream keeps going.
    for _ in range(8):
        await client.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=1)
    doc = (await call(running, "/api/status", headers=AUTH))[2]
    drained = _endpoint(doc, "small/" + busy["name"])
    assert (drained["health"], drained["drained"], drained["inflight"]) == ("drained", True, 1)
    assert drained["requests"] == 0
    assert _endpoint(doc, "small/" + other)["requests"] == 8
    async for chunk in stream:
        chunks.append(chunk)
    assert chunks[-1].choices[0].finish_reason == "length"
    doc = (await call(running, "/api/status", headers=AUTH))[2]
    assert _endpoint(doc, "small/" + busy["name"])["requests"] == 1  # the stream, finished
    assert _endpoint(doc, "small/" + busy["name"])["failures"] == 0
    # Undrain (by its percent-encoded name this time): it takes traffic again.
    quoted = busy["name"].replace(":", "%3A").replace("/", "%2F")
    status, _, body = await call(running, f"/api/endpoints/small/{quoted}/undrain", "POST", AUTH)
    assert (status, body["drained"]) == (200, False)
    for _ in range(20):
        await client.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=1)
    doc = (await call(running, "/api/status", headers=AUTH))[2]
    assert _endpoint(doc, "small/" + busy["name"])["requests"] > 1


async def test_draining_every_endpoint_of_a_pool_refuses_with_503(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(_with_token())
    # Both name forms: the sim's name alone, and the raw name with its slashes.
    assert (await call(running, "/api/endpoints/small/a1/drain", "POST", AUTH))[0] == 200
    assert (await call(running, "/api/endpoints/small/sim://a2/drain", "POST", AUTH))[0] == 200
    import openai

    with pytest.raises(openai.InternalServerError) as caught:
        await running.client().chat.completions.create(
            model="sim-small", messages=MESSAGES, max_tokens=1
        )
    assert caught.value.status_code == 503
    # The other pool is untouched.
    reply = await running.client().chat.completions.create(
        model="sim-large", messages=MESSAGES, max_tokens=1
    )
    assert reply.choices


async def test_drain_unknown_pool_or_endpoint_is_404(start_gateway: Callable[..., Any]) -> None:
    running: Running = await start_gateway(_with_token())
    for path in ("/api/endpoints/nope/ep0/drain", "/api/endpoints/small/ep7/drain"):
        status, _, body = await call(running, path, "POST", AUTH)
        assert status == 404
        _assert_openai_error(body, "not_found")


async def test_a_drain_survives_a_reload(tmp_path: Path) -> None:
    data = {**BASE_CONFIG, "server": {**BASE_CONFIG["server"], "admin_token": TOKEN}}
    path = tmp_path / "headway.yaml"
    gateway = await _start_from_file(path, data)
    running = Running(gateway)
    try:
        assert (await call(running, "/api/endpoints/small/ep1/drain", "POST", AUTH))[0] == 200
        tenants = [dict(t) for t in data["tenants"]]
        tenants[1]["rpm"] = 10
        _write_yaml(path, {**data, "tenants": tenants})
        assert (await call(running, "/api/reload", "POST", AUTH))[0] == 200
        doc = (await call(running, "/api/status", headers=AUTH))[2]
        assert _endpoint(doc, "small/sim://a2")["drained"] is True
        assert _endpoint(doc, "small/sim://a1")["drained"] is False
        client = running.client()
        for _ in range(5):
            await client.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=1)
        doc = (await call(running, "/api/status", headers=AUTH))[2]
        assert _endpoint(doc, "small/sim://a2")["requests"] == 0
        assert _endpoint(doc, "small/sim://a1")["requests"] == 5
    finally:
        await gateway.stop(1.0)


# -- the real process --------------------------------------------------------------------------


async def test_headway_serve_reloads_its_file_through_the_admin_api(tmp_path: Path) -> None:
    """``headway serve CONFIG`` with the token from the environment: the admin API re-reads
    CONFIG, and the audit line reaches the process log."""
    api, admin = free_port(), free_port()
    data = {
        **BASE_CONFIG,
        "server": {
            "listen": f"127.0.0.1:{api}",
            "admin_listen": f"127.0.0.1:{admin}",
            "admin_token": "${HEADWAY_ADMIN_TOKEN}",
        },
    }
    path = tmp_path / "headway.yaml"
    _write_yaml(path, data)
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "HEADWAY_ADMIN_TOKEN": TOKEN, "HEADWAY_LOG_LEVEL": "INFO"}
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "headway", "serve", str(path), "--no-watch",
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
    admin_url = f"http://127.0.0.1:{admin}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = await asyncio.to_thread(
                    _call_sync, admin_url + "/healthz", "GET", {}
                )
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        status, _, body = await asyncio.to_thread(
            _call_sync, admin_url + "/api/reload", "POST", AUTH
        )
        assert status == 200, body
        assert body["config"]["source"] == str(path)
        assert body["config"]["reloads"] == 1
        assert body["changes"] == []
        refused = await asyncio.to_thread(_call_sync, admin_url + "/api/reload", "POST", {})
        assert refused[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    text = log_path.read_text()
    assert '"action":"reload"' in text
    assert '"outcome":"ok"' in text
    assert '"outcome":"unauthorized"' in text
    assert TOKEN not in text
