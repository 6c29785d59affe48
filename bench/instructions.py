"""CPU instructions per gateway request, observability off and on: a number that does not swing.

Wall-clock req/s on a shared VM moves by 2x from run to run (nginx alone did 27k-88k req/s in
different sessions), which hides a 5% change. Instructions do not: this runs ``headway serve``
(the bench config of ``bench/gateway.py``, one worker, against the same canned nginx upstream)
under ``valgrind --tool=callgrind`` with instrumentation off, warms it up, switches counting on
around exactly ``--requests`` requests from a small keep-alive client in another process, and
divides. The same binary and inputs give the same count within ~0.5%, whatever else the machine
is doing. What it cannot see: time in the kernel (socket reads and writes, ~35-45% of Headway's
CPU per request here) and cache misses, so a ratio of instructions overstates a CPU ratio.

So each row also runs the same server natively and counts its system calls per request with
``strace -c`` (the kernel's work is nearly all in them: socket reads and writes), and reads the
user-space share of its CPU time from ``/proc/<pid>/stat``. When observability adds no system
calls to speak of, the kernel side of a request costs the same on and off, and the CPU cost of
observability is the instruction ratio times the user share (the last column: an estimate that
takes instructions in user space to cost the same time on and off).

Run: ``.venv/bin/python bench/instructions.py`` (needs valgrind, nginx, strace; ~5 minutes: chat
completions and streams, at 8 and at 50 connections, observability off and on). Prints one
row per shape and load with the observability overhead in instructions. ``--shapes json
--connections 8`` for a one-minute check of one change.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as g

_TOTALS = re.compile(r"^totals:\s*(\d+)", re.MULTILINE)


async def _client(port: int, requests: int, connections: int, stream: bool = False) -> None:
    """``requests`` chat completions over ``connections`` keep-alive connections (streamed:
    read to the chunked body's last chunk)."""
    body = g._request_body(g.STREAM_MODEL if stream else g.MODEL, stream).encode()
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
            if stream:
                await reader.readuntil(b"\r\n0\r\n\r\n")
                continue
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


def _spawn(prefix: list[str], cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    """``headway serve cfg`` (under ``prefix``, e.g. valgrind), its output to ``log``."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [*prefix, str(g.ROOT / ".venv" / "bin" / "headway"), "serve", str(cfg)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=log.parent,
        )


class Counted(NamedTuple):
    """One run's instructions per request: ``raw`` is everything counted while the requests
    ran; ``net`` takes out the server's time-driven background work (the metrics timeline
    ticks once a second, the access log flushes on a timer), at the rate measured over an
    idle spell of the same process. Under callgrind the server answers ~200 requests a
    second, so a tick lands on ~50x fewer requests than at the bench's real rate; ``net`` is
    what a request costs at saturation."""

    raw: float
    net: float
    idle_per_second: float


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _window(pid: int, out: Path, part: int) -> int:
    """Instructions counted since the last dump: dump them (callgrind zeroes its counters)
    and read the part's ``totals:`` line."""
    _control(pid, "-d")
    found = _TOTALS.findall((out.parent / f"{out.name}.{part}").read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"no totals in dump {part} of {out}")
    return int(found[-1])


def count(
    up: g.Upstream,
    workdir: Path,
    *,
    observe: bool,
    requests: int,
    connections: int,
    idle_seconds: float,
    stream: bool = False,
) -> Counted:
    """Instructions per request of one ``headway serve`` run under callgrind."""
    port, admin = g.free_port(), g.free_port()
    os.environ["HEADWAY_BENCH_OBSERVE"] = "1" if observe else "0"
    cfg = workdir / f"headway-{int(observe)}.yaml"
    cfg.write_text(g.headway_config(up, port, admin))
    log = workdir / f"callgrind-{int(observe)}.log"
    out = workdir / f"callgrind-{int(observe)}.out"
    tool = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proc = _spawn(tool, cfg, log)
    try:
        _wait_ready(port, proc, 300)
        warm = max(requests // 5, connections)
        asyncio.run(_client(port, warm, connections, stream))  # warm up
        # Outcomes are recorded in batches up to observe.record_delay after they end: let the
        # warm-up's last batch land before the idle spell, and the counted requests' last
        # batch inside the counted window (its wait is idle time, taken out with the rest).
        settle = 2 * float(os.environ.get("HEADWAY_BENCH_RECORD_DELAY", "0.01"))
        time.sleep(settle)
        _control(proc.pid, "-i", "on")
        started = time.monotonic()
        time.sleep(idle_seconds)
        _control(proc.pid, "-i", "off")
        idle_rate = _window(proc.pid, out, 1) / (time.monotonic() - started)
        _control(proc.pid, "-i", "on")
        started = time.monotonic()
        asyncio.run(_client(port, requests, connections, stream))
        time.sleep(settle)
        _control(proc.pid, "-i", "off")
        busy = time.monotonic() - started
        total = _window(proc.pid, out, 2)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    served = requests // connections * connections
    return Counted(total / served, (total - idle_rate * busy) / served, idle_rate)


_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


class Kernel(NamedTuple):
    """One native run (no valgrind): system calls per request, and the user-space share of
    the server's CPU time while it answered."""

    syscalls: float
    by_call: dict[str, float]
    user_share: float


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of the process, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def kernel_side(
    up: g.Upstream,
    workdir: Path,
    *,
    observe: bool,
    requests: int,
    connections: int,
    stream: bool = False,
) -> Kernel:
    """The same server as ``count``'s, run natively: ``requests`` requests timed by
    ``/proc/<pid>/stat`` (at full speed), then as many again under ``strace -c -f`` (slowed
    down, so batches are smaller and the access log's writes, if anything, more frequent)."""
    port, admin = g.free_port(), g.free_port()
    os.environ["HEADWAY_BENCH_OBSERVE"] = "1" if observe else "0"
    delay = os.environ.get("HEADWAY_BENCH_RECORD_DELAY")
    os.environ["HEADWAY_BENCH_RECORD_DELAY"] = "0.01"  # the config's default, as served
    cfg = workdir / f"native-{int(observe)}.yaml"
    try:
        cfg.write_text(g.headway_config(up, port, admin))
    finally:  # count()'s callgrind runs keep theirs
        if delay is not None:
            os.environ["HEADWAY_BENCH_RECORD_DELAY"] = delay
    summary = workdir / f"strace-{int(observe)}.txt"
    proc = _spawn([], cfg, workdir / f"native-{int(observe)}.log")
    try:
        _wait_ready(port, proc, 60)
        asyncio.run(_client(port, max(requests // 5, connections), connections, stream))
        user0, system0 = _cpu_ticks(proc.pid)
        asyncio.run(_client(port, requests * 10, connections, stream))  # 1-2 s: 100-200 ticks
        user1, system1 = _cpu_ticks(proc.pid)
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-p", str(proc.pid), "-o", str(summary)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # attached to every thread
        asyncio.run(_client(port, requests, connections, stream))
        time.sleep(0.1)  # the last batch's write
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    served = requests // connections * connections
    calls = {
        m.group(2): int(m.group(1)) / served
        for line in summary.read_text().splitlines()
        if (m := _STRACE_ROW.match(line)) and m.group(2) != "total"
    }
    user, system = user1 - user0, system1 - system0
    return Kernel(sum(calls.values()), calls, user / max(user + system, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per run")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="off/on pairs per row; the row shows the pair with the median cost, and every"
        " pair's (a 50-connection row moves by thousands of instructions between runs)",
    )
    parser.add_argument(
        "--connections",
        default="8,50",
        help="client connections, comma-separated (50: bench/gateway.py's saturation runs)",
    )
    parser.add_argument(
        "--shapes", default="json,stream", help="json (non-streaming), stream, or both"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=4.0, help="idle spell that measures background work"
    )
    parser.add_argument(
        "--record-delay",
        type=float,
        default=0.5,
        help="observe.record_delay under callgrind (default: the config's 10 ms times callgrind's"
        " ~50x slowdown, so a recorded batch holds about as many requests as a real worker's"
        " at saturation)",
    )
    args = parser.parse_args(argv)
    os.environ["HEADWAY_BENCH_RECORD_DELAY"] = str(args.record_delay)
    connections = [int(c) for c in args.connections.split(",")]
    shapes = [s.strip() for s in args.shapes.split(",")]
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(
                f"cannot run: {tool} is not installed (apt-get install valgrind)", file=sys.stderr
            )
            return 2
    try:
        g.ensure_apt("nginx", "nginx")
        g.ensure_apt("strace", "strace")
    except g.Unavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    rows: list[tuple[str, int, list[tuple[Counted, Counted]], Kernel, Kernel]] = []
    with tempfile.TemporaryDirectory(prefix="headway-instr-") as tmp:
        workdir = Path(tmp)
        up, upstream = g.start_upstream(workdir)
        try:
            for shape in shapes:
                for conns in connections:
                    run = functools.partial(
                        count,
                        up,
                        workdir,
                        requests=args.requests,
                        connections=conns,
                        idle_seconds=args.idle_seconds,
                        stream=shape == "stream",
                    )
                    repeat = range(max(args.repeat, 1))
                    pairs = [(run(observe=False), run(observe=True)) for _ in repeat]
                    native_off, native_on = (
                        kernel_side(
                            up,
                            workdir,
                            observe=observe,
                            requests=args.requests,
                            connections=conns,
                            stream=shape == "stream",
                        )
                        for observe in (False, True)
                    )
                    rows.append((shape, conns, pairs, native_off, native_on))
                    print(f"measured {shape} at {conns} connections", file=sys.stderr, flush=True)
        finally:
            upstream.stop()
    print(
        "| Headway (one worker, bench config) | connections | observe off | observe on |"
        " observability | raw (with background work) | system calls off / on |"
        " user share of CPU | CPU estimate | each pair |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, conns, pairs, koff, kon in rows:
        ranked = sorted(pairs, key=lambda pair: pair[1].net / pair[0].net)
        off, on = ranked[(len(ranked) - 1) // 2]  # the median pair (the lower one of two)
        each = ", ".join(f"{(b.net / a.net - 1) * 100:+.1f}%" for a, b in pairs)
        extra, raw = on.net - off.net, on.raw - off.raw
        label = "chat completion" if shape == "json" else f"streamed ({g.CHUNKS} chunks)"
        share = koff.user_share
        print(
            f"| {label} | {conns} | {off.net:,.0f} | {on.net:,.0f} |"
            f" {extra:+,.0f} ({extra / off.net * 100:+.1f}%) |"
            f" {raw:+,.0f} ({raw / off.raw * 100:+.1f}%) |"
            f" {koff.syscalls:.2f} / {kon.syscalls:.2f} | {share * 100:.0f}% |"
            f" {extra / off.net * share * 100:+.1f}% | {each} |"
        )
    print(
        f"\nInstructions per request; each run counts {args.requests} requests over keep-alive"
        " connections, under callgrind (user-space instructions; kernel time and cache misses"
        " not included). The observe columns take out the background work the server does per"
        " second whatever its load (the timeline tick, the log flush), measured over an idle"
        " spell: under callgrind's ~50x slowdown it would land on 50x fewer requests than at"
        " the bench's rate. More connections: more answers per event-loop turn, so the"
        " per-batch costs of recording are shared by more requests. System calls per request"
        " (strace -c) and the user-space share of the CPU time (/proc, observe off) come from"
        " the same server run natively; CPU estimate = the observability instruction ratio"
        " times that share, which holds while the system calls are the same on and off."
    )
    for shape, conns, _, koff, kon in rows:
        moved = {
            name: kon.by_call.get(name, 0.0) - koff.by_call.get(name, 0.0)
            for name in sorted(set(koff.by_call) | set(kon.by_call))
        }
        shown = ", ".join(f"{n} {d:+.3f}" for n, d in moved.items() if abs(d) >= 0.005)
        print(f"system calls a request, on - off, {shape} at {conns}: {shown or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
