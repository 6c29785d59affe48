"""``headway top --once`` against a real gateway: one frame of the live numbers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from conftest import BASE_CONFIG, Running, make_config
from headway.cli import main

TOKEN = "top-admin-token-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hello"}]


async def _gateway(start_gateway: Callable[..., Any]) -> Running:
    server = {**BASE_CONFIG["server"], "admin_token": TOKEN}
    running: Running = await start_gateway(make_config(server=server, observe={"metrics": True}))
    client = running.client()
    for _ in range(4):
        await client.chat.completions.create(model="sim-small", messages=MESSAGES, max_tokens=4)
    return running


async def test_top_once_prints_one_frame(
    start_gateway: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    running = await _gateway(start_gateway)
    args = ["top", "--once", "--url", running.admin_url, "--token", TOKEN]
    code = await asyncio.to_thread(main, args)
    out = capsys.readouterr().out
    assert code == 0
    assert "\x1b[" not in out  # no escapes in --once output
    assert "requests 4 total" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if "sim://" in line}
    assert set(rows) == {"sim://a1", "sim://a2", "sim://b1"}
    pool, _, health, breaker, inflight, *_, requests, failures = rows["sim://a1"]
    assert (pool, health, breaker, inflight, failures) == ("small", "healthy", "closed", "0", "0")
    assert int(requests) + int(rows["sim://a2"][-2]) == 4
    assert any(line.startswith("free") and "0/3" in line for line in out.splitlines())


async def test_top_reads_the_token_from_the_environment_and_fails_clearly_without(
    start_gateway: Callable[..., Any],
) -> None:
    running = await _gateway(start_gateway)
    command = [sys.executable, "-c", "from headway.cli import main; raise SystemExit(main())"]
    command += ["top", "--once", "--url", running.admin_url]
    env = {k: v for k, v in os.environ.items() if k != "HEADWAY_ADMIN_TOKEN"}

    def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env={**env, **extra}, capture_output=True, text=True, timeout=60
        )

    ok = await asyncio.to_thread(run, {"HEADWAY_ADMIN_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stderr
    assert "sim://b1" in ok.stdout
    refused = await asyncio.to_thread(run, {})
    assert refused.returncode == 1
    assert "needs a token" in refused.stderr
    assert refused.stdout == ""


def test_top_says_when_the_gateway_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    from servers import free_port

    code = main(["top", "--once", "--url", f"http://127.0.0.1:{free_port()}"])
    assert code == 1
    assert "cannot reach" in capsys.readouterr().err
