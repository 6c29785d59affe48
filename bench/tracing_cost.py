"""What OpenTelemetry tracing costs the gateway: CPU time per request, tracing off vs on.

CPU time, not throughput: on a shared machine wall-clock numbers swing with the neighbours,
while the CPU a process spends per request barely does. Everything but the gateway runs in other
processes so only the gateway's CPU is counted: a ``headway sim`` upstream, an OTLP/HTTP sink
that answers every export with 200, and this script as the client (keep-alive connections, one
thread each). The gateway is ``headway serve`` (one worker, metrics and access log off, so the
difference is tracing alone); its CPU is user + system time of all its threads, which includes
the SDK's batch-export thread, read from /proc before and after the measured requests.

Run: ``.venv/bin/python bench/tracing_cost.py [--requests 3000] [--rounds 3] [--stream]
[--sample-ratio 0.01]``.
Rounds alternate off/on so drift hits both alike; the median per mode is reported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
HEADWAY = str(ROOT / ".venv" / "bin" / "headway")
TICKS = os.sysconf("SC_CLK_TCK")

_SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, all threads


def config(api: int, admin: int, sim: int, sink: int, tracing: bool, ratio: float) -> str:
    return json.dumps(
        {
            "version": 1,
            "server": {"listen": f"127.0.0.1:{api}", "admin_listen": f"127.0.0.1:{admin}"},
            "observe": {
                "metrics": False,
                "access_log": False,
                "tracing": {
                    "enabled": tracing,
                    "endpoint": f"http://127.0.0.1:{sink}/v1/traces",
                    "batch_delay": 0.5,
                    "sample_ratio": ratio,
                },
            },
            "pools": [{"name": "p", "endpoints": [{"url": f"http://127.0.0.1:{sim}/v1"}]}],
            "models": [{"name": "m", "pool": "p", "upstream_model": "m"}],
            "tenants": [{"name": "t", "keys": ["sk-bench"], "models": ["*"]}],
        }
    )


def load(port: int, requests: int, connections: int, stream: bool) -> float:
    """Send ``requests`` chat requests over ``connections`` keep-alive connections; seconds."""
    body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
            "stream": stream,
        }
    )
    headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
    per = requests // connections
    errors: list[str] = []

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per):
            conn.request("POST", "/v1/chat/completions", body, headers)
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                errors.append(str(reply.status))
        conn.close()

    threads = [threading.Thread(target=run) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return time.perf_counter() - start


def measure(workdir: Path, sim: int, sink: int, tracing: bool, args: argparse.Namespace) -> float:
    api, admin = free_port(), free_port()
    path = workdir / f"gw-{'on' if tracing else 'off'}.yaml"
    path.write_text(config(api, admin, sim, sink, tracing, args.sample_ratio))
    gateway = subprocess.Popen([HEADWAY, "serve", str(path)], stderr=subprocess.DEVNULL)
    try:
        wait_port(api)
        load(api, 500, args.connections, args.stream)  # warm-up
        time.sleep(1.0)  # let the warm-up's spans export
        before = cpu_seconds(gateway.pid)
        load(api, args.requests, args.connections, args.stream)
        time.sleep(1.0)  # and the measured ones (their export is part of the cost)
        used = cpu_seconds(gateway.pid) - before
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    return used / args.requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--sample-ratio", type=float, default=1.0, help="observe.tracing's")
    args = parser.parse_args()
    sim, sink = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [
                HEADWAY,
                "sim",
                "--port",
                str(sim),
                "--models",
                "m",
                "--ttft",
                "0",
                "--tokens-per-second",
                "100000",
            ],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen([PYTHON, "-c", _SINK, str(sink)]),
    ]
    results: dict[bool, list[float]] = {False: [], True: []}
    try:
        wait_port(sim)
        wait_port(sink)
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for tracing in (False, True):
                    results[tracing].append(measure(Path(tmp), sim, sink, tracing, args))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    off, on = statistics.median(results[False]), statistics.median(results[True])
    kind = "streamed" if args.stream else "non-streamed"
    print(
        f"gateway CPU per {kind} request (median of {args.rounds} rounds, {args.requests} "
        f"each; sample_ratio {args.sample_ratio:g})"
    )
    print(f"  tracing off: {off:7.1f} us   rounds: {[round(x) for x in results[False]]}")
    print(f"  tracing on:  {on:7.1f} us   rounds: {[round(x) for x in results[True]]}")
    print(f"  tracing adds {on - off:.1f} us per request ({(on - off) / off * 100:+.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
