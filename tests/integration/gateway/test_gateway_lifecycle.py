"""``headway`` as an operator runs it: a real ``headway serve CONFIG`` process (graceful SIGTERM
drain, SIGHUP and file-watch reloads under load, bad reloads refused), the other sub-commands'
exit codes and output, and the embedded demo config's published names.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from conftest import BASE_CONFIG, Running
from headway.config import load_config
from headway.core import Priority
from headway.gateway._app import Gateway
from servers import free_port

MESSAGES: Any = [{"role": "user", "content": "hello there"}]
# 20 tokens/s: a 20-token stream takes about a second, so a signal lands in its middle.
SLOW_SIM = {"name": "s1", "models": ["slow"], "ttft": 0.01, "tokens_per_second": 20, "seed": 4}
DRAIN_TIMEOUT = 5.0


def config_data(api: int, admin: int, **overrides: Any) -> dict[str, Any]:
    """BASE_CONFIG on fixed ports plus a slow model, with top-level sections replaced."""
    data: dict[str, Any] = {
        **BASE_CONFIG,
        "server": {
            "listen": f"127.0.0.1:{api}",
            "admin_listen": f"127.0.0.1:{admin}",
            "drain_timeout": DRAIN_TIMEOUT,
        },
        "sims": [*BASE_CONFIG["sims"], SLOW_SIM],
        "pools": [*BASE_CONFIG["pools"], {"name": "slow", "endpoints": [{"url": "sim://s1"}]}],
        "models": [
            *BASE_CONFIG["models"],
            {"name": "sim-slow", "pool": "slow", "upstream_model": "slow"},
        ],
    }
    data.update(overrides)
    return data


class Served:
    """One ``headway serve`` process; its stdout and stderr go to ``log_path``."""

    def __init__(self, proc: asyncio.subprocess.Process, config: Path, api: int, log: Path):
        self.proc = proc
        self.config = config
        self.api = api
        self.log_path = log

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api}/v1"

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def write(self, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else yaml.safe_dump(data)
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text, "utf-8")
        tmp.replace(self.config)  # atomic, as an operator's tooling would do

    def client(self, key: str = "sk-pro") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=10)

    async def wait_exit(self, within: float) -> int | None:
        try:
            return await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            return None

    async def wait_log(self, text: str, within: float = 5.0, count: int = 1) -> None:
        found = await until(lambda: self.log().count(text) >= count, within)
        assert found, f"{text!r} not logged {count} time(s):\n{self.log()}"


async def until(predicate: Callable[[], bool], within: float) -> bool:
    """Poll ``predicate`` every 20 ms for up to ``within`` seconds; its last value."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """``await serve(data, *args)``: a ready ``headway serve`` process, killed after the test."""
    procs: list[asyncio.subprocess.Process] = []
    logs: list[Any] = []

    async def start(data: dict[str, Any], *args: str) -> Served:
        config = tmp_path / "headway.yaml"
        config.write_text(yaml.safe_dump(data), "utf-8")
        log_path = tmp_path / "serve.log"
        log = log_path.open("wb")
        logs.append(log)
        env = {**os.environ, "HEADWAY_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "headway",
            "serve",
            str(config),
            *args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        procs.append(proc)
        api = int(data["server"]["listen"].rpartition(":")[2])
        served = Served(proc, config, api, log_path)
        deadline = time.monotonic() + 20.0
        while True:
            assert proc.returncode is None, f"headway serve exited early:\n{served.log()}"
            assert time.monotonic() < deadline, f"never ready:\n{served.log()}"
            if await _ready(api):
                return served
            await asyncio.sleep(0.05)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
    for log in logs:
        log.close()


async def raw_post(port: int, body: dict[str, Any], key: str = "sk-pro") -> tuple[int, bytes]:
    """POST to /v1/chat/completions on a new connection; the status and the de-chunked body."""
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n"
            b"authorization: Bearer %b\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (key.encode(), len(payload), payload)
        )
        raw = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head.lower():
        return status, rest
    body_parts = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body_parts.append(rest[:size])
        rest = rest[size + 2 :]
    return status, b"".join(body_parts)


async def _ready(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 2.0)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
    return answer.startswith(b"HTTP/1.1 200 ")


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


# -- SIGTERM -------------------------------------------------------------------------------------


async def test_sigterm_drains_a_running_stream_refuses_new_connections_and_exits_0(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(config_data(free_port(), free_port()))
    body = {"model": "sim-slow", "messages": MESSAGES, "max_tokens": 20, "stream": True}
    payload = json.dumps(body).encode()
    first_event = asyncio.Event()
    received: list[bytes] = []

    async def stream() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.api)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-pro\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
        )
        while data := await reader.read(65536):
            received.append(data)
            if b"data: " in data:
                first_event.set()
        writer.close()

    streaming = asyncio.create_task(stream())
    await asyncio.wait_for(first_event.wait(), 5.0)
    served.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    while not await _refused(served.api):
        assert time.monotonic() - signalled < 2.0, "still accepting connections after SIGTERM"
        await asyncio.sleep(0.01)
    assert not streaming.done(), "the stream ended before new connections were refused"

    await asyncio.wait_for(streaming, DRAIN_TIMEOUT)
    raw = b"".join(received)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the whole chunked body
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text.split()) == 20  # every token arrived
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    code = await served.wait_exit(DRAIN_TIMEOUT)
    assert code == 0, served.log()
    assert time.monotonic() - signalled < DRAIN_TIMEOUT
    assert "draining" in served.log()


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
async def test_workers_share_the_port_and_all_drain_on_sigterm(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(config_data(free_port(), free_port()), "--workers", "2")
    workers = _children(served.proc.pid)
    assert len(workers) == 2
    await served.wait_log("serving on", count=2)
    body = {"model": "sim-small", "messages": MESSAGES, "max_tokens": 2}
    for status, _ in await asyncio.gather(*(raw_post(served.api, body) for _ in range(8))):
        assert status == 200
    served.proc.send_signal(signal.SIGTERM)  # to the supervisor, which forwards it
    assert await served.wait_exit(DRAIN_TIMEOUT) == 0, served.log()
    assert served.log().count("headway.serve: stopped") == 2
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
async def test_a_worker_that_dies_is_replaced_and_the_port_keeps_serving(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve(config_data(free_port(), free_port()), "--workers", "2")
    await served.wait_log("serving on", count=2)
    first = _children(served.proc.pid)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would
    assert await until(lambda: len(_children(served.proc.pid) - first) == 1, 10.0), served.log()
    await served.wait_log("serving on", count=3, within=10.0)
    assert f"worker {victim} exited unexpectedly" in served.log()
    body = {"model": "sim-small", "messages": MESSAGES, "max_tokens": 2}
    for status, _ in await asyncio.gather(*(raw_post(served.api, body) for _ in range(8))):
        assert status == 200
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit(DRAIN_TIMEOUT) == 0, served.log()


async def test_workers_that_keep_dying_stop_the_supervisor(tmp_path: Path) -> None:
    # The admin port is held by a socket without SO_REUSEPORT: every worker fails to listen.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    config = tmp_path / "headway.yaml"
    data = config_data(free_port(), holder.getsockname()[1])
    config.write_text(yaml.safe_dump(data), "utf-8")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "headway", "serve", str(config), "--workers", "2",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 60.0)
        finally:
            if proc.returncode is None:
                proc.kill()
    finally:
        holder.close()
    assert proc.returncode == 1, out.decode()
    assert b"workers keep dying" in out


async def _admin_post(port: int, path: str, token: str | None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = b"" if token is None else b"authorization: Bearer %b\r\n" % token.encode()
    try:
        writer.write(
            b"POST %b HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n%b"
            b"content-length: 0\r\n\r\n" % (path.encode(), auth)
        )
        raw = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    return int(raw.split(b" ", 2)[1])


async def test_admin_token_from_the_environment_opens_write_actions(
    serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "env-token-0123456789"
    monkeypatch.setenv("HEADWAY_ADMIN_TOKEN", token)
    admin = free_port()
    served = await serve(config_data(free_port(), admin), "--no-watch")  # no admin_token in it
    assert await _admin_post(admin, "/api/reload", None) == 401
    assert await _admin_post(admin, "/api/reload", "wrong-token-0123456789") == 401
    assert await _admin_post(admin, "/api/reload", token) == 200
    assert token not in served.log()


def test_a_short_admin_token_is_refused_before_serving() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "headway", "serve", "--admin-token", "short"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "--admin-token" in done.stderr
    assert "at least 16 characters" in done.stderr


# -- reload --------------------------------------------------------------------------------------


async def test_reload_under_load_drops_nothing_and_a_bad_config_is_refused(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    api, admin = free_port(), free_port()
    data = config_data(api, admin)
    served = await serve(data, "--no-watch")  # SIGHUP alone triggers these reloads
    failures: list[str] = []
    done = {"ok": 0, "streams": 0}
    stop = asyncio.Event()

    async def worker(i: int, client: openai.AsyncOpenAI) -> None:
        while not stop.is_set():
            try:
                if i % 2:  # streams, each on a new connection, checked to the last byte
                    body = {"model": "sim-small", "messages": MESSAGES, "max_tokens": 4}
                    status, answer = await raw_post(served.api, {**body, "stream": True})
                    if status != 200 or not answer.endswith(b"data: [DONE]\n\n"):
                        failures.append(f"stream: {status} {answer[-120:]!r}")
                    else:
                        done["streams"] += 1
                else:  # whole answers over the SDK's keep-alive connections
                    reply = await client.chat.completions.create(
                        model="sim-small", messages=MESSAGES, max_tokens=4
                    )
                    assert reply.choices[0].finish_reason == "length"
                    done["ok"] += 1
            except Exception as error:
                failures.append(repr(error))

    async def models() -> list[str]:
        async with served.client() as client:
            return sorted(m.id for m in (await client.models.list()).data)

    async with served.client() as client:
        load = [asyncio.create_task(worker(i, client)) for i in range(8)]
        try:
            await asyncio.sleep(0.3)
            assert await models() == ["sim-large", "sim-slow", "sim-small"]

            # A valid change: a new model, and a tenant's quota raised.
            extra = {"name": "sim-extra", "pool": "small", "upstream_model": "small"}
            tenants = [BASE_CONFIG["tenants"][0], {**BASE_CONFIG["tenants"][1], "rpm": 600}]
            new = {**data, "models": [*data["models"], extra], "tenants": tenants}
            served.write(new)
            served.proc.send_signal(signal.SIGHUP)
            await served.wait_log("config reloaded")
            assert await models() == ["sim-extra", "sim-large", "sim-slow", "sim-small"]
            async with served.client() as client:
                reply = await client.chat.completions.create(
                    model="sim-extra", messages=MESSAGES, max_tokens=2
                )
            assert reply.choices[0].finish_reason == "length"
            await asyncio.sleep(0.3)

            # An invalid one: refused whole, with every error's path; the old config serves on.
            bad = {
                **new,
                "models": [*new["models"], {"name": "sim-bad", "pool": "nope"}],
                "tenants": [{**tenants[0], "priority": "urgent"}, tenants[1]],
            }
            served.write(bad)
            served.proc.send_signal(signal.SIGHUP)
            await served.wait_log("reload rejected")
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await asyncio.gather(*load)

    assert failures == []
    assert done["ok"] >= 20
    assert done["streams"] >= 20
    assert served.proc.returncode is None
    assert await models() == ["sim-extra", "sim-large", "sim-slow", "sim-small"]
    log = served.log()
    assert "reload rejected, still serving the previous config" in log
    assert "models[4].pool" in log
    assert "tenants[0].priority" in log
    assert log.count("config reloaded") == 1


async def test_editing_the_file_reloads_without_a_signal(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    data = config_data(free_port(), free_port())
    served = await serve(data)
    extra = {"name": "sim-extra", "pool": "small", "upstream_model": "small"}
    served.write({**data, "models": [*data["models"], extra]})
    await served.wait_log("config reloaded", within=5.0)  # checked once a second
    async with served.client() as client:
        models = sorted(m.id for m in (await client.models.list()).data)
    assert models == ["sim-extra", "sim-large", "sim-slow", "sim-small"]


# -- the other commands --------------------------------------------------------------------------


def test_cli_exit_codes_and_messages(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(config_data(8080, 8081)), "utf-8")
    bad = tmp_path / "bad.yaml"
    broken = config_data(8080, 8081)
    broken["server"] = {**broken["server"], "listen": "localhost"}
    broken["models"] = [*broken["models"], {"name": "sim-bad", "pool": "nope"}]
    bad.write_text(yaml.safe_dump(broken), "utf-8")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    busy = tmp_path / "busy.yaml"
    busy.write_text(yaml.safe_dump(config_data(taken, free_port())), "utf-8")
    commands = {
        "good": ["check", str(good)],
        "bad": ["check", str(bad)],
        "schema": ["config", "schema"],
        "usage": [],
        "unknown": ["frobnicate"],
        "serve-bad": ["serve", str(bad)],
        "serve-busy": ["serve", str(busy)],
    }
    procs = {  # all at once: each is an interpreter start-up
        name: subprocess.Popen(
            [sys.executable, "-m", "headway", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, args in commands.items()
    }
    try:
        out = {name: proc.communicate(timeout=30) for name, proc in procs.items()}
    finally:
        holder.close()
    codes = {name: proc.returncode for name, proc in procs.items()}
    assert codes == {
        "good": 0,
        "bad": 1,
        "schema": 0,
        "usage": 2,
        "unknown": 2,
        "serve-bad": 1,
        "serve-busy": 1,
    }
    assert out["good"][0].decode().startswith("ok: 3 pools, 3 models, 2 tenants")
    errors = out["bad"][0].decode()
    assert "server.listen:" in errors
    assert "models[3].pool:" in errors
    assert "2 errors" in out["bad"][1].decode()
    schema = json.loads(out["schema"][0])
    assert {"server", "pools", "models", "tenants"} <= set(schema["properties"])
    assert out["usage"][0].decode().startswith("usage: headway COMMAND")
    assert "unknown command 'frobnicate'" in out["unknown"][1].decode()
    refused = out["serve-bad"][1].decode()
    assert "invalid config" in refused
    assert "server.listen:" in refused
    assert "models[3].pool:" in refused
    busy_err = out["serve-busy"][1].decode()
    assert "cannot listen: " in busy_err
    assert str(taken) in busy_err
    assert "Traceback" not in busy_err


# -- the embedded demo ---------------------------------------------------------------------------


async def test_embedded_demo_serves_its_published_names() -> None:
    config = load_config(None)
    # The published addresses (not bound here: 8080 may be taken on a CI machine).
    assert (config.server.listen, config.server.admin_listen) == (
        "127.0.0.1:8080",
        "127.0.0.1:8081",
    )
    gateway = Gateway(config)
    await gateway.start(api_port=0, admin_port=0)
    try:
        demo = Running(gateway)
        runtime = gateway.runtime
        assert runtime is not None
        async with demo.client("sk-demo-pro") as pro:
            listed = sorted(m.id for m in (await pro.models.list()).data)
            assert listed == ["sim-large", "sim-small"]
            for model in listed:
                reply = await pro.chat.completions.create(
                    model=model, messages=MESSAGES, max_tokens=2
                )
                assert reply.choices[0].finish_reason == "length"
        async with demo.client("sk-demo-free") as free:
            reply = await free.chat.completions.create(
                model="sim-small", messages=MESSAGES, max_tokens=2
            )
            assert reply.choices[0].finish_reason == "length"
        tenant = runtime.directory.authenticate(b"Bearer sk-demo-free")
        assert (tenant.name, tenant.priority) == ("demo-free", Priority.SHEDDABLE)
        tenant = runtime.directory.authenticate(b"Bearer sk-demo-pro")
        assert (tenant.name, tenant.priority) == ("demo-pro", Priority.CRITICAL)
    finally:
        await gateway.stop(1.0)
