"""The canary rollout controller: a state machine over the rollout's steps, gated by the judge.

Driven from outside: ``tick()`` does whatever is due at ``clock.now()`` and ``next_wakeup()``
says when something next will be, so tests move a ``ManualClock`` and get exact behaviour; the
async ``run()`` loop is only that plus saving to the store. ``observe()`` drains the split's
current window (a ``SplitWindow``: stable and canary over the same span) and the gateway reads
the weight through ``current_weight()``.

Guarantees:

- Steps run in order: ``set_weight`` at once, ``pause`` for its duration (or until ``resume``
  when it has none), ``analysis`` until ``count`` windows in a row pass. Past the last step the
  canary is promoted (weight 100).
- While the canary gets traffic, a window is judged every interval: in an analysis step it gates
  progress; elsewhere (``background``, also while paused) only a failure acts. A failed verdict
  aborts at that window's end, so a failing canary loses its traffic within one interval.
- A gating analysis that is inconclusive or marginal is retried on the next window, up to
  ``inconclusive_limit`` times in a row; then the rollout pauses for an operator (or aborts, per
  ``on_inconclusive``). It is never taken as a pass.
- ``abort`` and ``promote`` skip every remaining step and take effect at once (the weight is
  read on the next request); ``pause``/``resume`` freeze and continue the step's timer.
- Every decision is recorded with its evidence (the judge's full result) and the whole state
  round-trips through JSON (``to_dict``/``restore``): durations are kept relative, so a restored
  rollout continues where it stopped, with downtime not counted against its pauses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from headway.core import REAL_CLOCK, Clock

from ._judge import AnalysisResult, Verdict, judge
from ._spec import (
    AnalysisStep,
    InconclusiveAction,
    PauseStep,
    RolloutSpec,
    SetWeightStep,
    parse_rollout_spec,
)
from ._state import Action, Decision, PauseReason, Phase
from ._store import RolloutStateStore
from ._window import SplitWindow

__all__ = ["Observe", "RolloutController", "RolloutError", "WeightSource"]

#: Version of the saved state document.
STATE_FORMAT = 1
_CONTROLLER = "controller"

Observe = Callable[[], SplitWindow]


class WeightSource(Protocol):
    """What the gateway's traffic split reads on each request."""

    def current_weight(self) -> int:
        """Percent of traffic (0-100) the canary gets now."""
        ...


class RolloutError(Exception):
    """A command that does not apply to the rollout's state (e.g. resuming a finished one)."""


class RolloutController:
    """Runs one rollout; see the module docstring for what it guarantees."""

    def __init__(
        self,
        spec: RolloutSpec,
        *,
        observe: Observe,
        clock: Clock = REAL_CLOCK,
        wall: Callable[[], float] | None = time.time,
    ) -> None:
        self.spec = spec
        self._observe = observe
        self._clock = clock
        self._wall = wall
        now = clock.now()
        self._phase = Phase.RUNNING
        self._pause_reason: PauseReason | None = None
        self._step = 0
        self._weight = 0
        self._started = now
        self._step_started = now
        self._paused_at: float | None = None
        self._window_started: float | None = None
        self._passed = 0
        self._streak = 0
        self._decisions: list[Decision] = []
        self._version = 0  # bumped on every change; run() saves when it moves
        self._wake: asyncio.Event | None = None
        self._record(Action.START, _CONTROLLER, f"{len(spec.steps)} steps")

    # -- reading --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def pause_reason(self) -> PauseReason | None:
        return self._pause_reason

    @property
    def step_index(self) -> int:
        return self._step

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(self._decisions)

    @property
    def version(self) -> int:
        """Changes so far; a saver compares it with the version it last saved."""
        return self._version

    def current_weight(self) -> int:
        return self._weight

    def last_analysis(self) -> AnalysisResult | None:
        for decision in reversed(self._decisions):
            if decision.analysis is not None:
                return decision.analysis
        return None

    def next_wakeup(self) -> float | None:
        """Clock time at which ``tick()`` next has something to do; None: only a command can
        move the rollout."""
        if self._phase.finished:
            return None
        due: list[float] = []
        if self._window_started is not None:
            due.append(self._window_started + self._interval())
        step = self._current_step()
        if (
            self._phase is Phase.RUNNING
            and isinstance(step, PauseStep)
            and step.pause.duration is not None
        ):
            due.append(self._step_started + step.pause.duration)
        return min(due) if due else None

    # -- driving --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Do everything due at ``clock.now()``: run steps, judge a finished window."""
        now = self._clock.now()
        while not self._phase.finished:
            self._advance(now)
            if self._phase.finished or not self._window_due(now):
                break
            self._analyse(now)

    async def run(self, store: RolloutStateStore | None = None) -> Phase:
        """Tick whenever something is due or a command arrives, saving after each change,
        until the rollout is promoted or aborted."""
        self._wake = asyncio.Event()
        saved = -1
        while True:
            self.tick()
            if store is not None and self._version != saved:
                saved = self._version
                await store.save(self.name, self.to_dict())
            if self._phase.finished:
                return self._phase
            due = self.next_wakeup()
            delay = None if due is None else max(0.0, due - self._clock.now())
            await self._wait(delay)

    async def _wait(self, delay: float | None) -> None:
        assert self._wake is not None
        wake = asyncio.ensure_future(self._wake.wait())
        waiters: set[asyncio.Future[Any]] = {wake}
        if delay is not None:
            waiters.add(asyncio.ensure_future(self._clock.sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._wake.clear()

    # -- commands -------------------------------------------------------------------------------

    def pause(self, *, by: str = "operator", reason: str = "") -> None:
        """Hold at the current step; analysis keeps watching for failures meanwhile."""
        self._require_active("pause")
        if self._phase is Phase.PAUSED:
            raise RolloutError(f"rollout {self.name!r} is already paused")
        self._enter_pause(PauseReason.OPERATOR, self._clock.now())
        self._record(Action.PAUSE, by, reason or "paused by operator")

    def resume(self, *, by: str = "operator", reason: str = "") -> None:
        """Continue a paused rollout; approves a pause step that waits for approval."""
        self._require_active("resume")
        if self._phase is not Phase.PAUSED:
            raise RolloutError(f"rollout {self.name!r} is not paused")
        now = self._clock.now()
        why = self._pause_reason
        if self._paused_at is not None:
            self._step_started += now - self._paused_at
        self._phase, self._pause_reason, self._paused_at = Phase.RUNNING, None, None
        self._streak = 0
        if why is PauseReason.APPROVAL:
            self._record(Action.RESUME, by, reason or "approved")
            self._next_step(now)
        else:
            self._record(Action.RESUME, by, reason or f"resumed ({why})")
            # A gating window lies wholly after the resume.
            self._sync_window(now, fresh=isinstance(self._current_step(), AnalysisStep))
        self.tick()

    def promote(self, *, by: str = "operator", reason: str = "") -> None:
        """Skip every remaining step: the canary gets all traffic now."""
        self._require_active("promote")
        self._finish(Phase.PROMOTED, 100, Action.PROMOTE, by, reason or "promoted by operator")

    def abort(self, *, by: str = "operator", reason: str = "") -> None:
        """Skip every remaining step: the canary gets no traffic from now on."""
        self._require_active("abort")
        self._finish(Phase.ABORTED, 0, Action.ABORT, by, reason or "aborted by operator")

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-ready data (durations relative to now)."""
        now = self._clock.now()
        frozen_at = self._paused_at if self._paused_at is not None else now
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "spec": self.spec.model_dump(mode="json"),
            "phase": self._phase.value,
            "pause_reason": self._pause_reason.value if self._pause_reason else None,
            "step": self._step,
            "weight": self._weight,
            "elapsed": now - self._started,
            "step_elapsed": frozen_at - self._step_started,
            "passed": self._passed,
            "streak": self._streak,
            "decisions": [decision.to_dict() for decision in self._decisions],
        }

    @classmethod
    def restore(
        cls,
        data: Mapping[str, Any],
        *,
        observe: Observe,
        clock: Clock = REAL_CLOCK,
        wall: Callable[[], float] | None = time.time,
    ) -> RolloutController:
        """Rebuild a controller from ``to_dict()`` output, continuing where it stopped.

        The analysis window restarts (samples from before the restart are gone); a paused
        rollout stays paused; the weight is what it was, so traffic resumes unchanged."""
        if data.get("format") != STATE_FORMAT:
            raise RolloutError(f"unknown rollout state format {data.get('format')!r}")
        spec = parse_rollout_spec(data["spec"], source=f"rollout {data.get('name')!r} state")
        self = cls(spec, observe=observe, clock=clock, wall=wall)
        now = clock.now()
        self._phase = Phase(data["phase"])
        reason = data.get("pause_reason")
        self._pause_reason = PauseReason(reason) if reason else None
        self._step = int(data["step"])
        self._weight = int(data["weight"])
        self._started = now - float(data["elapsed"])
        self._step_started = now - float(data["step_elapsed"])
        self._paused_at = now if self._phase is Phase.PAUSED else None
        self._passed = int(data["passed"])
        self._streak = int(data["streak"])
        self._decisions = [Decision.from_dict(d) for d in data["decisions"]]
        self._window_started = None
        if not self._phase.finished:
            self._record(Action.RESTORE, _CONTROLLER, "state restored after a restart")
            self._sync_window(now, fresh=True)
        return self

    @classmethod
    async def load(
        cls,
        name: str,
        store: RolloutStateStore,
        *,
        observe: Observe,
        clock: Clock = REAL_CLOCK,
        wall: Callable[[], float] | None = time.time,
    ) -> RolloutController | None:
        """The rollout saved under ``name``, restored, or None when there is none."""
        data = await store.load(name)
        if data is None:
            return None
        return cls.restore(data, observe=observe, clock=clock, wall=wall)

    # -- internals ------------------------------------------------------------------------------

    def _current_step(self) -> SetWeightStep | PauseStep | AnalysisStep | None:
        return self.spec.steps[self._step] if self._step < len(self.spec.steps) else None

    def _interval(self) -> float:
        step = self._current_step()
        if (
            self._phase is Phase.RUNNING
            and isinstance(step, AnalysisStep)
            and step.analysis.interval is not None
        ):
            return step.analysis.interval
        return self.spec.analysis.interval

    def _gating(self) -> bool:
        return self._phase is Phase.RUNNING and isinstance(self._current_step(), AnalysisStep)

    def _watching(self) -> bool:
        """Whether windows are judged now (with canary traffic: in analysis steps, or always
        when background analysis is on)."""
        return self._gating() or self.spec.analysis.background

    def _sync_window(self, now: float, *, fresh: bool = False) -> None:
        """Open a window when one should be running and is not (or ``fresh``: restart it, so
        it holds only samples from now on); close it when nothing is judged."""
        if self._weight == 0 or not self._watching():
            self._window_started = None
        elif fresh or self._window_started is None:
            self._observe()  # drain what came before
            self._window_started = now

    def _window_due(self, now: float) -> bool:
        return self._window_started is not None and now >= self._window_started + self._interval()

    def _record(
        self, action: Action, by: str, reason: str, analysis: AnalysisResult | None = None
    ) -> None:
        self._decisions.append(
            Decision(
                at=self._clock.now() - self._started,
                action=action,
                by=by,
                step=self._step,
                weight=self._weight,
                reason=reason,
                analysis=analysis,
                wall_time=self._wall() if self._wall is not None else None,
            )
        )
        self._version += 1
        if self._wake is not None:
            self._wake.set()

    def _require_active(self, command: str) -> None:
        if self._phase.finished:
            raise RolloutError(f"cannot {command} rollout {self.name!r}: it is {self._phase}")

    def _set_weight(self, weight: int, now: float) -> None:
        self._weight = weight
        self._sync_window(now)

    def _next_step(self, now: float) -> None:
        self._step += 1
        self._step_started = now
        self._passed = 0
        self._streak = 0
        # The gating windows of an analysis step lie wholly inside the step.
        self._sync_window(now, fresh=isinstance(self._current_step(), AnalysisStep))

    def _enter_pause(self, reason: PauseReason, now: float) -> None:
        self._phase, self._pause_reason, self._paused_at = Phase.PAUSED, reason, now
        self._sync_window(now)

    def _finish(
        self,
        phase: Phase,
        weight: int,
        action: Action,
        by: str,
        reason: str,
        evidence: AnalysisResult | None = None,
    ) -> None:
        self._weight = weight
        self._phase = phase
        self._pause_reason = None
        self._paused_at = None
        self._window_started = None
        self._record(action, by, reason, evidence)

    def _advance(self, now: float) -> None:
        """Run every step that can complete at ``now``."""
        while self._phase is Phase.RUNNING:
            step = self._current_step()
            if step is None:
                self._finish(Phase.PROMOTED, 100, Action.PROMOTE, _CONTROLLER, "all steps passed")
                return
            if isinstance(step, SetWeightStep):
                before = self._weight
                self._set_weight(step.set_weight, now)
                self._record(
                    Action.SET_WEIGHT, _CONTROLLER, f"weight {before}% -> {step.set_weight}%"
                )
                self._next_step(now)
            elif isinstance(step, PauseStep):
                if step.pause.duration is None:
                    self._enter_pause(PauseReason.APPROVAL, now)
                    self._record(Action.WAIT_APPROVAL, _CONTROLLER, "waiting for approval")
                    return
                if now < self._step_started + step.pause.duration:
                    return
                self._record(Action.PAUSE_DONE, _CONTROLLER, f"paused {step.pause.duration:g} s")
                self._next_step(now)
            else:
                if self._weight == 0:  # nothing to compare: the step cannot gate anything
                    self._record(Action.ANALYSIS, _CONTROLLER, "skipped: canary weight is 0")
                    self._next_step(now)
                    continue
                self._sync_window(now)
                return

    def _analyse(self, now: float) -> None:
        """Judge the window that just ended and act on the verdict."""
        result = judge(self.spec.analysis, self._observe())
        self._window_started = now
        gating = self._gating()
        kind = "analysis" if gating else "background analysis"
        summary = f"{kind}: {result.verdict} ({result.reason})"
        if result.verdict is Verdict.FAIL:
            self._finish(Phase.ABORTED, 0, Action.ABORT, _CONTROLLER, summary, result)
            return
        if not gating:
            self._record(Action.ANALYSIS, _CONTROLLER, summary, result)
            return
        step = self._current_step()
        assert isinstance(step, AnalysisStep)
        if result.verdict is Verdict.PASS:
            self._passed += 1
            self._streak = 0
            self._record(
                Action.ANALYSIS,
                _CONTROLLER,
                f"{summary}; {self._passed}/{step.analysis.count} passed",
                result,
            )
            if self._passed >= step.analysis.count:
                self._next_step(now)
            return
        self._streak += 1
        limit = self.spec.analysis.inconclusive_limit
        if self._streak <= limit:
            self._record(
                Action.ANALYSIS,
                _CONTROLLER,
                f"{summary}; retry {self._streak}/{limit} on the next window",
                result,
            )
            return
        give_up = f"{summary}; still not passing after {limit} retries"
        if self.spec.analysis.on_inconclusive is InconclusiveAction.ABORT:
            self._finish(Phase.ABORTED, 0, Action.ABORT, _CONTROLLER, give_up, result)
        else:
            self._enter_pause(PauseReason.INCONCLUSIVE, now)
            self._record(Action.HOLD, _CONTROLLER, f"{give_up}: paused for an operator", result)
