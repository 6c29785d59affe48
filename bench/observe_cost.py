"""What observability costs in CPU per request, on the wall clock, with the VM's drift cancelled.

Separate ``bench/gateway.py`` runs with metrics and access log off and on disagree by more than
the cost itself on these VMs (pairs of 5 s runs moved from +11% to -13%), because the machine
drifts between runs. This starts two ``headway serve`` processes with the bench config (one
worker each), one with ``observe: {metrics: false, access_log: false}`` and one with both
true, pinned to the same core, and loads them in turn with ``wrk`` (50 connections, as the
saturation runs) in short rounds, in ABBA order. For each round it reads the server's CPU
time (user + system, from ``/proc``, every process of its session) and the requests ``wrk``
counted: CPU per request. A drift slower than a round lands on both sides alike. Prints the
median of each side's rounds and, as the cost, the median of the rounds' on/off ratios (each
round's two runs are back to back), for chat completions and for streams.

Unlike ``bench/instructions.py`` this includes kernel time (socket reads and writes, the access
log's writes) and cache effects; it needs the CPU time to be the server's own, so run it on an
otherwise idle machine.

Run: ``.venv/bin/python bench/observe_cost.py`` (needs nginx and wrk, which ``bench/gateway.py``
installs; ~2 minutes). ``--rounds`` and ``--seconds`` trade time for spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as g

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(leader: int) -> float:
    """User + system CPU seconds of every live process in the session ``leader`` started."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # After the ")" that ends the name: field 6 (session) is [3], utime/stime [11]/[12].
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == leader:
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we looked
    return total / _TICKS


def start(
    up: g.Upstream, workdir: Path, observe: bool, tag: str = ""
) -> tuple[g.Server, g.Target, g.Target]:
    port, admin = g.free_port(), g.free_port()
    os.environ["HEADWAY_BENCH_OBSERVE"] = "1" if observe else "0"
    name = f"headway-{int(observe)}{tag}"
    config = workdir / f"{name}.yaml"
    config.write_text(g.headway_config(up, port, admin))
    exe = g.ROOT / ".venv" / "bin" / "headway"
    server = g.spawn(name, [str(exe), "serve", str(config)], g.PROXY_CPU, workdir)
    g._await_port(server, port, 60)
    path = "/v1/chat/completions"
    return (
        server,
        g.Target(port, path, g._request_body(g.MODEL, False)),
        g.Target(port, path, g._request_body(g.STREAM_MODEL, True)),
    )


def rounds(
    sides: list[tuple[g.Server, g.Target]], count: int, seconds: float, workdir: Path
) -> list[list[float]]:
    """CPU microseconds per request of each side, ``count`` rounds each, in ABBA order."""
    out: list[list[float]] = [[] for _ in sides]
    for _, target in sides:  # warm up: connection pools, caches and sketches fill
        g.wrk(target, 50, 2, workdir)
    for r in range(count):
        order = range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))
        for i in order:
            server, target = sides[i]
            before = cpu_seconds(server.proc.pid)
            load = g.wrk(target, 50, seconds, workdir)
            used = cpu_seconds(server.proc.pid) - before
            served = load.rps * seconds
            if load.errors or served <= 0:
                raise g.Unavailable(f"{server.name}: {load.errors} errors in a round")
            out[i].append(used / served * 1e6)
    return out


def row(label: str, quiet: list[float], loud: list[float]) -> str:
    """One table row: each side's median, and the cost read from the rounds' pairs."""
    q, lo = statistics.median(quiet), statistics.median(loud)
    # Each round's two sides ran back to back: their ratio cancels a drift slower than a
    # round, which the medians of each side alone do not.
    paired = sorted((y / x - 1) * 100 for x, y in zip(quiet, loud, strict=True))
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
    return (
        f"| {label} | {q:.1f} | {lo:.1f} | {statistics.median(paired):+.1f}%"
        f" ({quartiles[0]:+.1f}% to {quartiles[2]:+.1f}%) | {(lo / q - 1) * 100:+.1f}% |"
        f" {min(quiet):.1f}-{max(quiet):.1f}; {min(loud):.1f}-{max(loud):.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side and shape")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per round")
    parser.add_argument(
        "--control",
        action="store_true",
        help="also measure two identical observe-off servers the same way: what a run reads"
        " when there is nothing to find (twice the time)",
    )
    args = parser.parse_args(argv)
    try:
        g.ensure_apt("nginx", "nginx")
        g.ensure_apt("wrk", "wrk")
    except g.Unavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    lines = [
        "| Headway (one worker, bench config) | CPU µs per request, observe off | observe on |"
        " observability (median of the rounds' ratios; quartiles) | ratio of the medians |"
        " spread of the rounds (off; on) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="headway-observe-cost-") as tmp:
        workdir = Path(tmp)
        servers: list[g.Server] = []
        try:
            up, upstream = g.start_upstream(workdir)
            servers.append(upstream)
            off, off_plain, off_stream = start(up, workdir, observe=False)
            servers.append(off)
            on, on_plain, on_stream = start(up, workdir, observe=True)
            servers.append(on)
            pairs = [
                ("chat completion", off, off_plain, on, on_plain),
                (f"streamed ({g.CHUNKS} chunks)", off, off_stream, on, on_stream),
            ]
            if args.control:  # the same measurement of two identical servers: the noise floor
                twin, twin_plain, twin_stream = start(up, workdir, observe=False, tag="-twin")
                servers.append(twin)
                pairs += [
                    ("control: chat completion, off vs off", off, off_plain, twin, twin_plain),
                    ("control: streamed, off vs off", off, off_stream, twin, twin_stream),
                ]
            for label, first, a, second, b in pairs:
                quiet, loud = rounds([(first, a), (second, b)], args.rounds, args.seconds, workdir)
                lines.append(row(label, quiet, loud))
                print(f"measured {label}", file=sys.stderr, flush=True)
        except g.Unavailable as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        finally:
            for server in servers:
                server.stop()
    print("\n".join(lines))
    print(
        f"\nMedians of {args.rounds} rounds of {args.seconds:g} s per side (wrk, 50 connections,"
        " ABBA order), both servers pinned to one core and loaded in turn; CPU = the server's"
        " user + system time from /proc. Observability's cost is read from each round's pair"
        " of back-to-back runs (on / off), so drift slower than a round cancels; the quartiles"
        " of those ratios say how far one run can be trusted. Machine: " + g.machine() + "."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
