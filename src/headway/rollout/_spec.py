"""A rollout as an operator declares it: steps, and the analysis that gates them.

Typed config models in the style of ``headway.config`` (frozen, unknown fields are errors);
``parse_rollout_spec`` turns plain data into a ``RolloutSpec`` or a ``ConfigError`` listing every
mistake with its field path (``steps[2].set_weight``). Defaults cite where they come from; the
ones without an outside source were tuned with ``bench/rollout.py`` (see its table).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from headway.config import ConfigError, ConfigIssue
from headway.config._errors import format_path

__all__ = [
    "AnalysisSpec",
    "AnalysisStep",
    "AnalysisStepSpec",
    "Direction",
    "InconclusiveAction",
    "MetricKind",
    "MetricSpec",
    "NoDataPolicy",
    "PauseSpec",
    "PauseStep",
    "RolloutSpec",
    "SetWeightStep",
    "Step",
    "default_metrics",
    "parse_rollout_spec",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class MetricKind(StrEnum):
    """What a metric measures, which decides the test the judge applies."""

    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    TTFT = "ttft"


class Direction(StrEnum):
    """Which change of the canary counts as worse."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class NoDataPolicy(StrEnum):
    """What a metric with too few samples on either side counts as."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class InconclusiveAction(StrEnum):
    """What the controller does when a gating analysis stays inconclusive past the limit."""

    PAUSE = "pause"
    ABORT = "abort"


#: One-sided significance of every test. Kayenta's NetflixACAJudge uses a 98% two-sided level
#: (NetflixACAJudge.scala: ``confLevel = 0.98``, i.e. 1% on the side we test) once per canary
#: run; we judge every interval (5-10 looks per rollout) and a critical metric's single false
#: alarm aborts, so Bonferroni over ~10 looks at a 1% family rate gives 0.1%. bench/rollout.py
#: measured 3% of A/A rollouts aborted at 0.01 (seed 11, 300 runs) and 0 of 900 at 0.001.
DEFAULT_ALPHA = 0.001
#: Relative latency shift allowed before a significant shift fails: 10% of the baseline median
#: (ours; Kayenta's allowance is a multiple of the effect, Flagger/Argo leave it to the query).
DEFAULT_LATENCY_TOLERANCE = 0.10
#: Absolute error-rate increase allowed before a significant increase fails: 0.5 percentage
#: points (ours, tuned in bench/rollout.py: a 5%-error canary over a 0.5% baseline fails).
DEFAULT_ERROR_TOLERANCE = 0.005
#: Minimum samples per side before a metric is judged (ours; the bench's A/A runs at 5% weight
#: stay above it so healthy canaries are not held for lack of data).
DEFAULT_MIN_SAMPLES = 50
#: The tail quantile compared, and how much larger the canary's may be (ours, tuned in bench).
DEFAULT_TAIL_QUANTILE = 0.99
DEFAULT_TAIL_TOLERANCE = 1.5


class MetricSpec(_Section):
    """One metric the judge compares between canary and baseline."""

    name: str = Field(min_length=1)
    """Name shown in verdicts and metrics."""
    kind: MetricKind
    """error_rate (two-proportion test), latency or ttft (Mann-Whitney + tail check)."""
    direction: Direction = Direction.INCREASE
    """Which change is a regression (higher latency and error rate are, by default)."""
    tolerance: float | None = Field(default=None, ge=0)
    """Allowed worsening before a significant change fails: absolute rate for error_rate
    (default 0.005), fraction of the baseline median for latency/ttft (default 0.10)."""
    tail_quantile: float | None = Field(default=DEFAULT_TAIL_QUANTILE, gt=0, lt=1)
    """Quantile of the tail check for latency/ttft; null turns the check off."""
    tail_tolerance: float = Field(default=DEFAULT_TAIL_TOLERANCE, ge=1)
    """Largest allowed canary/baseline ratio of that quantile."""
    critical: bool = False
    """A critical metric that fails fails the whole analysis (Kayenta's criticality)."""
    weight: float = Field(default=1.0, gt=0)
    """Share of the score (Kayenta's group weight, per metric here)."""
    min_samples: int = Field(default=DEFAULT_MIN_SAMPLES, ge=1)
    """Samples needed on each side (requests for error_rate, timings for latency/ttft)."""
    no_data: NoDataPolicy = NoDataPolicy.INCONCLUSIVE
    """What too few samples counts as; inconclusive waits rather than guesses."""

    @property
    def effective_tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        if self.kind is MetricKind.ERROR_RATE:
            return DEFAULT_ERROR_TOLERANCE
        return DEFAULT_LATENCY_TOLERANCE


def default_metrics() -> tuple[MetricSpec, ...]:
    """Errors (critical), latency and time to first token, equally weighted."""
    return (
        MetricSpec(name="errors", kind=MetricKind.ERROR_RATE, critical=True),
        MetricSpec(name="latency", kind=MetricKind.LATENCY),
        MetricSpec(name="ttft", kind=MetricKind.TTFT),
    )


#: The shortest analysis window, in seconds (our choice): a shorter one holds too few requests
#: to judge, and an interval near 0 had the controller judge in a busy loop (30k decisions, one
#: core, in 2 s).
MIN_INTERVAL = 1.0
#: The most steps a rollout may have (our choice): weights are whole percents, so 100 steps
#: already reach every one; longer specs are mistakes that bloat the status and saved state.
MAX_STEPS = 100


class AnalysisSpec(_Section):
    """How canary and baseline are compared, and what the controller does with the verdict."""

    metrics: tuple[MetricSpec, ...] = Field(default_factory=default_metrics, min_length=1)
    """Metrics compared each interval."""
    interval: float = Field(default=60.0, ge=MIN_INTERVAL)
    """Seconds per analysis window (Flagger's analysis interval: 1m in its docs)."""
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=0.5)
    """One-sided significance level of every test (Kayenta's 1%, divided over ~10 looks)."""
    pass_score: float = Field(default=95.0, ge=0, le=100)
    """Score at or above which an analysis passes (Spinnaker's canary stage: pass 95)."""
    marginal_score: float = Field(default=75.0, ge=0, le=100)
    """Score at or above which a non-passing analysis is marginal, not failed (Spinnaker: 75)."""
    inconclusive_limit: int = Field(default=3, ge=0)
    """Inconclusive or marginal gating analyses in a row retried before giving up (Argo
    Rollouts' inconclusiveLimit; Flagger's failed-checks threshold defaults to 5)."""
    on_inconclusive: InconclusiveAction = InconclusiveAction.PAUSE
    """After the limit: pause for an operator (Argo Rollouts) or abort."""
    background: bool = True
    """Also judge every interval outside analysis steps while the canary gets traffic, so a
    failing canary is aborted within one interval at any step (only failures act)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.marginal_score > self.pass_score:
            raise ValueError(
                f"marginal_score ({self.marginal_score:g}) must not exceed "
                f"pass_score ({self.pass_score:g})"
            )
        names = [metric.name for metric in self.metrics]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"metric names must be unique, repeated: {', '.join(repeated)}")
        return self


class SetWeightStep(_Section):
    """Send this percentage of the route's traffic to the canary."""

    set_weight: int = Field(ge=0, le=100)


class PauseSpec(_Section):
    duration: float | None = Field(default=None, gt=0)
    """Seconds to wait; null (or ``pause: {}``) waits for an operator's resume."""


class PauseStep(_Section):
    """Wait a while, or until approved."""

    pause: PauseSpec


class AnalysisStepSpec(_Section):
    interval: float | None = Field(default=None, ge=MIN_INTERVAL)
    """Seconds per window (default: the rollout's analysis interval)."""
    count: int = Field(default=1, ge=1)
    """Passing windows needed before the next step."""


class AnalysisStep(_Section):
    """Hold the weight until ``count`` analyses pass; a failure aborts."""

    analysis: AnalysisStepSpec


def _step_kind(value: Any) -> str | None:
    # A dict, a validated step model, or garbage (a number, a list): no kind, a typed error.
    fields = value if isinstance(value, dict) else getattr(type(value), "model_fields", ())
    keys = set(fields)
    for key in ("set_weight", "pause", "analysis"):
        if key in keys:
            return key
    return None


Step = Annotated[
    Annotated[SetWeightStep, Tag("set_weight")]
    | Annotated[PauseStep, Tag("pause")]
    | Annotated[AnalysisStep, Tag("analysis")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs one of 'set_weight', 'pause' or 'analysis'",
    ),
]


class RolloutSpec(_Section):
    """A canary rollout: steps run in order, analysis gates them; the end promotes."""

    name: str = Field(min_length=1, max_length=200)
    """Unique name (the key of its state in the store)."""
    steps: tuple[Step, ...] = Field(min_length=1, max_length=MAX_STEPS)
    """set_weight, pause and analysis steps, run in order."""
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    """The comparison used by analysis steps and background checks."""


def parse_rollout_spec(data: Any, *, source: str = "<rollout>") -> RolloutSpec:
    """Validate plain data (parsed YAML/JSON) into a ``RolloutSpec``.

    Raises ``ConfigError`` with one issue per mistake, each naming its field path."""
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as exc:
        issues = []
        errors = exc.errors(include_url=False)
        locs = [_without_tag(tuple(error["loc"])) for error in errors]
        for error, loc in zip(errors, locs, strict=True):
            if error["type"] == "too_short" and any(
                len(other) > len(loc) and other[: len(loc)] == loc for other in locs
            ):
                continue  # a list emptied by its own bad items: the item errors say it all
            message = error["msg"].removeprefix("Value error, ").replace("Tuple", "List")
            if error["type"] == "extra_forbidden":
                message = f"unknown field '{loc[-1]}'" if loc else "unknown field"
            elif error["type"] == "missing":
                message = "required field is missing"
            issues.append(ConfigIssue(format_path(loc), message))
        raise ConfigError(issues, source=source) from None


def _without_tag(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """pydantic puts the union's tag after a step's index (``steps.2.pause.pause``); operators
    never wrote it, so drop it (``steps[2].pause``)."""
    if len(loc) >= 3 and loc[0] == "steps" and isinstance(loc[1], int) and loc[2] in _TAGS:
        return (*loc[:2], *loc[3:])
    return loc


_TAGS = ("set_weight", "pause", "analysis")
