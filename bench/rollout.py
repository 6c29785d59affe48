"""Canary rollouts, simulated: are regressions aborted fast, and healthy canaries left alone?

Run: ``.venv/bin/python bench/rollout.py`` (``--quick`` for a smoke run of a few seconds;
``--seed`` to change the fixed seed). Each rollout runs the real ``RolloutController`` and judge
on a ``ManualClock`` against a synthetic traffic model, one simulated second at a time:

- Poisson arrivals (``RPS`` per second); each request goes to the canary with probability
  ``weight / 100``;
- per attempt: an error with the pool's probability, else a lognormal latency and TTFT
  (stable: median 800 ms / 200 ms, sigma 0.5);
- a failed canary attempt is retried once on stable if the real ``RetryBudget`` (Finagle
  defaults, on the same manual clock) allows it, unless the failure came after the first byte
  (``MIDSTREAM`` of failures: a broken stream cannot be retried);
- the split records per-attempt outcomes per side in the real ``SideRecorder`` (stable retries
  count as stable attempts), and the controller drains it each analysis window.

Blast radius = requests whose client saw a failure caused by the canary (an injected canary
fault not rescued by a retry) / all requests during the rollout. Goals (issue #10): A/A aborted
<= 2% over >= 50 rollouts; a 20%-error canary at 5% weight aborted within two analysis
intervals with blast radius < 0.2% (checked on the mean over its runs: the radius is about
weight x excess error rate x share of failures not retried, whatever the interval, so single
runs scatter around it with the few failures they count); no real regression promoted.

Shadow cost (last row; ``--shadow`` runs only it): primary p99 through a real ``headway serve``
with shadowing on vs off, goal within 2% (``bench/_shadow_cost.py`` says how it is measured).
Under ``--quick`` a p99 miss is printed but does not fail the run (a few hundred samples); not
mirroring every request does.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import _shadow_cost as shadow_cost
from headway.core import ManualClock
from headway.guard.retry import RetryBudget
from headway.rollout import (
    Phase,
    RolloutController,
    SideRecorder,
    SplitWindow,
    parse_rollout_spec,
)

RPS = 50.0
STABLE_ERROR = 0.005
LATENCY_MEDIAN = 0.8
TTFT_MEDIAN = 0.2
SIGMA = 0.5
#: Share of canary failures that happen after the first byte (not retryable). Ours: a model
#: server usually fails on connect or before its first token; a mid-stream break is rarer.
MIDSTREAM = 0.10
INTERVAL = 60.0
MAX_SECONDS = 3600

SPEC = {
    "name": "bench",
    "steps": [
        {"set_weight": 5},
        {"analysis": {"count": 2}},
        {"set_weight": 25},
        {"pause": {"duration": 60}},
        {"analysis": {}},
        {"set_weight": 50},
        {"analysis": {}},
    ],
    "analysis": {"interval": INTERVAL},
}


@dataclass(frozen=True)
class Canary:
    name: str
    error: float = STABLE_ERROR
    latency_factor: float = 1.0
    sigma: float = SIGMA
    regression: bool = True
    rps: float = RPS


# Same median, 3x p99: sigma s with exp(2.326 s) = 3 exp(2.326 * 0.5).
_TAIL_SIGMA = 0.5 + float(np.log(3.0)) / 2.326

CASES = [
    Canary("A/A (identical)", regression=False),
    Canary("A/A, 2 rps (too little)", regression=False, rps=2.0),
    Canary("5% errors", error=0.05),
    Canary("20% errors", error=0.20),
    Canary("50% errors", error=0.50),
    Canary("1.5x latency", latency_factor=1.5),
    Canary("3x latency", latency_factor=3.0),
    Canary("same median, 3x p99", sigma=_TAIL_SIGMA),
]


@dataclass(frozen=True)
class Outcome:
    phase: Phase
    seconds: float
    requests: int
    blast: int  # client-visible failures caused by the canary


class Split:
    """Both sides' recorders, drained into one ``SplitWindow`` per analysis window."""

    def __init__(self, clock: ManualClock, seed: int) -> None:
        self.clock = clock
        self.stable = SideRecorder(rng=random.Random(seed))
        self.canary = SideRecorder(rng=random.Random(seed + 1))
        self.since = clock.now()
        self.weight: Callable[[], int] = lambda: 0

    def drain(self) -> SplitWindow:
        now = self.clock.now()
        window = SplitWindow(
            self.since, now, self.weight(), self.stable.drain(), self.canary.drain()
        )
        self.since = now
        return window


def simulate(canary: Canary, seed: int) -> Outcome:
    rng = np.random.default_rng(seed)
    clock = ManualClock(0.0)
    budget = RetryBudget(clock=clock)
    split = Split(clock, seed)
    controller = RolloutController(
        parse_rollout_spec(SPEC), observe=split.drain, clock=clock, wall=None
    )
    split.weight = controller.current_weight
    start = clock.now()
    controller.tick()
    requests = blast = 0
    seconds = 0
    # A held rollout waits for an operator; the simulation has none.
    while controller.phase is Phase.RUNNING and seconds < MAX_SECONDS:
        weight = controller.current_weight()
        n = int(rng.poisson(canary.rps))
        requests += n
        for _ in range(n):
            budget.deposit()
        to_canary = int(rng.binomial(n, weight / 100.0))
        n_stable = n - to_canary
        # Stable attempts (first tries).
        stable_errors = int(rng.binomial(n_stable, STABLE_ERROR))
        _record(split.stable, rng, n_stable, stable_errors, 1.0, SIGMA)
        # Canary attempts: a baseline-level error, or an injected fault on top of it.
        injected_p = max(0.0, (canary.error - STABLE_ERROR) / (1.0 - STABLE_ERROR))
        base = rng.random(to_canary) < STABLE_ERROR
        injected = ~base & (rng.random(to_canary) < injected_p)
        failed = int(base.sum() + injected.sum())
        _record(split.canary, rng, to_canary, failed, canary.latency_factor, canary.sigma)
        # Retries of failed canary attempts onto stable, within the budget, before first byte.
        retries = retry_errors = 0
        faults = [False] * int(base.sum()) + [True] * int(injected.sum())
        for fault in faults:
            if rng.random() < MIDSTREAM or not budget.try_withdraw():
                blast += fault
                continue
            retries += 1
            retry_errors += int(rng.random() < STABLE_ERROR)
        _record(split.stable, rng, retries, retry_errors, 1.0, SIGMA)
        clock.step(1.0)
        seconds += 1
        controller.tick()
    return Outcome(controller.phase, clock.now() - start, requests, blast)


def _record(
    side: SideRecorder, rng: np.random.Generator, n: int, errors: int, factor: float, sigma: float
) -> None:
    if n == 0:
        return
    latencies = rng.lognormal(np.log(LATENCY_MEDIAN * factor), sigma, n - errors)
    ttfts = rng.lognormal(np.log(TTFT_MEDIAN * factor), sigma, n - errors)
    for latency, ttft in zip(latencies.tolist(), ttfts.tolist(), strict=True):
        side.first_byte(ttft)
        side.finished(latency, error=False)
    for _ in range(errors):
        side.finished(None, error=True)


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rollouts: a smoke run")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--aa", type=int, default=None, help="A/A rollouts (default 100)")
    parser.add_argument("--runs", type=int, default=None, help="rollouts per regression")
    parser.add_argument(
        "--shadow", action="store_true", help="only the shadow cost (a real gateway, ~1 min)"
    )
    args = parser.parse_args(argv)
    cpu = time.process_time()
    failures = [] if args.shadow else _rollouts(args)
    failures += _shadow_cost(args.quick)
    print(f"cpu {time.process_time() - cpu:.1f} s (this process)")
    for failure in failures:
        print(f"GOAL MISSED: {failure}")
    return 1 if failures else 0


def _rollouts(args: argparse.Namespace) -> list[str]:
    aa_runs = args.aa or (10 if args.quick else 100)
    runs = args.runs or (3 if args.quick else 20)
    print(
        f"rollout bench: {RPS:g} rps Poisson, stable {STABLE_ERROR:.1%} errors, latency "
        f"median {LATENCY_MEDIAN * 1000:.0f} ms sigma {SIGMA}, interval {INTERVAL:g} s, "
        f"steps 5% (2 analyses) -> 25% (pause 60 s, analysis) -> 50% (analysis) -> 100%, "
        f"retry budget 20% + 10/s, {MIDSTREAM:.0%} of failures mid-stream, seed {args.seed}"
    )
    header = (
        f"{'canary':<25}{'runs':>5}{'aborted':>9}{'held':>6}{'promoted':>10}"
        f"{'abort at (s) med/max':>22}{'intervals max':>15}{'blast mean/max':>18}"
    )
    print(header)
    print("-" * len(header))
    failures: list[str] = []
    for index, case in enumerate(CASES):
        count = runs if case.regression or case.rps != RPS else aa_runs
        outcomes = [simulate(case, args.seed * 100_000 + index * 1000 + i) for i in range(count)]
        aborted = [o for o in outcomes if o.phase is Phase.ABORTED]
        promoted = sum(o.phase is Phase.PROMOTED for o in outcomes)
        held = sum(o.phase is Phase.PAUSED for o in outcomes)
        times = [o.seconds for o in aborted]
        blasts = [o.blast / o.requests for o in outcomes if o.requests]
        when = f"{statistics.median(times):.0f}/{max(times):.0f}" if times else "-"
        intervals = f"{max(times) / INTERVAL:.1f}" if times else "-"
        blast = f"{_pct(statistics.mean(blasts))}/{_pct(max(blasts))}" if blasts else "-"
        rate = len(aborted) / count
        print(
            f"{case.name:<25}{count:>5}{_pct(rate):>9}{held:>6}{promoted:>10}"
            f"{when:>22}{intervals:>15}{blast:>18}"
        )
        if not case.regression and case.rps == RPS and rate > 0.02:
            failures.append(f"A/A false alarms {_pct(rate)} > 2%")
        if case.regression and promoted:
            failures.append(f"{case.name}: {promoted} promoted")
        if case.rps != RPS and promoted:
            failures.append(f"{case.name}: promoted without enough data")
        if case.name == "20% errors" and (
            len(times) < count or max(times) > 2 * INTERVAL or statistics.mean(blasts) >= 0.002
        ):
            failures.append("20% errors: not aborted within 2 intervals with blast < 0.2%")
    return failures


def _shadow_cost(quick: bool) -> list[str]:
    """Primary p99 with shadowing on vs off through a real gateway (``bench/_shadow_cost.py``)."""
    blocks, pairs = (100, 2) if quick else (200, 8)
    try:
        cost = shadow_cost.measure(blocks, pairs)
    except (OSError, RuntimeError) as exc:
        print(f"{'shadow cost':<25} unavailable: {exc}")
        return []
    row, failure = shadow_cost.report(cost, gate=not quick)
    print(f"{'shadow cost':<25} {row}")
    return [] if failure is None else [failure]


if __name__ == "__main__":
    sys.exit(main())
