"""Which HTTP/1.1 server should the gateway and simulator stand on? Measured, not guessed.

Each candidate answers ``POST /`` with a canned OpenAI-shaped JSON body. Each runs alone in its
own single-process server on loopback, and ``wrk`` (one thread, a Lua POST script with a small
JSON body) loads it for a few seconds at 1 and at 50 connections. The table prints requests/s
and average/p99 latency; the ratio column is against the fastest candidate at that concurrency.

Run: ``.venv/bin/python bench/http_choice.py`` (needs ``wrk``: ``apt-get install -y wrk``).
Options: ``--duration 5`` seconds per run, ``--only raw,aiohttp`` to pick candidates.

Candidates:
- ``raw``: an ``asyncio.Protocol`` with ``httptools``' request parser, on uvloop (minimal).
- ``headway``: ``headway.http.HttpServer`` (the same idea with limits, timeouts, streaming).
- ``aiohttp``: ``aiohttp.web`` on uvloop.
- ``granian``: granian's RSGI interface (Rust HTTP stack), one worker, uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

PAYLOAD = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"sim",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"hello world"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,'
    b'"total_tokens":7}}'
)
REQUEST_BODY = '{"model":"sim","messages":[{"role":"user","content":"hi there, how are you?"}]}'
CANDIDATES = ("raw", "headway", "aiohttp", "granian")

WRK_LUA = f"""
wrk.method = "POST"
wrk.body = '{REQUEST_BODY}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.1f %.1f\\n", summary.requests, summary.duration,
    latency.mean, latency:percentile(99)))
end
"""


# ---- servers (each runs in its own process via --serve NAME) ---------------------------------


def serve_raw(port: int) -> None:
    import httptools
    import uvloop

    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(PAYLOAD)).encode()
        + b"\r\n\r\n"
    )
    response = head + PAYLOAD

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(response)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


def serve_headway(port: int) -> None:
    import uvloop

    from headway.http import HttpServer, Request, Response

    async def handler(request: Request) -> Response:
        return Response(200, PAYLOAD, content_type=b"application/json")

    async def main() -> None:
        server = HttpServer(handler)
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=PAYLOAD, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handle)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def rsgi_app(scope: Any, proto: Any) -> None:
    """Granian RSGI entry point (granian imports this module by name)."""
    await proto()
    proto.response_bytes(200, [("content-type", "application/json")], PAYLOAD)


def granian_command(port: int) -> list[str] | None:
    exe = shutil.which("granian", path=os.path.dirname(sys.executable))
    if exe is None:
        return None
    return [
        exe,
        "--interface",
        "rsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--log-level",
        "error",
        "http_choice:rsgi_app",
    ]


SERVERS = {"raw": serve_raw, "headway": serve_headway, "aiohttp": serve_aiohttp}


# ---- driver ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start(name: str, port: int) -> subprocess.Popen[bytes] | None:
    here = os.path.dirname(os.path.abspath(__file__))
    if name == "granian":
        cmd = granian_command(port)
        if cmd is None:
            return None
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", name, "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        cmd, cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def run_wrk(port: int, connections: int, duration: int, script: str) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "-s",
            script,
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    if match is None:
        raise RuntimeError(out)
    requests, micros, mean_us, p99_us = (float(g) for g in match.groups())
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  warning: {out.strip().splitlines()[-3:]}", file=sys.stderr)
    return requests / (micros / 1e6), mean_us, p99_us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    args = parser.parse_args(argv)
    if args.serve:
        SERVERS[args.serve](args.port)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(WRK_LUA)
    rows: list[tuple[str, int, float, float, float]] = []
    try:
        for name in args.only.split(","):
            port = free_port()
            proc = start(name, port)
            if proc is None:
                print(f"{name}: not installed, skipped", file=sys.stderr)
                continue
            try:
                if not wait_listening(port):
                    print(f"{name}: did not start, skipped", file=sys.stderr)
                    continue
                run_wrk(port, 10, 1, lua.name)  # warm-up
                for conns in (1, 50):
                    rows.append((name, conns, *run_wrk(port, conns, args.duration, lua.name)))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        os.unlink(lua.name)
    best = {c: max(r[2] for r in rows if r[1] == c) for c in {r[1] for r in rows}}
    print(f"{'server':<10}{'conns':>6}{'req/s':>11}{'avg µs':>9}{'p99 µs':>9}{'vs best':>9}")
    for name, conns, rps, mean_us, p99_us in rows:
        print(
            f"{name:<10}{conns:>6}{rps:>11.0f}{mean_us:>9.0f}{p99_us:>9.0f}"
            f"{rps / best[conns]:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
