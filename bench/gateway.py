"""Gateway data-path numbers: Headway next to nginx, LiteLLM and Portkey, in one run, one command.

Every contender proxies the same fast upstream (nginx answering canned OpenAI bodies from memory)
and is loaded by the same generator (``wrk``, one thread, a Lua POST script with a small chat
request and ``Authorization: Bearer sk-bench``). The proxy under test is pinned to core 0 with
``taskset -c 0``; ``wrk`` and the upstream share core 1. For each contender:

- non-streaming throughput at saturation (``--connections``, default 50) after a warm-up;
- latency at concurrency 1 (``wrk -c1``): p50 and p99, and p50 added over going direct. For this
  run only the proxy is moved onto core 1 too, so proxy, upstream and ``wrk`` share ONE core. At
  concurrency 1 the three only take turns (one request in flight), so sharing a core costs none
  of them throughput, while splitting them across cores makes every hop a cross-core wakeup
  (an IPI, ~75-100 us on a VM) that lands on any proxy: nginx itself shows ~110 us added p50
  split across cores and ~27 us on one core. Saturation runs keep the split, where the proxy
  needs its own core;
- streaming throughput at saturation: responses/s, and chunks/s = responses/s x the number of
  ``data:`` chunks the contender actually relayed in one checked response.

Contenders: ``direct`` (wrk straight to the upstream), ``nginx`` (reverse proxy with keep-alive
upstream pools, the C limit), ``litellm`` (``litellm[proxy]``, one worker), ``portkey``
(``@portkey-ai/gateway`` on Node), ``floor`` (``gateway_peers/floor_proxy.py``: the least a Python
proxy on Headway's stack, uvloop and httptools, can do per request; what separates Headway from
it is Headway's own per-request work, not Python's I/O) and ``headway`` (``headway serve``, one
worker). Each is first
checked with one real request (status 200, a chat.completion body, a complete stream); one that
cannot be installed, started or checked is reported as ``unavailable: <reason>`` and the run
goes on.

Streaming upstream: nginx cannot cheaply choose JSON or SSE from the request body, so the
upstream listens twice: one port answers JSON, the other answers a static SSE body
(``CHUNKS`` chunks + ``[DONE]``). Each contender's streaming run is pointed at the SSE port the
way its users would: a second model (``bench-stream``) for LiteLLM and Headway, a second custom
host for Portkey, a second location (``/stream/``) for nginx, the other port for ``direct``.
The whole stream arrives in one or two reads, so chunks/s measures the relay's per-chunk cost
(parse, account, forward), not upstream pacing.

Run: ``.venv/bin/python bench/gateway.py`` (first run installs the peers into ``.bench-peers/``:
nginx and wrk with apt-get, LiteLLM into its own venv, Portkey with npm, pinned versions).
``--quick`` runs 2 s per measurement; ``--only headway,nginx`` selects contenders (``direct`` is
always measured as the baseline for added latency).
``HEADWAY_BENCH_OBSERVE=1`` runs Headway with ``observe: {metrics: true, access_log: true}``
(default 0: both off, the config default), to measure what observability costs;
``HEADWAY_BENCH_RECORD_DELAY`` sets ``observe.record_delay`` (default 0.01, the config default).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(__file__).resolve().parent / "gateway_peers"
INSTALL_DIR = ROOT / ".bench-peers"
LITELLM_VENV = INSTALL_DIR / "litellm-venv"
PORTKEY_DIR = INSTALL_DIR / "portkey"
# Pinned so two runs months apart compare the same peers; bump deliberately.
LITELLM_SPEC = "litellm[proxy]==1.108.7"
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
CONTENDERS = ("direct", "nginx", "litellm", "portkey", "floor", "headway")
PROXY_CPU = "0"
LOAD_CPU = "1"
API_KEY = "sk-bench"
CHUNKS = 20
MODEL = "bench-model"
STREAM_MODEL = "bench-stream"

JSON_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
    separators=(",", ":"),
)


def _sse_body(chunks: int) -> str:
    events = []
    for i in range(chunks):
        last = i == chunks - 1
        chunk: dict[str, object] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": f"tok{i} "} if not last else {},
                    "finish_reason": "stop" if last else None,
                }
            ],
        }
        if last:
            chunk["usage"] = {"prompt_tokens": 12, "completion_tokens": chunks - 1}
        events.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events)


SSE_BODY = _sse_body(CHUNKS)


def _request_body(model: str, stream: bool) -> str:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


# ---- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@dataclass
class Server:
    """A process we started in its own session, so stopping it stops its children and no more."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])[:300]


def spawn(
    name: str, cmd: list[str], cpu: str, workdir: Path, env: dict[str, str] | None = None
) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", cpu, *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
    return Server(name, proc, log)


def render(template: str, **values: object) -> str:
    text = (PEERS_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    leftover = re.search(r"@@(?!DIR@@)\w+@@", text)  # DIR is filled by start_nginx
    if leftover:
        raise RuntimeError(f"{template}: unfilled placeholder {leftover.group()}")
    return text


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _session_threads(leader: int) -> list[int]:
    """Every thread of every process in the session ``leader`` started (nginx workers, children)."""
    tids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Field 6 of /proc/PID/stat is the session id; split after the ")" ending the name.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != leader:
                continue
            tids.extend(int(t.name) for t in (entry / "task").iterdir())
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we looked
    return tids


def pin(servers: list[Server], cpu: str) -> None:
    """Move running servers (all their processes and threads) onto ``cpu``."""
    for server in servers:
        for tid in _session_threads(server.proc.pid):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, {int(cpu)})


def start_nginx(name: str, conf: str, cpu: str, workdir: Path) -> Server:
    exe = nginx_binary()
    if exe is None:
        raise Unavailable("nginx is not installed")
    root = workdir / name
    root.mkdir()
    (root / "nginx.conf").write_text(conf.replace("@@DIR@@", str(root)))
    return spawn(
        name,
        [exe, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
        cpu,
        workdir,
    )


# ---- installs (first run) --------------------------------------------------------------------


class Unavailable(Exception):
    """A contender that cannot be installed, started or checked; reported, never fatal."""


def _run_install(cmd: list[str], what: str, timeout: float = 900) -> None:
    print(f"installing {what}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"install of {what} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        raise Unavailable(f"install of {what} failed: {tail[0][:200]}")


def ensure_apt(binary: str, package: str) -> None:
    found = nginx_binary() if binary == "nginx" else shutil.which(binary)
    if found:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"{binary} missing (install the {package} package)")
    try:
        _run_install(["apt-get", "install", "-y", "-q", package], package)
    except Unavailable:
        _run_install(["apt-get", "update", "-q"], "apt lists")
        _run_install(["apt-get", "install", "-y", "-q", package], package)


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        INSTALL_DIR.mkdir(exist_ok=True)
        _run_install([sys.executable, "-m", "venv", str(LITELLM_VENV)], "the LiteLLM venv")
        pip = str(LITELLM_VENV / "bin" / "pip")
        _run_install([pip, "install", "-q", LITELLM_SPEC], LITELLM_SPEC)
    if not exe.exists():
        raise Unavailable("litellm installed but its CLI is missing")
    return exe


def ensure_portkey() -> Path:
    script = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        if shutil.which("npm") is None or shutil.which("node") is None:
            raise Unavailable("node/npm missing (install the nodejs and npm packages)")
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        if not (PORTKEY_DIR / "package.json").exists():
            (PORTKEY_DIR / "package.json").write_text('{"name": "bench-portkey", "private": true}')
        npm = ["npm", "install", "--prefix", str(PORTKEY_DIR), "--no-audit", "--no-fund"]
        _run_install([*npm, PORTKEY_SPEC], PORTKEY_SPEC)
    if not script.exists():
        raise Unavailable("portkey installed but build/start-server.js is missing")
    return script


# ---- contenders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where one kind of request goes: port, path, extra headers and the request body."""

    port: int
    path: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Upstream:
    json_port: int
    sse_port: int


@dataclass
class Running:
    servers: list[Server]
    plain: Target
    stream: Target


Starter = Callable[[Upstream, Path], Running]


def start_direct(up: Upstream, workdir: Path) -> Running:
    path = "/v1/chat/completions"
    return Running(
        [],
        Target(up.json_port, path, _request_body(MODEL, False)),
        Target(up.sse_port, path, _request_body(MODEL, True)),
    )


def start_nginx_proxy(up: Upstream, workdir: Path) -> Running:
    port = free_port()
    conf = render(
        "proxy.nginx.conf", PORT=port, JSON_PORT=up.json_port, SSE_PORT=up.sse_port, DIR="@@DIR@@"
    )
    server = start_nginx("nginx-proxy", conf, PROXY_CPU, workdir)
    _await_port(server, port, 10)
    return Running(
        [server],
        Target(port, "/v1/chat/completions", _request_body(MODEL, False)),
        Target(port, "/stream/v1/chat/completions", _request_body(MODEL, True)),
    )


def start_litellm(up: Upstream, workdir: Path) -> Running:
    exe = ensure_litellm()
    port = free_port()
    cfg = workdir / "litellm.yaml"
    cfg.write_text(render("litellm.yaml", JSON_PORT=up.json_port, SSE_PORT=up.sse_port))
    env = dict(
        os.environ,
        LITELLM_LOG="ERROR",
        LITELLM_MODE="PRODUCTION",
        # Offline machine: use the bundled model-cost map instead of fetching it at start-up.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        NO_DOCS="True",
        DISABLE_ADMIN_UI="True",
    )
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    server = spawn("litellm", [*cmd, "--num_workers", "1"], PROXY_CPU, workdir, env)
    _await_port(server, port, 120)
    path = "/v1/chat/completions"
    return Running(
        [server],
        Target(port, path, _request_body(MODEL, False)),
        Target(port, path, _request_body(STREAM_MODEL, True)),
    )


def start_portkey(up: Upstream, workdir: Path) -> Running:
    script = ensure_portkey()
    node = shutil.which("node")
    if node is None:
        raise Unavailable("node missing")
    port = free_port()
    env = dict(os.environ, NODE_ENV="production")
    server = spawn("portkey", [node, str(script), f"--port={port}", "--headless"], PROXY_CPU,
                   workdir, env)  # fmt: skip
    _await_port(server, port, 60)
    path = "/v1/chat/completions"

    def headers(upstream_port: int) -> dict[str, str]:
        return {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
        }

    return Running(
        [server],
        Target(port, path, _request_body(MODEL, False), headers(up.json_port)),
        Target(port, path, _request_body(MODEL, True), headers(up.sse_port)),
    )


def start_floor(up: Upstream, workdir: Path) -> Running:
    plain, stream = free_port(), free_port()
    pairs = [f"{plain}:{up.json_port}", f"{stream}:{up.sse_port}"]
    script = PEERS_DIR / "floor_proxy.py"
    server = spawn("floor", [sys.executable, str(script), *pairs], PROXY_CPU, workdir)
    _await_port(server, stream, 30)
    path = "/v1/chat/completions"
    return Running(
        [server],
        Target(plain, path, _request_body(MODEL, False)),
        Target(stream, path, _request_body(MODEL, True)),
    )


def headway_config(up: Upstream, port: int, admin_port: int) -> str:
    """The Headway YAML for this bench: the same upstream, one worker, auth and guards on."""
    return render(
        "headway.yaml",
        PORT=port,
        ADMIN_PORT=admin_port,
        JSON_PORT=up.json_port,
        SSE_PORT=up.sse_port,
        OBSERVE="true" if os.environ.get("HEADWAY_BENCH_OBSERVE", "0") == "1" else "false",
        RECORD_DELAY=float(os.environ.get("HEADWAY_BENCH_RECORD_DELAY", "0.01")),
    )


def start_headway(up: Upstream, workdir: Path) -> Running:
    exe = ROOT / ".venv" / "bin" / "headway"
    if not exe.exists():
        raise Unavailable("no .venv/bin/headway")
    probe = subprocess.run(
        [str(exe), "serve", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    if probe.returncode != 0:
        last = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["?"]
        raise Unavailable(f"`headway serve --help` failed: {last[0][:160]}")
    port, admin_port = free_port(), free_port()
    cfg = workdir / "headway.yaml"
    cfg.write_text(headway_config(up, port, admin_port))
    server = spawn("headway", [str(exe), "serve", str(cfg)], PROXY_CPU, workdir)
    _await_port(server, port, 60)
    path = "/v1/chat/completions"
    return Running(
        [server],
        Target(port, path, _request_body(MODEL, False)),
        Target(port, path, _request_body(STREAM_MODEL, True)),
    )


def start_upstream(workdir: Path) -> tuple[Upstream, Server]:
    """The canned upstream every contender proxies (nginx on the load core: JSON on one port,
    the SSE stream on the other), listening."""
    up = Upstream(free_port(), free_port())
    conf = render(
        "upstream.nginx.conf",
        JSON_PORT=up.json_port,
        SSE_PORT=up.sse_port,
        CHUNKS=CHUNKS,
        JSON_BODY=JSON_BODY,
        SSE_BODY=SSE_BODY.replace("\n", "\\n"),
        DIR="@@DIR@@",
    )
    upstream = start_nginx("upstream", conf, LOAD_CPU, workdir)
    _await_port(upstream, up.sse_port, 10)
    return up, upstream


def _await_port(server: Server, port: int, timeout: float) -> None:
    if not wait_listening(port, server.proc, timeout):
        reason = "exited" if server.proc.poll() is not None else f"not listening after {timeout}s"
        tail = server.tail()
        server.stop()
        raise Unavailable(f"{reason}: {tail}" if tail else reason)


STARTERS: dict[str, Starter] = {
    "direct": start_direct,
    "nginx": start_nginx_proxy,
    "litellm": start_litellm,
    "portkey": start_portkey,
    "floor": start_floor,
    "headway": start_headway,
}
LABELS = {
    "direct": "direct (no proxy)",
    "nginx": "nginx reverse proxy",
    "litellm": "LiteLLM proxy",
    "portkey": "Portkey gateway",
    "floor": "Python floor (featureless proxy)",
    "headway": "**Headway**",
}


# ---- checking and loading --------------------------------------------------------------------


def _post(target: Target) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    try:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {API_KEY}",
            **target.headers,
        }
        conn.request("POST", target.path, body=target.body.encode(), headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_plain(running: Running) -> None:
    """One real non-streaming request: HTTP 200 and a chat.completion with content."""
    status, body = _post(running.plain)
    if status != 200:
        raise Unavailable(f"non-stream check got HTTP {status}: {body[:160]!r}")
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise Unavailable(f"non-stream check got a bad body: {body[:160]!r}") from exc
    if not content:
        raise Unavailable("non-stream check got an empty message")


def check_stream(running: Running) -> int:
    """One real streaming request; returns the number of chunks relayed before [DONE]."""
    status, body = _post(running.stream)
    if status != 200:
        raise Unavailable(f"stream check got HTTP {status}: {body[:120]!r}")
    events = [line for line in body.split(b"\n") if line.startswith(b"data:")]
    if not events or events[-1].strip() != b"data: [DONE]":
        raise Unavailable(f"stream check got no [DONE]: {body[-120:]!r}")
    return len(events) - 1


def _lua(target: Target) -> str:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    headers.update(target.headers)
    lines = [
        'wrk.method = "POST"',
        f'wrk.path = "{target.path}"',
        f"wrk.body = [=[{target.body}]=]",
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines.append(
        "done = function(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format("RESULT %d %d %d %.1f %.1f\\n", summary.requests,\n'
        "    summary.duration, e.connect + e.read + e.write + e.status + e.timeout,\n"
        "    latency:percentile(50), latency:percentile(99)))\n"
        "end"
    )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Load:
    rps: float
    p50_us: float
    p99_us: float
    errors: int


def wrk(target: Target, connections: int, seconds: float, workdir: Path) -> Load:
    script = workdir / "post.lua"
    script.write_text(_lua(target))
    cmd = [
        "taskset",
        "-c",
        LOAD_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{target.port}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    if match is None:
        raise Unavailable(f"wrk printed no result: {out[-200:]!r}")
    requests, micros, errors = (int(g) for g in match.groups()[:3])
    p50, p99 = float(match.group(4)), float(match.group(5))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Load(requests / (micros / 1e6), p50, p99, errors)


@dataclass
class Row:
    name: str
    note: str = ""
    plain: Load | None = None
    latency: Load | None = None
    stream: Load | None = None
    stream_note: str = ""
    chunks: int = 0


def measure(
    name: str, up: Upstream, workdir: Path, seconds: float, warmup: float, conns: int
) -> Row:
    row = Row(name)
    running: Running | None = None
    try:
        running = STARTERS[name](up, workdir)
        check_plain(running)
        wrk(running.plain, min(conns, 10), warmup, workdir)
        row.plain = wrk(running.plain, conns, seconds, workdir)
        # c=1 latency on ONE core (see the module docstring): no cross-core wakeup per hop.
        pin(running.servers, LOAD_CPU)
        row.latency = wrk(running.plain, 1, seconds, workdir)
        pin(running.servers, PROXY_CPU)
        try:
            row.chunks = check_stream(running)
        except Unavailable as exc:  # a peer whose streaming is broken still gets its other numbers
            row.stream_note = f"stream broken: {exc}"
        else:
            wrk(running.stream, min(conns, 10), warmup, workdir)
            row.stream = wrk(running.stream, conns, seconds, workdir)
    except Unavailable as exc:
        # Headway is the contender under construction: any failure to start reads as such.
        row.note = (
            f"headway: not available yet ({exc})" if name == "headway" else f"unavailable: {exc}"
        )
    except (OSError, subprocess.SubprocessError) as exc:
        row.note = f"unavailable: {type(exc).__name__}: {exc}"
    finally:
        if running is not None:
            for server in running.servers:
                server.stop()
    return row


# ---- report ----------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def versions() -> str:
    parts = []
    exe = nginx_binary()
    if exe:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True).stderr.strip()
        parts.append(out.replace("nginx version: ", ""))
    pip = LITELLM_VENV / "bin" / "pip"
    if pip.exists():
        out = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True).stdout
        match = re.search(r"Version: (\S+)", out)
        parts.append(f"litellm {match.group(1) if match else '?'}")
    pkg = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    if pkg.exists():
        parts.append(f"@portkey-ai/gateway {json.loads(pkg.read_text())['version']}")
        node = subprocess.run(["node", "--version"], capture_output=True, text=True)
        parts.append(f"node {node.stdout.strip()}")
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
        parts.append(out.split(" [")[0].strip())
    return ", ".join(parts)


def _cell(text: str, limit: int = 200) -> str:
    """A failure reason fit for one Markdown table cell."""
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def table(rows: list[Row]) -> str:
    head = (
        "| contender | req/s (non-stream) | % of nginx | p50 µs c=1 | p99 µs c=1 | "
        "added p50 vs direct | stream req/s | chunks/s |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    nginx = next((r.plain.rps for r in rows if r.name == "nginx" and r.plain), None)
    direct = next((r.latency.p50_us for r in rows if r.name == "direct" and r.latency), None)
    for r in rows:
        label = LABELS[r.name]
        r.note, r.stream_note = _cell(r.note), _cell(r.stream_note)
        if r.plain is None or r.latency is None:
            lines.append(f"| {label} | {r.note} | - | - | - | - | - | - |")
            continue
        share = f"{100 * r.plain.rps / nginx:.1f}%" if nginx else "-"
        added = "-" if direct is None or r.name == "direct" else f"{r.latency.p50_us - direct:,.0f}"
        errors = r.plain.errors + r.latency.errors + (r.stream.errors if r.stream else 0)
        flag = f" ({errors} errors)" if errors else ""
        if r.stream is None:
            stream = f"{r.stream_note} | -"
        else:
            chunks = f"{r.stream.rps * r.chunks:,.0f} ({r.chunks}/resp)"
            stream = f"{r.stream.rps:,.0f} | {chunks}"
        lines.append(
            f"| {label}{flag} | {r.plain.rps:,.0f} | {share} | {r.latency.p50_us:,.0f} | "
            f"{r.latency.p99_us:,.0f} | {added} | {stream} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    parser.add_argument("--quick", action="store_true", help="2 s per measurement (smoke run)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50, help="connections at saturation")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in STARTERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {', '.join(CONTENDERS)}")
    if "direct" not in names:
        names.insert(0, "direct")
    seconds = 2.0 if args.quick else args.duration
    warmup = 1.0 if args.quick else 2.0
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; proxy and load share a core", file=sys.stderr)
    try:
        ensure_apt("wrk", "wrk")
        ensure_apt("nginx", "nginx")
    except Unavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    if shutil.which("taskset") is None:
        print("cannot run: taskset missing (util-linux)", file=sys.stderr)
        return 2

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="headway-bench-") as tmp:
        workdir = Path(tmp)
        up, upstream = start_upstream(workdir)
        try:
            for name in [n for n in CONTENDERS if n in names]:
                print(f"{name}: measuring...", file=sys.stderr, flush=True)
                row = measure(name, up, workdir, seconds, warmup, args.connections)
                print(f"{name}: {row.note or 'done'}", file=sys.stderr, flush=True)
                rows.append(row)
        finally:
            upstream.stop()

    report = "\n".join(
        [
            table(rows),
            "",
            f"Machine: {machine()}.",
            f"Peers: {versions()}.",
            f"Load: wrk -t1, {args.connections} connections at saturation and 1 for latency, "
            f"{seconds:g} s each after a {warmup:g} s warm-up; at saturation proxy on core "
            f"{PROXY_CPU}, wrk and upstream on core {LOAD_CPU}; at c=1 proxy, wrk and upstream "
            f"all on core {LOAD_CPU} (no cross-core wakeups); stream = {CHUNKS} chunks + [DONE].",
            f"Command: .venv/bin/python bench/gateway.py{' --quick' if args.quick else ''}",
        ]
    )
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
