"""The rollout controller on a ManualClock: exact step timing, gates, commands, restarts."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import numpy as np
import pytest

from headway.core import ManualClock
from headway.rollout import (
    Action,
    MemoryRolloutStateStore,
    PauseReason,
    Phase,
    RolloutController,
    RolloutError,
    SideWindow,
    SplitWindow,
    Verdict,
    parse_rollout_spec,
)


class Feed:
    """A split whose windows hold healthy, failing or sparse canary samples (seeded)."""

    def __init__(self, clock: ManualClock, mode: str = "healthy") -> None:
        self.clock = clock
        self.mode = mode
        self.rng = np.random.default_rng(0)
        self.since = clock.now()
        self.drains = 0

    def side(self, n: int, error: float) -> SideWindow:
        errors = int(self.rng.binomial(n, error))
        ok = n - errors
        lat = list(self.rng.lognormal(math.log(0.8), 0.5, ok))
        return SideWindow(n, errors, lat, [x / 4 for x in lat])

    def __call__(self) -> SplitWindow:
        self.drains += 1
        now = self.clock.now()
        canary_n = 20 if self.mode == "sparse" else 300
        error = 0.3 if self.mode == "failing" else 0.005
        window = SplitWindow(
            self.since, now, 10, self.side(3000, 0.005), self.side(canary_n, error)
        )
        self.since = now
        return window


def make_spec(steps: list[dict[str, Any]], **analysis: Any) -> Any:
    return parse_rollout_spec(
        {"name": "r1", "steps": steps, "analysis": {"interval": 60, **analysis}}
    )


STEPS = [
    {"set_weight": 10},
    {"pause": {"duration": 30}},
    {"analysis": {"count": 2}},
    {"set_weight": 50},
    {"analysis": {}},
]


def controller(
    clock: ManualClock, mode: str = "healthy", steps: list[dict[str, Any]] | None = None, **kw: Any
) -> tuple[RolloutController, Feed]:
    feed = Feed(clock, mode)
    ctl = RolloutController(make_spec(steps or STEPS, **kw), observe=feed, clock=clock, wall=None)
    return ctl, feed


def run_to(ctl: RolloutController, clock: ManualClock, until: float) -> None:
    """Tick every second up to clock time ``until`` (as a driver would, at least)."""
    while clock.now() < until:
        clock.step(1.0)
        ctl.tick()


def actions(ctl: RolloutController) -> list[Action]:
    return [d.action for d in ctl.decisions]


def test_steps_advance_at_exact_times_and_promote() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock)
    ctl.tick()
    assert ctl.current_weight() == 10
    assert ctl.step_index == 1
    run_to(ctl, clock, 29)
    assert ctl.step_index == 1
    run_to(ctl, clock, 30)
    assert ctl.step_index == 2  # pause done; the gating window starts at 30
    assert ctl.next_wakeup() == 90
    run_to(ctl, clock, 149)
    assert ctl.current_weight() == 10  # one of two analyses passed
    run_to(ctl, clock, 150)
    assert ctl.current_weight() == 50
    assert ctl.step_index == 4
    run_to(ctl, clock, 210)
    assert ctl.phase is Phase.PROMOTED
    assert ctl.current_weight() == 100
    assert actions(ctl) == [
        Action.START,
        Action.SET_WEIGHT,
        Action.PAUSE_DONE,
        Action.ANALYSIS,
        Action.ANALYSIS,
        Action.SET_WEIGHT,
        Action.ANALYSIS,
        Action.PROMOTE,
    ]
    analyses = [d for d in ctl.decisions if d.action is Action.ANALYSIS]
    assert [d.at for d in analyses] == [90, 150, 210]
    assert all(d.analysis is not None and d.analysis.verdict is Verdict.PASS for d in analyses)
    assert ctl.next_wakeup() is None


def test_a_failing_canary_is_aborted_at_the_first_window_end_with_evidence() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock, "failing", [{"set_weight": 10}, {"analysis": {"count": 3}}])
    ctl.tick()
    run_to(ctl, clock, 59)
    assert ctl.current_weight() == 10
    run_to(ctl, clock, 60)
    assert ctl.phase is Phase.ABORTED
    assert ctl.current_weight() == 0
    last = ctl.decisions[-1]
    assert last.action is Action.ABORT
    assert last.by == "controller"
    assert last.analysis is not None
    assert last.analysis.verdict is Verdict.FAIL
    assert last.analysis.metric("errors").measured["rate_a"] > 0.2  # type: ignore[operator]


def test_background_analysis_aborts_during_a_long_pause() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock, "failing", [{"set_weight": 5}, {"pause": {"duration": 3600}}])
    ctl.tick()
    run_to(ctl, clock, 60)
    assert ctl.phase is Phase.ABORTED
    assert ctl.current_weight() == 0
    assert "background analysis" in ctl.decisions[-1].reason


def test_background_passes_are_recorded_but_do_not_gate() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock, steps=[{"set_weight": 5}, {"pause": {"duration": 150}}])
    ctl.tick()
    run_to(ctl, clock, 150)
    assert ctl.phase is Phase.PROMOTED
    assert actions(ctl).count(Action.ANALYSIS) == 2  # at 60 and 120


def test_operator_abort_and_promote_skip_every_remaining_step_at_once() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock)
    ctl.tick()
    clock.step(10)
    ctl.abort(by="alice", reason="bad vibes")
    assert ctl.current_weight() == 0
    assert ctl.phase is Phase.ABORTED
    assert ctl.decisions[-1].by == "alice"
    assert ctl.decisions[-1].reason == "bad vibes"
    run_to(ctl, clock, 500)
    assert ctl.current_weight() == 0
    assert ctl.step_index == 1
    for command in (ctl.pause, ctl.resume, ctl.promote, ctl.abort):
        with pytest.raises(RolloutError, match="aborted"):
            command()

    ctl2, _ = controller(ManualClock(0.0))
    ctl2.tick()
    ctl2.promote(by="bob")
    assert ctl2.current_weight() == 100
    assert ctl2.phase is Phase.PROMOTED


def test_pause_freezes_the_step_timer_and_resume_continues_it() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock, steps=[{"set_weight": 10}, {"pause": {"duration": 100}}])
    ctl.tick()
    run_to(ctl, clock, 40)
    ctl.pause(reason="lunch")
    assert ctl.phase is Phase.PAUSED
    assert ctl.pause_reason is PauseReason.OPERATOR
    with pytest.raises(RolloutError, match="already paused"):
        ctl.pause()
    run_to(ctl, clock, 1040)
    assert ctl.phase is Phase.PAUSED
    assert ctl.current_weight() == 10
    ctl.resume()
    run_to(ctl, clock, 1099)
    assert ctl.phase is Phase.RUNNING  # 40 + 59 s of running time
    run_to(ctl, clock, 1100)
    assert ctl.phase is Phase.PROMOTED


def test_a_pause_without_duration_waits_for_approval() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock, steps=[{"set_weight": 10}, {"pause": {}}, {"set_weight": 20}])
    ctl.tick()
    assert ctl.pause_reason is PauseReason.APPROVAL
    assert ctl.next_wakeup() == 60  # background analysis keeps watching
    run_to(ctl, clock, 1000)
    assert ctl.phase is Phase.PAUSED
    assert ctl.current_weight() == 10
    ctl.resume(by="carol")
    assert ctl.phase is Phase.PROMOTED  # approved, last step ran, end promotes
    assert [d.weight for d in ctl.decisions if d.action is Action.SET_WEIGHT] == [10, 20]


@pytest.mark.parametrize(
    ("action", "phase", "weight"), [("pause", Phase.PAUSED, 10), ("abort", Phase.ABORTED, 0)]
)
def test_inconclusive_retries_then_holds_or_aborts(action: str, phase: Phase, weight: int) -> None:
    clock = ManualClock(0.0)
    ctl, feed = controller(
        clock,
        "sparse",
        [{"set_weight": 10}, {"analysis": {}}],
        inconclusive_limit=2,
        on_inconclusive=action,
    )
    ctl.tick()
    run_to(ctl, clock, 179)
    assert ctl.phase is Phase.RUNNING  # two retries at 60 and 120
    run_to(ctl, clock, 180)
    assert ctl.phase is phase
    assert ctl.current_weight() == weight
    verdicts = [d.analysis.verdict for d in ctl.decisions if d.analysis is not None]
    assert verdicts == [Verdict.INCONCLUSIVE] * 3
    if phase is Phase.PAUSED:
        assert ctl.pause_reason is PauseReason.INCONCLUSIVE
        feed.mode = "healthy"  # more traffic arrives; an operator retries
        ctl.resume()
        run_to(ctl, clock, 240)
        assert ctl.phase is Phase.PROMOTED


async def test_restart_from_serialised_state_finishes_the_rollout() -> None:
    store = MemoryRolloutStateStore()
    clock = ManualClock(0.0)
    ctl, _ = controller(clock)
    ctl.tick()
    run_to(ctl, clock, 100)  # in the analysis step, one window passed at 90
    await store.save(ctl.name, ctl.to_dict())
    before = ctl.decisions

    # A new process: another clock base, the state from the store, fresh samples.
    clock2 = ManualClock(50_000.0)
    feed2 = Feed(clock2)
    restored = await RolloutController.load("r1", store, observe=feed2, clock=clock2, wall=None)
    assert restored is not None
    assert restored.current_weight() == 10
    assert restored.step_index == 2
    assert restored.decisions[: len(before)] == before
    assert restored.decisions[-1].action is Action.RESTORE
    assert restored.decisions[-1].at == 100
    assert restored.next_wakeup() == 50_060  # a fresh window
    run_to(restored, clock2, 50_060)
    assert restored.current_weight() == 50  # second pass: the count survived the restart
    run_to(restored, clock2, 50_120)
    assert restored.phase is Phase.PROMOTED
    assert await RolloutController.load("other", store, observe=feed2, clock=clock2) is None


async def test_restart_keeps_the_remaining_pause_time() -> None:
    clock = ManualClock(0.0)
    ctl, _ = controller(clock, steps=[{"set_weight": 10}, {"pause": {"duration": 100}}])
    ctl.tick()
    run_to(ctl, clock, 40)
    data = json.loads(json.dumps(ctl.to_dict(), allow_nan=False))
    clock2 = ManualClock(7.0)
    restored = RolloutController.restore(data, observe=Feed(clock2), clock=clock2, wall=None)
    run_to(restored, clock2, 66)
    assert restored.phase is Phase.RUNNING
    run_to(restored, clock2, 67)
    assert restored.phase is Phase.PROMOTED


def test_restore_rejects_unknown_state() -> None:
    clock = ManualClock(0.0)
    ctl, feed = controller(clock)
    data = ctl.to_dict()
    with pytest.raises(RolloutError, match="format"):
        RolloutController.restore({**data, "format": 99}, observe=feed, clock=clock)


async def test_run_loop_saves_each_change_and_wakes_on_commands() -> None:
    store = MemoryRolloutStateStore()
    clock = ManualClock(0.0)
    ctl, _ = controller(clock, steps=[{"set_weight": 10}, {"pause": {}}])
    task = asyncio.create_task(ctl.run(store))
    await clock.advance(0)
    saved = await store.load("r1")
    assert saved is not None
    assert saved["phase"] == "paused"
    assert saved["weight"] == 10
    await clock.advance(60)  # one background analysis
    saved = await store.load("r1")
    assert saved is not None
    assert saved["decisions"][-1]["action"] == "analysis"
    ctl.abort(reason="stop")
    assert await asyncio.wait_for(task, 1) is Phase.ABORTED
    saved = await store.load("r1")
    assert saved is not None
    assert saved["phase"] == "aborted"
    assert saved["weight"] == 0
