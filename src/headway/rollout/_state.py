"""A rollout's recorded history: its phase and every decision, each with its evidence.

Values only (frozen dataclasses with ``to_dict``/``from_dict`` to plain JSON), so the status a
CLI prints, the document the store keeps and the controller's memory are the same data. Times
in a decision are seconds of the rollout's own running time (``at``), which stays meaningful
across a restart (a monotonic clock does not), plus the wall time when it was known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._judge import AnalysisResult

__all__ = ["Action", "Decision", "PauseReason", "Phase"]


class Phase(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ABORTED)


class PauseReason(StrEnum):
    OPERATOR = "operator"
    APPROVAL = "approval"
    INCONCLUSIVE = "inconclusive"


class Action(StrEnum):
    START = "start"
    SET_WEIGHT = "set_weight"
    PAUSE_DONE = "pause_done"
    WAIT_APPROVAL = "wait_approval"
    PAUSE = "pause"
    RESUME = "resume"
    ANALYSIS = "analysis"
    HOLD = "hold"
    PROMOTE = "promote"
    ABORT = "abort"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class Decision:
    """One thing the controller did (or was told to do), and why."""

    #: Seconds since the rollout started (its running time; downtime is not counted).
    at: float
    action: Action
    #: ``"controller"`` or the operator who issued the command.
    by: str
    #: Index of the step the rollout was at when deciding.
    step: int
    #: Canary weight (percent) after the decision.
    weight: int
    reason: str
    #: The judge's full result when the decision came from an analysis.
    analysis: AnalysisResult | None = None
    #: Unix time of the decision, when a wall clock was given.
    wall_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "action": self.action.value,
            "by": self.by,
            "step": self.step,
            "weight": self.weight,
            "reason": self.reason,
            "analysis": self.analysis.to_dict() if self.analysis is not None else None,
            "wall_time": self.wall_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        analysis = data.get("analysis")
        return cls(
            at=float(data["at"]),
            action=Action(data["action"]),
            by=str(data["by"]),
            step=int(data["step"]),
            weight=int(data["weight"]),
            reason=str(data["reason"]),
            analysis=AnalysisResult.from_dict(analysis) if analysis is not None else None,
            wall_time=data.get("wall_time"),
        )
