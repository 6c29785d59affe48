"""Canary rollouts inside the gateway: one controller per model with a ``canary`` section.

The manager owns the glue between :class:`~headway.rollout.RolloutController` (the state
machine and its judge) and the live :class:`~headway.gateway._split.TrafficSplit`:

- the split reads its weight from the controller on every request (``split.follow``), so an
  abort takes effect on the very next request; the controller drains the split's windows
  (``split.window``) for its analysis. Both are looked up in the *live* runtime at each use, so a
  reload never strands a rollout on a retired runtime;
- each controller's loop is a task on the gateway's clock; its state is saved in the control
  store (``state.control_url``) after every decision, under ``rollout/<model>``, and a gateway
  that starts resumes every unfinished rollout it finds there (a rollout survives a restart);
- a finished rollout keeps holding its weight (100 promoted, 0 aborted), across restarts too,
  as long as the model's ``canary`` section is the one it ran against: a restart must not undo a
  promotion or put an aborted canary back in rotation. Promotion never rewrites config: the
  status asks the operator to make the canary pool the model's stable pool.

Without a control store (``state.control_url`` unset) state lives in this process only and a
restart forgets it. Rollouts are per process: with ``server.workers > 1`` each worker would run
its own, so run rollouts on single-worker gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from headway.config import ConfigError
from headway.core import REAL_CLOCK, Clock
from headway.rollout import (
    AnalysisStep,
    PauseStep,
    Phase,
    RolloutController,
    RolloutError,
    RolloutSpec,
    SetWeightStep,
    SideWindow,
    SplitWindow,
    parse_rollout_spec,
)
from headway.store import ControlStore, StateStore, StoreError

from ._errors import GatewayError, NotFound

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._split import TrafficSplit

__all__ = [
    "DEFAULT_ROLLOUT",
    "PROMOTED_STATUS",
    "ROLLOUT_PREFIX",
    "NoCanary",
    "RolloutConflict",
    "RolloutManager",
]

log = logging.getLogger("headway.rollouts")

#: Key prefix of rollout state documents in the control store (``rollout/<model>``).
ROLLOUT_PREFIX = "rollout/"
PROMOTED_STATUS = "promoted: update the config to make the canary pool stable"
ABORTED_STATUS = "aborted, canary weight set to 0"
#: The steps used when a start names none: Flagger's progressive shape (step up, analyse each
#: step for one interval of its default 1m) from a small first step, as in bench/rollout.py.
DEFAULT_ROLLOUT: dict[str, Any] = {
    "steps": [
        {"set_weight": 5},
        {"analysis": {"count": 2}},
        {"set_weight": 25},
        {"analysis": {}},
        {"set_weight": 50},
        {"analysis": {}},
    ],
}
# A failed save is retried after this long (doubling up to the cap): the loop keeps deciding
# meanwhile, and the next save carries every decision since (our choice).
_SAVE_RETRY = 1.0
_SAVE_RETRY_CAP = 30.0


class RolloutConflict(GatewayError):
    """A command that does not fit the rollout's state (409), e.g. starting a second one."""

    status = 409
    code = "rollout_conflict"
    reason = "rollout_conflict"


class NoCanary(GatewayError):
    """A rollout asked for a model without a ``canary`` section (409: fix the config first)."""

    status = 409
    code = "no_canary"
    reason = "no_canary"


@dataclass(slots=True)
class _Rollout:
    model: str
    controller: RolloutController
    #: The ``canary`` section (as JSON) the rollout runs against.
    canary: dict[str, Any]
    task: asyncio.Task[None] | None = field(default=None)


class _ModelDocs:
    """The controller's ``save(name, doc)`` as the model's document, tagged with the model and
    the canary section it ran against (what a restart checks before re-applying a weight)."""

    def __init__(self, store: StateStore, rollout: _Rollout) -> None:
        self._store = store
        self._rollout = rollout

    async def load(self, name: str) -> dict[str, Any] | None:
        return await self._store.load(ROLLOUT_PREFIX + self._rollout.model)

    async def save(self, name: str, doc: Mapping[str, Any]) -> None:
        r = self._rollout
        await self._store.save(
            ROLLOUT_PREFIX + r.model, {**doc, "model": r.model, "canary": r.canary}
        )


def _empty_window(now: float) -> SplitWindow:
    side = SideWindow(0, 0, [], [])
    return SplitWindow(start=now, end=now, weight=0.0, stable=side, canary=side)


def _canary_json(split: TrafficSplit) -> dict[str, Any]:
    return split.config.model_dump(mode="json")


class RolloutManager:
    """The gateway's rollouts by model; see the module docstring for what it guarantees."""

    def __init__(
        self,
        runtime: Callable[[], Runtime | None],
        *,
        store: ControlStore | None = None,
        clock: Clock = REAL_CLOCK,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._runtime = runtime
        #: Where state is saved; None: in this process only.
        self.store = store
        self._clock = clock
        self._wall = wall
        self._rollouts: dict[str, _Rollout] = {}

    # -- lookups ---------------------------------------------------------------------------------

    def _split(self, model: str) -> TrafficSplit | None:
        runtime = self._runtime()
        return None if runtime is None else runtime.splits.get(model)

    def get(self, model: str) -> RolloutController:
        rollout = self._rollouts.get(model)
        if rollout is None:
            raise NotFound(f"no rollout for model {model!r}", code="rollout_not_found")
        return rollout.controller

    def models(self) -> list[str]:
        return sorted(self._rollouts)

    def _observe(self, model: str) -> Callable[[], SplitWindow]:
        def observe() -> SplitWindow:
            split = self._split(model)
            return _empty_window(self._clock.now()) if split is None else split.window()

        return observe

    # -- lifecycle -------------------------------------------------------------------------------

    async def resume(self) -> None:
        """Pick up every rollout saved in the store: unfinished ones run on, finished ones hold
        their weight while the model's canary section is unchanged."""
        if self.store is None:
            return
        try:
            names = await self.store.names(ROLLOUT_PREFIX)
            docs = [(name, await self.store.load(name)) for name in names]
        except StoreError as error:
            log.error("rollouts not resumed: the control store failed: %s", error)
            return
        for name, doc in docs:
            model = name[len(ROLLOUT_PREFIX) :]
            if doc is None or model in self._rollouts:
                continue
            try:
                self._restore(model, doc)
            except (ConfigError, RolloutError, KeyError, TypeError, ValueError) as error:
                log.error("rollout %s not resumed: unreadable state: %s", model, error)

    def _restore(self, model: str, doc: Mapping[str, Any]) -> None:
        controller = RolloutController.restore(
            doc, observe=self._observe(model), clock=self._clock, wall=self._wall
        )
        split = self._split(model)
        saved_canary = doc.get("canary")
        rollout = _Rollout(
            model, controller, saved_canary if isinstance(saved_canary, dict) else {}
        )
        self._rollouts[model] = rollout
        if controller.phase.finished:
            if split is not None and _canary_json(split) == rollout.canary:
                split.follow(controller)
            return
        if split is None:
            controller.abort(by="gateway", reason=f"model {model!r} has no canary section now")
        else:
            rollout.canary = _canary_json(split)
            split.follow(controller)
            log.info("rollout %s resumed at step %d", model, controller.step_index)
        self._run(rollout)

    def on_reload(self, runtime: Runtime) -> None:
        """``runtime`` is about to go live: keep each running rollout driving its model's split
        there (a changed canary section is followed as it now is); abort rollouts whose model
        lost its canary section."""
        for model, rollout in self._rollouts.items():
            controller = rollout.controller
            split = runtime.splits.get(model)
            if controller.phase.finished:
                continue  # held only while the section is unchanged (TrafficSplit.adopt)
            if split is None:
                controller.abort(by="gateway", reason="the reload removed the canary section")
                continue
            rollout.canary = _canary_json(split)
            split.follow(controller)

    async def aclose(self) -> None:
        """Stop the loops, then save every rollout once more: a command the admin API already
        acknowledged (a promote, an abort) may not have reached its loop's save yet, and a
        save cut short by the cancellation must not be the last word in the store."""
        tasks = [r.task for r in self._rollouts.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.store is None:
            return
        for rollout in self._rollouts.values():
            controller = rollout.controller
            try:
                await _ModelDocs(self.store, rollout).save(controller.name, controller.to_dict())
            except StoreError as error:
                log.error("rollout %s: saving its final state failed: %s", rollout.model, error)

    # -- commands --------------------------------------------------------------------------------

    def start(self, model: str, data: Mapping[str, Any] | None, *, by: str) -> RolloutController:
        """Start a rollout of ``model``'s canary from a spec (plain data; None: the default
        steps). ``ConfigError`` names each bad field; 404/409 when it cannot start."""
        runtime = self._runtime()
        if runtime is None or model not in runtime.routes:
            raise NotFound(f"no model named {model!r}", code="model_not_found")
        split = runtime.splits.get(model)
        if split is None:
            raise NoCanary(
                f"model {model!r} has no canary section: add 'canary: {{pool: ...}}' to it first"
            )
        current = self._rollouts.get(model)
        if current is not None and not current.controller.phase.finished:
            raise RolloutConflict(
                f"a rollout of {model!r} is already {current.controller.phase.value}: "
                "promote or abort it first"
            )
        spec: RolloutSpec = parse_rollout_spec(
            {"name": model, **(DEFAULT_ROLLOUT if data is None else data)},
            source=f"rollout spec for {model}",
        )
        controller = RolloutController(
            spec, observe=self._observe(model), clock=self._clock, wall=self._wall
        )
        split.window()  # the first window holds only this rollout's samples
        split.follow(controller)
        rollout = _Rollout(model, controller, _canary_json(split))
        if current is not None and current.task is not None:
            current.task.cancel()
        self._rollouts[model] = rollout
        log.info("rollout %s started by %s (%d steps)", model, by, len(spec.steps))
        controller.tick()  # the first steps (e.g. set_weight) apply before the answer
        self._run(rollout)
        return controller

    def command(self, model: str, action: str, *, by: str, reason: str = "") -> RolloutController:
        """``pause``, ``resume``, ``promote`` or ``abort`` (409 when it does not apply)."""
        controller = self.get(model)
        act = {
            "pause": controller.pause,
            "resume": controller.resume,
            "promote": controller.promote,
            "abort": controller.abort,
        }[action]
        try:
            act(by=by, reason=reason)
        except RolloutError as error:
            raise RolloutConflict(str(error)) from None
        log.info("rollout %s: %s by %s", model, action, by)
        return controller

    # -- the loop --------------------------------------------------------------------------------

    def _run(self, rollout: _Rollout) -> None:
        rollout.task = asyncio.create_task(self._drive(rollout), name=f"rollout {rollout.model}")

    async def _drive(self, rollout: _Rollout) -> None:
        store = None if self.store is None else _ModelDocs(self.store, rollout)
        delay = _SAVE_RETRY
        while True:
            try:
                phase = await rollout.controller.run(store)
            except StoreError as error:
                log.error(
                    "rollout %s: saving its state failed (retrying): %s", rollout.model, error
                )
                await self._clock.sleep(delay)
                delay = min(delay * 2, _SAVE_RETRY_CAP)
                continue
            except Exception:  # a bug: say so loudly; the split keeps the last weight
                log.exception("rollout %s: its controller failed", rollout.model)
                return
            log.info("rollout %s finished: %s", rollout.model, phase.value)
            return

    # -- reading ---------------------------------------------------------------------------------

    def status(self, model: str, *, decisions: int | None = None) -> dict[str, Any]:
        """The rollout as the admin API shows it: phase, steps, weight, the live split and the
        last ``decisions`` (all when None), each with its judge evidence."""
        rollout = self._rollouts.get(model)
        if rollout is None:
            raise NotFound(f"no rollout for model {model!r}", code="rollout_not_found")
        c = rollout.controller
        split = self._split(model)
        recorded = c.decisions
        shown = recorded if decisions is None else recorded[max(0, len(recorded) - decisions) :]
        last = c.last_analysis()
        return {
            "model": model,
            "name": c.name,
            "phase": c.phase.value,
            "pause_reason": None if c.pause_reason is None else c.pause_reason.value,
            "status": _status_text(c),
            "step": c.step_index,
            "steps": [
                {"index": i, "text": _step_text(step), "state": _step_state(c, i)}
                for i, step in enumerate(c.spec.steps)
            ],
            "weight": c.current_weight(),
            "split": None if split is None else split.snapshot(),
            "analysis": c.spec.analysis.model_dump(mode="json"),
            "last_analysis": None if last is None else last.to_dict(),
            "decisions": [d.to_dict() for d in shown],
            "decisions_total": len(recorded),
            "persisted": self.store is not None,
        }

    def statuses(self, *, decisions: int = 5) -> list[dict[str, Any]]:
        return [self.status(model, decisions=decisions) for model in self.models()]

    def controllers(self) -> list[tuple[str, RolloutController]]:
        return [(model, self._rollouts[model].controller) for model in self.models()]


def _step_text(step: SetWeightStep | PauseStep | AnalysisStep) -> str:
    if isinstance(step, SetWeightStep):
        return f"set weight {step.set_weight}%"
    if isinstance(step, PauseStep):
        duration = step.pause.duration
        return "pause until resumed" if duration is None else f"pause {duration:g}s"
    a = step.analysis
    every = "" if a.interval is None else f" every {a.interval:g}s"
    return f"analysis: {a.count} passing window{'s' if a.count != 1 else ''}{every}"


def _step_state(controller: RolloutController, index: int) -> str:
    if controller.phase is Phase.PROMOTED:
        return "done"
    if index < controller.step_index:
        return "done"
    if index == controller.step_index:
        return "aborted" if controller.phase is Phase.ABORTED else "current"
    return "skipped" if controller.phase is Phase.ABORTED else "pending"


def _status_text(controller: RolloutController) -> str:
    phase = controller.phase
    last = controller.decisions[-1].reason if controller.decisions else ""
    if phase is Phase.PROMOTED:
        return PROMOTED_STATUS
    if phase is Phase.ABORTED:
        return f"{ABORTED_STATUS} ({last})"
    steps = len(controller.spec.steps)
    at = f"step {min(controller.step_index + 1, steps)}/{steps}"
    if phase is Phase.PAUSED:
        why = controller.pause_reason.value if controller.pause_reason else "operator"
        return f"paused at {at} ({why}): resume, promote or abort it"
    return f"running {at}: {last}"
