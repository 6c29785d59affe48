"""Rollout specs: typed, defaults as documented, every mistake reported with its field path."""

from __future__ import annotations

import pytest

from headway.config import ConfigError
from headway.rollout import (
    AnalysisStep,
    InconclusiveAction,
    MetricKind,
    PauseStep,
    SetWeightStep,
    parse_rollout_spec,
)


def test_steps_parse_to_their_types_with_documented_defaults() -> None:
    spec = parse_rollout_spec(
        {
            "name": "sim-large",
            "steps": [
                {"set_weight": 5},
                {"pause": {}},
                {"pause": {"duration": 30}},
                {"analysis": {}},
            ],
        }
    )
    kinds = [type(step) for step in spec.steps]
    assert kinds == [SetWeightStep, PauseStep, PauseStep, AnalysisStep]
    assert spec.steps[1] == PauseStep.model_validate({"pause": {}})
    analysis = spec.analysis
    assert (analysis.interval, analysis.alpha) == (60.0, 0.001)
    assert (analysis.pass_score, analysis.marginal_score) == (95.0, 75.0)
    assert analysis.on_inconclusive is InconclusiveAction.PAUSE
    errors, latency, ttft = analysis.metrics
    assert errors.kind is MetricKind.ERROR_RATE
    assert errors.critical
    assert errors.effective_tolerance == 0.005
    assert latency.effective_tolerance == 0.10
    assert not latency.critical
    assert ttft.kind is MetricKind.TTFT


def test_a_spec_round_trips_through_json_data() -> None:
    spec = parse_rollout_spec({"name": "x", "steps": [{"set_weight": 50}]})
    assert parse_rollout_spec(spec.model_dump(mode="json")) == spec


def test_every_mistake_is_reported_with_its_field_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rollout_spec(
            {
                "name": "x",
                "steps": [
                    {"set_weight": 500},
                    {"pause": {"duration": -1}},
                    {"wait": 3},
                    {"analysis": {"count": 0}},
                    {"set_weight": 5, "typo": 1},
                ],
                "analysis": {"metrics": [{"name": "e", "kind": "nope"}], "alpha": 2},
            }
        )
    paths = {issue.path for issue in caught.value.errors}
    assert paths == {
        "steps[0].set_weight",
        "steps[1].pause.duration",
        "steps[2]",
        "steps[3].analysis.count",
        "steps[4].typo",
        "analysis.metrics[0].kind",
        "analysis.alpha",
    }
    messages = {issue.path: issue.message for issue in caught.value.errors}
    assert "one of 'set_weight', 'pause' or 'analysis'" in messages["steps[2]"]
    assert messages["steps[4].typo"] == "unknown field 'typo'"


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="marginal_score"):
        parse_rollout_spec(
            {"name": "x", "steps": [{"set_weight": 1}], "analysis": {"marginal_score": 99}}
        )
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_rollout_spec(
            {
                "name": "x",
                "steps": [{"set_weight": 1}],
                "analysis": {
                    "metrics": [{"name": "a", "kind": "latency"}, {"name": "a", "kind": "ttft"}]
                },
            }
        )
    with pytest.raises(ConfigError, match="steps: "):
        parse_rollout_spec({"name": "x", "steps": []})
