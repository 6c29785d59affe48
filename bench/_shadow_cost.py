"""Shadow cost: the primary's latency through a real gateway with shadowing off vs on.

One ``headway serve`` process (one worker, pinned to core 0 like ``bench/gateway.py``) serves two
models on the same stable pool: ``bench-off`` (no shadow) and ``bench-on`` (``shadow:`` with
sample 1.0, a candidate pool, the noise pool on and caps far above the load, so every request is
mirrored twice). Comparing two models of one process, rather than two processes, keeps
everything else identical: the same warm process, sockets and upstream connections.

The sims run as their own processes (``python -m headway.sim``, core 1): one for the stable
pool, one for the candidate and noise pools. In the gateway's process they would share its event
loop, and shadowing would then also count the candidate's and the noise pool's own work, which
in production runs on other machines. The load generator (this process, core 1) is the repo's
keep-alive ``UpstreamPool`` sending Poisson arrivals (see ``_measure`` for why not a closed
loop). Short off and on blocks alternate with the same arrival times, each waiting for the
previous block's mirrors to end; p99 is taken over all blocks of a side, and the same ratio
between the off blocks of odd and even pairs is printed as the noise floor. The mirror count
comes from the admin API's shadow snapshot. The gateway's CPU time per request (``/proc``,
10 ms ticks) is reported too: unlike wall time it hardly moves with the other tenants of a
shared VM.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headway.http.client import UpstreamPool

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
HEADWAY = ROOT / ".venv" / "bin" / "headway"
GATEWAY_CPU = "0"
LOAD_CPU = "1"
GOAL = 0.02  # issue #10: primary p99 with shadowing on within 2% of off
KEY = "sk-bench"
MODELS = {False: "bench-off", True: "bench-on"}
CONCURRENCY = 8
SEED = 10
# The sim's default time to first token (the demo's). A 2% goal is relative to the upstream's
# latency: at 10 ms it is 200 us, about one mirror's CPU on the gateway; real models take longer.
TTFT = 0.05
# Fast sims (16 tokens at 100k tokens/s, no queueing); the time to first token is measure()'s.
SIM_ARGS = ["--models", "small", "--tokens-per-second", "100000", "--capacity", "1000",
            "--output-tokens", "16"]  # fmt: skip

CONFIG = """\
version: 1
server: {{listen: "127.0.0.1:{port}", admin_listen: "127.0.0.1:{admin_port}", workers: 1}}
pools:
  - {{name: stable, endpoints: [{{url: "http://127.0.0.1:{stable}/v1"}}]}}
  - {{name: candidate, endpoints: [{{url: "http://127.0.0.1:{shadow}/v1"}}]}}
  - {{name: noise, endpoints: [{{url: "http://127.0.0.1:{shadow}/v1"}}]}}
models:
  - {{name: bench-off, pool: stable, upstream_model: small}}
  - name: bench-on
    pool: stable
    upstream_model: small
    shadow: {{pool: candidate, noise_pool: noise, sample: 1.0, max_per_minute: 10000000,
             max_concurrency: 1000}}
tenants:
  - {{name: bench, keys: ["{key}"], priority: critical, models: ["*"]}}
"""


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank)."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


@dataclass(frozen=True)
class ShadowCost:
    off: list[list[float]]  # per block, latencies in seconds, in run order
    on: list[list[float]]
    cpu: tuple[float, float]  # gateway CPU seconds, off and on blocks
    mirrored: int
    noise_mirrored: int
    skipped: dict[str, int]
    concurrency: int
    ttft: float

    @staticmethod
    def _pool(blocks: list[list[float]]) -> list[float]:
        return sorted(x for block in blocks for x in block)

    def p(self, on: bool, q: float) -> float:
        return pct(self._pool(self.on if on else self.off), q)

    @property
    def ratio(self) -> float:
        """p99 on / p99 off, over all blocks of each."""
        return self.p(True, 0.99) / self.p(False, 0.99)

    @property
    def aa_ratio(self) -> float:
        """The same ratio between the off blocks of odd and even pairs: the noise floor."""
        return pct(self._pool(self.off[1::2]), 0.99) / pct(self._pool(self.off[::2]), 0.99)

    def cpu_per_request(self, on: bool) -> float:
        blocks = self.on if on else self.off
        return self.cpu[on] / sum(len(block) for block in blocks)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(cmd: list[str], cpu: str | None, log: Path) -> subprocess.Popen[bytes]:
    pin = [] if cpu is None else ["taskset", "-c", cpu]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*pin, *cmd], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )


def _await_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    raise RuntimeError(f"{proc.args!r} not listening on {port}: {' | '.join(tail)}")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _shadow_snapshot(admin_port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{admin_port}/api/shadow"
    with urllib.request.urlopen(url, timeout=10) as answer:
        document: dict[str, Any] = json.loads(answer.read())
    return dict(document["models"]["bench-on"])


async def _drive(pool: UpstreamPool, model: str, gaps: list[float]) -> list[float]:
    """One request after each gap (seconds), each timed from its own send to its last byte."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    ).encode()
    headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json")]
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        response = await pool.request("POST", "/chat/completions", headers, body, deadline=math.inf)
        async with response:
            await response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"{model}: HTTP {response.status}")

    loop = asyncio.get_running_loop()
    due = loop.time()
    tasks = []
    for gap in gaps:
        due += gap
        await asyncio.sleep(due - loop.time())
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies


async def _settle(admin_port: int) -> None:
    """Wait until no mirror is in flight, so a run never pays for the previous one's."""
    for _ in range(200):
        if (await asyncio.to_thread(_shadow_snapshot, admin_port))["inflight"] == 0:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("mirrors still in flight after 10 s")


async def _measure(
    port: int, admin_port: int, pid: int, block: int, concurrency: int, pairs: int, ttft: float
) -> ShadowCost:
    # Poisson arrivals (open loop) at the rate that keeps ``concurrency`` in flight on average.
    # Not a closed loop: the sims' latency is exact, so a fixed set of clients would move in
    # lockstep, every mirror would land in the same instant as the next wave of primaries, and
    # p99 would time one wave's bunching, which no independent traffic has.
    rng = random.Random(SEED)
    rate = concurrency / ttft

    def gaps() -> list[float]:
        return [rng.expovariate(rate) for _ in range(block)]

    pool = UpstreamPool(f"http://127.0.0.1:{port}/v1", max_connections=4 * concurrency + 16)
    blocks: dict[bool, list[list[float]]] = {False: [], True: []}
    cpu = {False: 0.0, True: 0.0}
    async with pool:
        for model in ("bench-off", "bench-on"):  # warm-up: connections, caches
            await _drive(pool, model, gaps())
        await _settle(admin_port)
        before = await asyncio.to_thread(_shadow_snapshot, admin_port)
        for i in range(pairs):
            # Short blocks, alternating which goes first, the same arrivals on both sides: the
            # VM's other tenants come and go over seconds, so they land on both sides alike.
            schedule = gaps()
            for on in (False, True) if i % 2 == 0 else (True, False):
                started = _cpu_seconds(pid)
                blocks[on].append(await _drive(pool, MODELS[on], schedule))
                await _settle(admin_port)  # the on block's CPU includes its mirrors
                cpu[on] += _cpu_seconds(pid) - started
        after = await asyncio.to_thread(_shadow_snapshot, admin_port)
    skipped = {k: after["skipped"][k] - before["skipped"][k] for k in after["skipped"]}
    return ShadowCost(
        blocks[False],
        blocks[True],
        (cpu[False], cpu[True]),
        after["mirrored"] - before["mirrored"],
        after["noise_mirrored"] - before["noise_mirrored"],
        {k: v for k, v in skipped.items() if v},
        concurrency,
        ttft,
    )


def measure(
    block: int, pairs: int, *, concurrency: int = CONCURRENCY, ttft: float = TTFT
) -> ShadowCost:
    """Start sims and a gateway, alternate ``pairs`` off/on blocks, stop everything."""
    if sys.platform != "linux":
        raise RuntimeError("needs Linux (/proc for CPU time)")
    pinned = shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="headway-shadow-") as tmp:
        work = Path(tmp)
        try:
            ports = {}
            for name, seed in (("stable", "1"), ("shadow", "2")):
                ports[name] = _free_port()
                log = work / f"sim-{name}.log"
                cmd = [str(PYTHON), "-m", "headway.sim", "--port", str(ports[name]), *SIM_ARGS]
                cmd += ["--ttft", str(ttft), "--seed", seed]
                procs.append(_spawn(cmd, LOAD_CPU if pinned else None, log))
                _await_port(ports[name], procs[-1], log, 30)
            port, admin_port = _free_port(), _free_port()
            config = work / "headway.yaml"
            config.write_text(CONFIG.format(port=port, admin_port=admin_port, key=KEY, **ports))
            log = work / "headway.log"
            cmd = [str(HEADWAY), "serve", str(config), "--no-watch"]
            procs.append(_spawn(cmd, GATEWAY_CPU if pinned else None, log))
            _await_port(port, procs[-1], log, 60)
            args = (port, admin_port, procs[-1].pid, block, concurrency, pairs, ttft)
            affinity = os.sched_getaffinity(0)
            if pinned:
                os.sched_setaffinity(0, {int(LOAD_CPU)})
            try:
                return _run(_measure(*args))
            finally:
                os.sched_setaffinity(0, affinity)
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _run(main: Coroutine[Any, Any, ShadowCost]) -> ShadowCost:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency
        return asyncio.run(main)
    return uvloop.run(main)


def report(cost: ShadowCost, *, gate: bool = True) -> tuple[str, str | None]:
    """The table row and, when a goal is missed, why. The p99 verdict is "pass" within the goal,
    "noise" when over it by less than the off/off spread (this VM cannot tell), else "MISS";
    only a MISS with ``gate`` fails (a smoke run's few hundred samples make a noisy p99)."""
    ms = 1000.0
    ratio = cost.ratio
    noise = abs(cost.aa_ratio - 1.0)
    if ratio <= 1.0 + GOAL:
        verdict = "pass"
    elif ratio - 1.0 <= noise:
        verdict = "noise"
    else:
        verdict = "MISS" if gate else "miss (not gated)"
    per_side = sum(len(block) for block in cost.on)
    row = (
        f"p99 off/on {cost.p(False, 0.99) * ms:.2f}/{cost.p(True, 0.99) * ms:.2f} ms = "
        f"{ratio:.3f} {verdict} (goal <= {1 + GOAL:.2f}, off/off {cost.aa_ratio:.3f}); "
        f"p50 {cost.p(False, 0.5) * ms:.2f}/{cost.p(True, 0.5) * ms:.2f} ms; "
        f"{len(cost.on)} x 2 blocks of {len(cost.on[0])} req, Poisson "
        f"{cost.concurrency / cost.ttft:.0f}/s (~{cost.concurrency} in flight), "
        f"upstream ttft {cost.ttft * ms:g} ms; mirrored {cost.mirrored}/{per_side} "
        f"(+{cost.noise_mirrored} noise)"
        f"{', skipped ' + str(cost.skipped) if cost.skipped else ''}; gateway CPU/req "
        f"{cost.cpu_per_request(False) * 1e6:.0f}/{cost.cpu_per_request(True) * 1e6:.0f} us"
    )
    if cost.mirrored != per_side or cost.noise_mirrored != per_side:
        return row, f"shadow cost: mirrored {cost.mirrored} of {per_side} requests"
    if verdict == "MISS":
        return row, f"shadow cost: primary p99 on/off {ratio:.3f} > {1 + GOAL:.2f}"
    return row, None
