"""A gateway that runs from config versions: real SQLite files and the real PostgreSQL, real
sockets, real sims, the official ``openai`` client, and ``headway serve`` / ``headway config``
as operators run them.

Behaviour under test: v1 serves only ``sim-small``; v2 adds ``sim-large``. A request for
``sim-large`` tells which version is live (404 under v1, an answer under v2).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
import yaml

from conftest import BASE_CONFIG, Running
from headway.core import ManualClock
from headway.gateway._app import Gateway
from headway.gateway._control import ControlPlane, Served, Startup, startup
from headway.rollout import ConfigVersions, LastKnownGood, NoActiveConfig
from headway.store import ControlStore, open_control_store, sha256_text
from servers import free_port, require_postgres

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MESSAGES: Any = [{"role": "user", "content": "hello"}]


def v1_text(**server: Any) -> str:
    """BASE_CONFIG without sim-large (its pool stays, unused)."""
    data = {
        **BASE_CONFIG,
        "server": {**BASE_CONFIG["server"], "admin_token": TOKEN, **server},
        "models": [BASE_CONFIG["models"][0]],
    }
    return yaml.safe_dump(data, sort_keys=False)


def v2_text(**server: Any) -> str:
    data = {**BASE_CONFIG, "server": {**BASE_CONFIG["server"], "admin_token": TOKEN, **server}}
    return yaml.safe_dump(data, sort_keys=False)


async def large_served(running: Running) -> bool:
    """Whether sim-large answers (v2) or does not exist (v1)."""
    try:
        await running.client().chat.completions.create(model="sim-large", messages=MESSAGES)
    except openai.NotFoundError:
        return False
    return True


def _call_sync(
    url: str, method: str, headers: dict[str, str], body: bytes | None
) -> tuple[int, dict[str, str], Any]:
    if method == "POST" and body is None:
        body = b""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, head, raw = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, dict(error.headers), error.read()
    ctype = head.get("content-type", "")
    return status, head, json.loads(raw) if ctype.startswith("application/json") else raw


async def call(
    base: str,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    return await asyncio.to_thread(_call_sync, base + path, method, dict(headers or {}), body)


# -- in-process gateways from a store ------------------------------------------------------------


class FromStore:
    """A gateway started the way ``headway serve --store`` starts one, and its control plane."""

    def __init__(self, running: Running, control: ControlPlane, start: Startup) -> None:
        self.running = running
        self.control = control
        self.start = start

    @property
    def admin(self) -> str:
        return self.running.admin_url


@pytest.fixture
async def from_store() -> AsyncIterator[Callable[..., Any]]:
    """``await from_store(url, last_good, seed=None, poll=True)``, stopped after the test."""
    started: list[tuple[Gateway, ControlPlane]] = []

    async def start(
        url: str,
        last_good: Path,
        seed: str | None = None,
        *,
        poll: bool = True,
        interval: float = 0.2,
    ) -> FromStore:
        store = open_control_store(url)
        lkg = LastKnownGood(last_good)
        begun = await startup(store, lkg, seed, "seed.yaml" if seed else None)
        gateway = Gateway(begun.config)
        await gateway.start(api_port=0, admin_port=0)
        control = ControlPlane(store, lkg, begun.served, poll_interval=interval)
        control.attach(gateway, poll=poll)
        started.append((gateway, control))
        return FromStore(Running(gateway), control, begun)

    yield start
    for gateway, control in started:
        await control.aclose()
        await gateway.stop(1.0)


async def apply(url: str, text: str, message: str, last_good: Path | None = None) -> int:
    """Apply ``text`` the way ``headway config apply`` does (another process, in effect)."""
    store = open_control_store(url)
    try:
        result = await ConfigVersions(store, last_good=last_good).apply(
            text, author="ana", message=message
        )
    finally:
        await store.aclose()
    return result.version.number


async def eventually(check: Callable[[], Any], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- the served version follows the store --------------------------------------------------------


async def test_a_new_version_is_picked_up_by_polling_and_rollback_restores_v1(
    tmp_path: Path, from_store: Callable[..., Any]
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    lkg = tmp_path / "lkg.yaml"
    assert await apply(url, v1_text(), "first") == 1
    gw: FromStore = await from_store(url, lkg)
    assert gw.start.served.source == "store"
    assert gw.start.served.version == 1
    assert not await large_served(gw.running)
    models_v1 = [m.id async for m in gw.running.client().models.list()]

    assert await apply(url, v2_text(), "add sim-large") == 2
    started = time.monotonic()
    await eventually(lambda: large_served(gw.running))
    assert time.monotonic() - started < 5.0  # poll interval 0.2 s, generous bound
    assert gw.control.served.version == 2
    assert gw.control.served.message == "add sim-large"
    saved = LastKnownGood(lkg).read()
    assert saved is not None
    assert (saved.number, saved.yaml_text) == (2, v2_text())

    store = open_control_store(url)
    try:
        await ConfigVersions(store).rollback(author="ana")
    finally:
        await store.aclose()

    async def rolled_back() -> bool:
        return gw.control.served.version == 3

    await eventually(rolled_back)
    assert not await large_served(gw.running)
    assert [m.id async for m in gw.running.client().models.list()] == models_v1
    assert gw.control.served.sha256 == sha256_text(v1_text())
    assert gw.running.gateway.config == gw.start.config  # exactly v1 again
    saved = LastKnownGood(lkg).read()
    assert saved is not None
    assert saved.number == 3


async def test_a_version_that_does_not_validate_here_is_skipped_and_reported(
    tmp_path: Path, from_store: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    await apply(url, v1_text(), "first")
    gw: FromStore = await from_store(url, tmp_path / "lkg.yaml", poll=False)
    # Valid where it was applied (that env has the variable), not on this gateway's host.
    text = v2_text().replace(TOKEN, "${HW_ONLY_ON_THE_OPERATORS_LAPTOP}")
    store = open_control_store(url)
    try:
        await ConfigVersions(store, env={"HW_ONLY_ON_THE_OPERATORS_LAPTOP": "x" * 32}).apply(
            text, author="ana", message="needs an env var"
        )
    finally:
        await store.aclose()
    with caplog.at_level(logging.ERROR, logger="headway.control"):
        assert await gw.control.refresh() is False
        assert await gw.control.refresh() is False  # tried once, not again every poll
    errors = [r.getMessage() for r in caplog.records if r.name == "headway.control"]
    assert len(errors) == 1, errors
    assert "config version 2 does not validate here" in errors[0]
    assert "HW_ONLY_ON_THE_OPERATORS_LAPTOP" in errors[0]
    assert gw.control.served.version == 1
    assert not await large_served(gw.running)
    status, _, body = await call(gw.admin, "/api/config", headers=AUTH)
    assert status == 200
    assert body["version"] == 1
    assert body["rejected"]["version"] == 2
    assert "does not validate here" in body["rejected"]["error"]
    await apply(url, v2_text(), "fixed")  # a newer version is tried again
    assert await gw.control.refresh() is True
    assert gw.control.served.version == 3
    assert gw.control.rejected is None


# -- store unreachable: the last known good file -------------------------------------------------


def _closed_postgres() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2"


@pytest.mark.parametrize("kind", ["sqlite-missing-dir", "postgres-closed-port"])
async def test_an_unreachable_store_starts_from_last_known_good_and_serves(
    kind: str, tmp_path: Path, from_store: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    lkg = tmp_path / "lkg.yaml"
    good = f"sqlite:///{tmp_path}/control.db"
    await apply(good, v1_text(), "first", last_good=lkg)
    await apply(good, v2_text(), "second", last_good=lkg)
    if kind == "sqlite-missing-dir":
        url = f"sqlite:///{tmp_path}/no/such/dir/control.db"
    else:
        url = _closed_postgres()
    with caplog.at_level(logging.WARNING, logger="headway.control"):
        gw: FromStore = await from_store(url, lkg, poll=False)
    served = gw.start.served
    assert (served.source, served.version) == ("last-known-good", 2)
    assert "store unavailable" in served.reason
    assert any("last known good" in r.getMessage() for r in caplog.records)
    assert await large_served(gw.running)  # v2's behaviour
    assert await gw.control.refresh() is False
    status, _, body = await call(gw.admin, "/api/config", headers=AUTH)
    assert status == 200
    assert (body["source"], body["version"]) == ("last-known-good", 2)
    assert body["store_error"]
    assert body["sha256"] == sha256_text(v2_text())


async def test_no_store_and_no_last_known_good_is_a_clear_error(tmp_path: Path) -> None:
    store = open_control_store(f"sqlite:///{tmp_path}/no/such/dir/control.db")
    try:
        with pytest.raises(NoActiveConfig, match=r"store unavailable.*no last known good file"):
            await startup(store, LastKnownGood(tmp_path / "lkg.yaml"))
    finally:
        await store.aclose()


def _headway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HEADWAY_STORE": "", **(env or {})},
    )


def test_serve_without_any_config_to_serve_exits_1_saying_why(tmp_path: Path) -> None:
    done = _headway(
        "serve",
        "--store",
        f"sqlite:///{tmp_path}/no/such/dir/control.db",
        "--last-good",
        str(tmp_path / "lkg.yaml"),
    )
    assert done.returncode == 1, done.stderr
    assert "headway: no config to serve" in done.stderr
    assert "unable to open database file" in done.stderr
    assert f"no last known good file at {tmp_path / 'lkg.yaml'}" in done.stderr


# -- a seed file ---------------------------------------------------------------------------------


async def test_a_seed_file_fills_an_empty_store_and_is_ignored_afterwards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    lkg = LastKnownGood(tmp_path / "lkg.yaml")
    store: ControlStore = open_control_store(url)
    try:
        first = await startup(store, lkg, v1_text(), "v1.yaml")
        assert (first.served.source, first.served.version) == ("store", 1)
        assert first.served.author == "headway serve"
        assert first.served.message == "seeded from v1.yaml"
        with caplog.at_level(logging.WARNING, logger="headway.control"):
            again = await startup(store, lkg, v2_text(), "v2.yaml")
        assert again.served.version == 1  # the store wins
        assert again.config == first.config
        assert "v2.yaml differs from the store's latest version 1" in caplog.text
        assert len(await store.versions()) == 1
    finally:
        await store.aclose()
    # Store unreachable, no last known good file: the seed file itself, saying why.
    down = open_control_store(f"sqlite:///{tmp_path}/missing/control.db")
    try:
        seeded = await startup(down, LastKnownGood(tmp_path / "none.yaml"), v2_text(), "v2.yaml")
    finally:
        await down.aclose()
    assert seeded.served == Served(
        "file", None, sha256_text(v2_text()), reason=seeded.served.reason
    )
    assert "store unavailable" in seeded.served.reason


# -- the admin API -------------------------------------------------------------------------------


async def test_admin_api_apply_rollback_history_diff_and_access(
    tmp_path: Path, from_store: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    await apply(url, v1_text(), "first")
    # No polling: every change below must take effect through the API call itself.
    gw: FromStore = await from_store(url, tmp_path / "lkg.yaml", poll=False)
    admin = gw.admin

    # Access: reads need the token once one is set; writes always do, and are audit-logged.
    status, _, body = await call(admin, "/api/config")
    assert status == 401
    caplog.set_level(logging.INFO, logger="headway.audit")
    status, _, body = await call(admin, "/api/config", "POST", body=v2_text().encode())
    assert status == 401
    assert '"action":"config.apply","target":"config","outcome":"unauthorized"' in caplog.text
    assert gw.control.served.version == 1

    status, _, body = await call(admin, "/api/config", headers=AUTH)
    assert status == 200
    assert body["version"] == 1
    assert body["source"] == "store"
    assert body["author"] == "ana"
    assert body["message"] == "first"
    assert body["sha256"] == sha256_text(v1_text())

    # A bad config: 400 with every error's path, nothing stored, nothing served.
    bad = v2_text().replace("pool: large", "pool: nowhere").replace("seed: 3", "seed: -x")
    headers = {**AUTH, "x-headway-message": "broken", "content-type": "application/yaml"}
    status, _, body = await call(admin, "/api/config", "POST", headers, bad.encode())
    assert status == 400
    assert body["error"]["code"] == "invalid_config"
    paths = {e["path"] for e in body["error"]["errors"]}
    assert paths == {"models[1].pool", "sims[2].seed"}
    assert "nothing changed" in body["error"]["message"]
    assert [v.number for v in await gw.control.versions.history()] == [1]
    assert gw.control.served.version == 1
    assert not await large_served(gw.running)
    audit = await gw.control.store.audit_log()
    assert audit[0].action == "config.apply.rejected"
    assert audit[0].detail["errors"] == 2
    assert '"outcome":"failed: invalid_config"' in caplog.text

    # A message is required.
    status, _, body = await call(admin, "/api/config", "POST", AUTH, v2_text().encode())
    assert status == 400
    assert body["error"]["param"] == "message"

    # A good one: stored and served at once.
    headers = {**AUTH, "x-headway-message": "add sim-large", "x-headway-author": "bo"}
    status, _, body = await call(admin, "/api/config", "POST", headers, v2_text().encode())
    assert status == 200, body
    assert body["changed"] is True
    assert body["live"] is True
    assert body["version"]["number"] == 2
    assert body["version"]["author"] == "bo"
    assert any(c.startswith("models") for c in body["version"]["changes"])
    assert await large_served(gw.running)
    audit = await gw.control.store.audit_log()
    assert (audit[0].actor, audit[0].action, audit[0].target) == ("bo", "config.apply", "config/2")

    # The same text again as JSON: nothing changes.
    payload = json.dumps({"yaml": v2_text(), "message": "again"}).encode()
    headers = {**AUTH, "content-type": "application/json"}
    status, _, body = await call(admin, "/api/config", "POST", headers, payload)
    assert status == 200
    assert (body["changed"], body["version"]["number"]) == (False, 2)

    # History, one version's text, diffs.
    status, _, body = await call(admin, "/api/config/versions", headers=AUTH)
    assert [v["number"] for v in body["versions"]] == [2, 1]
    assert [v["message"] for v in body["versions"]] == ["add sim-large", "first"]
    status, head, text = await call(admin, "/api/config/versions/1", headers=AUTH)
    assert status == 200
    assert head["content-type"].startswith("application/yaml")
    assert text.decode() == v1_text()
    assert head["x-headway-config-sha256"] == sha256_text(v1_text())
    for missing in ("/api/config/versions/9", "/api/config/versions/x"):
        status, _, body = await call(admin, missing, headers=AUTH)
        assert status == 404, missing
    status, _, body = await call(admin, "/api/config/diff", headers=AUTH)
    assert (body["from"], body["to"]) == (1, 2)
    assert body["changes"]
    assert all(isinstance(c, str) for c in body["changes"])
    assert any(line.startswith("+") and "sim-large" in line for line in body["text"])
    status, _, back = await call(admin, "/api/config/diff?from=2&to=1", headers=AUTH)
    assert (back["from"], back["to"]) == (2, 1)
    assert any(line.startswith("-") and "sim-large" in line for line in back["text"])
    status, _, body = await call(admin, "/api/config/diff?from=0", headers=AUTH)
    assert status == 400

    # Rollback: default the previous version, served at once; then to a named version.
    status, _, body = await call(admin, "/api/config/rollback", "POST", AUTH)
    assert status == 200, body
    assert body["version"]["number"] == 3
    assert body["version"]["message"] == "rollback to 1"
    assert body["live"] is True
    assert not await large_served(gw.running)
    assert gw.control.served.sha256 == sha256_text(v1_text())
    status, _, body = await call(admin, "/api/config/rollback?version=2", "POST", AUTH)
    assert (status, body["version"]["number"]) == (200, 4)
    assert await large_served(gw.running)
    status, _, body = await call(admin, "/api/config/rollback?version=77", "POST", AUTH)
    assert status == 404
    assert body["error"]["code"] == "version_not_found"
    # /api/status carries the served version too.
    status, _, body = await call(admin, "/api/status", headers=AUTH)
    assert body["config"]["version"] == 4


async def test_a_gateway_from_a_file_answers_config_routes_without_versions(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway()
    status, _, body = await call(running.admin_url, "/api/config")
    assert status == 200
    assert (body["source"], body["version"]) == ("embedded", None)
    for path in ("/api/config/versions", "/api/config/versions/1", "/api/config/diff"):
        status, _, body = await call(running.admin_url, path)
        assert status == 409, path
        assert body["error"]["code"] == "no_control_store"


# -- PostgreSQL: two instances share one store ---------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    base = require_postgres()
    schema = f"hw_test_{uuid.uuid4().hex[:12]}"
    yield f"{base}?schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_postgres_an_apply_on_one_instance_reaches_the_other_by_polling(
    pg_url: str, tmp_path: Path, from_store: Callable[..., Any]
) -> None:
    await apply(pg_url, v1_text(), "first")
    a: FromStore = await from_store(pg_url, tmp_path / "a.yaml", poll=False)
    b: FromStore = await from_store(pg_url, tmp_path / "b.yaml")
    assert a.start.served.version == b.start.served.version == 1
    headers = {**AUTH, "x-headway-message": "add sim-large"}
    status, _, body = await call(a.admin, "/api/config", "POST", headers, v2_text().encode())
    assert (status, body["live"]) == (200, True)
    assert await large_served(a.running)
    await eventually(lambda: large_served(b.running))
    assert b.control.served.message == "add sim-large"
    saved = LastKnownGood(tmp_path / "b.yaml").read()
    assert saved is not None
    assert saved.number == 2


# -- `headway serve --store` and `headway config` as an operator runs them -----------------------


async def test_headway_serve_from_a_sqlite_store_follows_cli_applies(tmp_path: Path) -> None:
    api, admin = free_port(), free_port()
    ports = {"listen": f"127.0.0.1:{api}", "admin_listen": f"127.0.0.1:{admin}"}
    url = f"sqlite:///{tmp_path}/control.db"
    lkg = str(tmp_path / "lkg.yaml")
    (tmp_path / "v1.yaml").write_text(v1_text(**ports))
    (tmp_path / "v2.yaml").write_text(v2_text(**ports))
    store_args = ["--store", url, "--last-good", lkg]
    cli = ("config", "apply", str(tmp_path / "v1.yaml"), "-m", "first", *store_args)
    done = await asyncio.to_thread(_headway, *cli)
    assert done.returncode == 0, done.stderr
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "headway", "serve", *store_args, "--poll", "0.3"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HEADWAY_STORE": "", "HEADWAY_LOG_LEVEL": "INFO"},
        )
    try:
        deadline = time.monotonic() + 30
        while "serving on" not in log_path.read_text():
            assert proc.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        running = _Remote(api)
        assert not await large_served(running)  # type: ignore[arg-type]
        base = f"http://127.0.0.1:{admin}"
        status, _, body = await call(base, "/api/config", headers=AUTH)
        assert (status, body["version"], body["source"]) == (200, 1, "store")

        cli = ("config", "apply", str(tmp_path / "v2.yaml"), "-m", "two", *store_args)
        done = await asyncio.to_thread(_headway, *cli)
        assert done.returncode == 0, done.stderr
        await eventually(lambda: large_served(running))  # type: ignore[arg-type]
        done = await asyncio.to_thread(_headway, "config", "rollback", *store_args)
        assert done.returncode == 0, done.stderr

        async def back_to_v1() -> bool:
            _, _, body = await call(base, "/api/config", headers=AUTH)
            return bool(body["version"] == 3)

        await eventually(back_to_v1)
        assert not await large_served(running)  # type: ignore[arg-type]
        _, _, body = await call(base, "/api/config", headers=AUTH)
        assert body["sha256"] == sha256_text(v1_text(**ports))
        assert "serving config version 2 (two)" in log_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log_path.read_text()


class _Remote:
    """Just enough of :class:`Running` for :func:`large_served` against another process."""

    def __init__(self, api: int) -> None:
        self.base_url = f"http://127.0.0.1:{api}/v1"

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key="sk-pro", max_retries=0, timeout=10.0
        )


# -- staged config rollout -----------------------------------------------------------------------

TEAMS = [{"name": f"t{i}", "keys": [f"sk-team-{i}"], "models": ["*"]} for i in range(12)]


def _with_teams(text: str) -> str:
    data = yaml.safe_load(text)
    data["tenants"] = [*data["tenants"], *TEAMS]
    return yaml.safe_dump(data, sort_keys=False)


async def _large_for(gw: FromStore, tenant: int) -> bool:
    try:
        await gw.running.client(f"sk-team-{tenant}").chat.completions.create(
            model="sim-large", messages=MESSAGES
        )
    except openai.NotFoundError:
        return False
    return True


async def test_a_staged_config_serves_a_sticky_share_of_tenants_then_promotes_or_aborts(
    tmp_path: Path, from_store: Callable[..., Any]
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    one, two = _with_teams(v1_text()), _with_teams(v2_text())
    await apply(url, one, "first")
    gw: FromStore = await from_store(url, tmp_path / "lkg.yaml", poll=False)
    admin, gateway = gw.admin, gw.running.gateway
    live_sims = dict(gateway._sims)

    headers = {**AUTH, "x-headway-message": "try sim-large", "x-headway-weight": "50"}
    status, _, body = await call(admin, "/api/config/stage", "POST", headers, two.encode())
    assert status == 200, body
    chosen = {int(t[1:]) for t in body["staged"]["candidate_tenants"] if t.startswith("t")}
    assert 0 < len(chosen) < len(TEAMS)  # this sample of tenants lands on both sides
    for _ in range(2):  # sticky: the same tenants, every time
        assert {t for t in range(len(TEAMS)) if await _large_for(gw, t)} == chosen
    assert [v.number for v in await gw.control.versions.history()] == [1]  # nothing stored

    # The same candidate again only moves the weight; a different one is refused.
    headers["x-headway-weight"] = "100"
    status, _, body = await call(admin, "/api/config/stage", "POST", headers, two.encode())
    assert status == 200
    assert all([await _large_for(gw, t) for t in range(len(TEAMS))])
    status, _, body = await call(admin, "/api/config/stage", "POST", headers, one.encode())
    assert (status, body["error"]["code"]) == (409, "stage_conflict")
    status, _, body = await call(admin, "/api/config/stage", headers=AUTH)
    assert body["staged"]["weight"] == 100
    assert body["staged"]["candidate_requests"] >= 2 * len(chosen) + len(TEAMS)

    # Promote: the candidate becomes version 2, served to everyone.
    status, _, body = await call(admin, "/api/config/stage/promote", "POST", AUTH)
    assert status == 200, body
    assert (body["version"]["number"], body["live"]) == (2, True)
    assert body["version"]["message"] == "try sim-large"
    assert gateway.staged is None
    assert gw.control.served.version == 2
    assert all([await _large_for(gw, t) for t in range(len(TEAMS))])

    # Stage an old version for everyone, then abort: back to version 2, nothing stored.
    payload = json.dumps({"version": 1, "weight": 100}).encode()
    json_headers = {**AUTH, "content-type": "application/json"}
    status, _, body = await call(admin, "/api/config/stage", "POST", json_headers, payload)
    assert status == 200, body
    assert body["staged"]["message"] == "stage version 1"
    assert not any([await _large_for(gw, t) for t in range(len(TEAMS))])
    status, _, body = await call(admin, "/api/config/stage/abort", "POST", AUTH)
    assert status == 200
    assert all([await _large_for(gw, t) for t in range(len(TEAMS))])
    assert [v.number for v in await gw.control.versions.history()] == [2, 1]
    status, _, body = await call(admin, "/api/config/stage/abort", "POST", AUTH)
    assert (status, body["error"]["code"]) == (409, "stage_conflict")
    assert gateway._sims == live_sims  # staging never touched the live sims


async def test_staging_refuses_bad_input_and_keeps_live_sims(
    tmp_path: Path, from_store: Callable[..., Any]
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    await apply(url, _with_teams(v1_text()), "first")
    gw: FromStore = await from_store(url, tmp_path / "lkg.yaml", poll=False)
    admin = gw.admin
    changed_sim = _with_teams(v2_text()).replace("seed: 1", "seed: 11")
    headers = {**AUTH, "x-headway-message": "m"}
    status, _, body = await call(admin, "/api/config/stage", "POST", headers, changed_sim.encode())
    assert (status, body["error"]["param"]) == (400, "weight")
    headers["x-headway-weight"] = "100"
    bad = changed_sim.replace("pool: large", "pool: nowhere")
    status, _, body = await call(admin, "/api/config/stage", "POST", headers, bad.encode())
    assert status == 400
    assert [e["path"] for e in body["error"]["errors"]] == ["models[1].pool"]
    assert gw.running.gateway.staged is None
    live_a1 = gw.running.sim("a1")
    status, _, body = await call(admin, "/api/config/stage", "POST", headers, changed_sim.encode())
    assert status == 200, body
    staged = gw.running.gateway.staged
    assert staged is not None
    assert staged._sims  # its own a1 (seed changed); the live one is untouched
    assert gw.running.sim("a1") is live_a1
    await gw.running.client("sk-team-0").chat.completions.create(
        model="sim-small", messages=MESSAGES
    )
    status, _, _ = await call(admin, "/api/config/stage/abort", "POST", AUTH)
    assert status == 200
    assert gw.running.sim("a1") is live_a1


async def test_the_poller_waits_its_interval_on_the_clock_and_a_poke_polls_at_once(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    await apply(url, v1_text(), "first")
    store = open_control_store(url)
    lkg = LastKnownGood(tmp_path / "lkg.yaml")
    begun = await startup(store, lkg)
    gateway = Gateway(begun.config)
    await gateway.start(api_port=0, admin_port=0)
    clock = ManualClock()
    control = ControlPlane(store, lkg, begun.served, poll_interval=60.0, clock=clock)
    control.attach(gateway)
    try:

        async def on(version: int) -> bool:
            return control.served.version == version

        await apply(url, v2_text(), "second")
        await asyncio.sleep(0.3)
        assert control.served.version == 1  # not before the interval
        await clock.advance(59.0)
        await asyncio.sleep(0.3)
        assert control.served.version == 1
        await clock.advance(1.0)
        await eventually(lambda: on(2))
        await apply(url, v1_text(), "third")
        control.poke()  # SIGHUP: now, without waiting for the clock
        await eventually(lambda: on(3))
    finally:
        await control.aclose()
        await gateway.stop(1.0)


async def test_headway_serve_config_with_control_url_seeds_the_store(tmp_path: Path) -> None:
    api, admin = free_port(), free_port()
    data = yaml.safe_load(v1_text(listen=f"127.0.0.1:{api}", admin_listen=f"127.0.0.1:{admin}"))
    data["state"] = {"control_url": f"sqlite:///{tmp_path}/control.db"}
    config = tmp_path / "headway.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "headway", "serve", str(config)),
            *("--last-good", str(tmp_path / "lkg.yaml")),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HEADWAY_STORE": "", "HEADWAY_LOG_LEVEL": "INFO"},
        )
    try:
        deadline = time.monotonic() + 30
        while "serving on" not in log_path.read_text():
            assert proc.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        status, _, body = await call(f"http://127.0.0.1:{admin}", "/api/config", headers=AUTH)
        assert status == 200
        assert (body["version"], body["source"]) == (1, "store")
        assert (body["author"], body["message"]) == ("headway serve", f"seeded from {config}")
        assert body["sha256"] == sha256_text(config.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log_path.read_text()


async def test_headway_serve_with_store_keeps_rollout_state_in_that_store(tmp_path: Path) -> None:
    # --store alone (the config names no state.control_url): rollouts persist there too, over
    # the worker's one connection to it.
    api, admin = free_port(), free_port()
    data = yaml.safe_load(v2_text(listen=f"127.0.0.1:{api}", admin_listen=f"127.0.0.1:{admin}"))
    data["models"][1]["canary"] = {"pool": "small", "upstream_model": "small", "weight": 0}
    config = tmp_path / "headway.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    url = f"sqlite:///{tmp_path}/control.db"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "headway", "serve", str(config), "--store", url),
            *("--last-good", str(tmp_path / "lkg.yaml")),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HEADWAY_STORE": "", "HEADWAY_LOG_LEVEL": "INFO"},
        )
    try:
        deadline = time.monotonic() + 30
        while "serving on" not in log_path.read_text():
            assert proc.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        spec = json.dumps({"steps": [{"set_weight": 10}, {"pause": {}}]}).encode()
        base = f"http://127.0.0.1:{admin}"
        status, _, body = await call(base, "/api/rollouts/sim-large", "POST", AUTH, spec)
        assert (status, body["phase"], body["weight"]) == (201, "paused", 10), body
        store = open_control_store(url)
        try:
            saved = await store.load("rollout/sim-large")
        finally:
            await store.aclose()
        assert saved is not None
        assert saved["weight"] == 10
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log_path.read_text()
