"""CPU instructions per gateway request, observability off and on: a number that does not swing.

Wall-clock req/s on a shared VM moves by 2x from run to run (nginx alone did 27k-88k req/s in
different sessions), which hides a 5% change. Instructions do not: this runs ``headway serve``
(the bench config of ``bench/gateway.py``, one worker, against the same canned nginx upstream)
under ``valgrind --tool=callgrind`` with instrumentation off, warms it up, switches counting on
around exactly ``--requests`` requests from a small keep-alive client in another process, and
divides. The same binary and inputs give the same count within ~0.5%, whatever else the machine
is doing. What it cannot see: time in the kernel (socket reads and writes, ~35-45% of Headway's
CPU per request here) and cache misses, so a ratio of instructions overstates a CPU ratio.

Run: ``.venv/bin/python bench/instructions.py`` (needs valgrind, nginx; ~1 minute).
Prints one row per setting and the observability overhead in instructions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as g

_COLLECTED = re.compile(r"Collected\s*:\s*([\d,]+)")


async def _client(port: int, requests: int, connections: int) -> None:
    """``requests`` chat completions over ``connections`` keep-alive connections."""
    body = g._request_body(g.MODEL, False).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %b\r\nContent-Length: %d\r\n\r\n" % (g.API_KEY.encode(), len(body))
    )

    async def one(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(head + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {answer[:80]!r}")
            length = int(re.search(rb"(?i)content-length: *(\d+)", answer).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        writer.close()

    share = requests // connections
    await asyncio.gather(*(one(share) for _ in range(connections)))


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("headway exited under valgrind")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"headway not ready after {timeout:g} s")


def count(
    up: g.Upstream, workdir: Path, *, observe: bool, requests: int, connections: int
) -> float:
    """Instructions per request of one ``headway serve`` run under callgrind."""
    port, admin = g.free_port(), g.free_port()
    os.environ["HEADWAY_BENCH_OBSERVE"] = "1" if observe else "0"
    cfg = workdir / f"headway-{int(observe)}.yaml"
    cfg.write_text(g.headway_config(up, port, admin))
    log = workdir / f"callgrind-{int(observe)}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={workdir / 'callgrind.out'}",
                str(g.ROOT / ".venv" / "bin" / "headway"),
                "serve",
                str(cfg),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
    try:
        _wait_ready(port, proc, 300)
        asyncio.run(_client(port, max(requests // 5, connections), connections))  # warm up
        subprocess.run(
            ["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True
        )
        asyncio.run(_client(port, requests, connections))
        subprocess.run(
            ["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True
        )
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    found = _COLLECTED.findall(log.read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"no instruction count in {log}")
    return int(found[-1].replace(",", "")) / (requests // connections * connections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per run")
    parser.add_argument("--connections", type=int, default=8, help="client connections")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(
                f"cannot run: {tool} is not installed (apt-get install valgrind)", file=sys.stderr
            )
            return 2
    try:
        g.ensure_apt("nginx", "nginx")
    except g.Unavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="headway-instr-") as tmp:
        workdir = Path(tmp)
        up = g.Upstream(g.free_port(), g.free_port())
        conf = g.render(
            "upstream.nginx.conf",
            JSON_PORT=up.json_port,
            SSE_PORT=up.sse_port,
            CHUNKS=g.CHUNKS,
            JSON_BODY=g.JSON_BODY,
            SSE_BODY=g.SSE_BODY.replace("\n", "\\n"),
            DIR="@@DIR@@",
        )
        upstream = g.start_nginx("upstream", conf, g.LOAD_CPU, workdir)
        try:
            g._await_port(upstream, up.sse_port, 10)
            off = count(
                up, workdir, observe=False, requests=args.requests, connections=args.connections
            )
            on = count(
                up, workdir, observe=True, requests=args.requests, connections=args.connections
            )
        finally:
            upstream.stop()
    print("| Headway (one worker, bench config) | instructions per request |")
    print("|---|---:|")
    print(f"| metrics and access log off | {off:,.0f} |")
    print(f"| metrics and access log on | {on:,.0f} |")
    extra = on - off
    print(f"\nObservability: +{extra:,.0f} instructions per request (+{extra / off * 100:.1f}%).")
    print(
        f"Counted: {args.requests} requests over {args.connections} keep-alive connections, "
        "callgrind (user-space instructions; kernel time and cache misses not included)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
