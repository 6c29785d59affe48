"""The ``slos:`` section: defaults, what it builds, and every mistake at its field path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from headway.config import ConfigError, GatewayConfig, diff_configs, parse_config
from headway.observe import WORKBOOK_ALERTS

BASE: dict[str, Any] = {
    "version": 1,
    "sims": [{"name": "s", "models": ["small"]}],
    "pools": [{"name": "p", "endpoints": [{"url": "sim://s"}]}],
    "models": [{"name": "sim-small", "pool": "p", "upstream_model": "small"}],
}


def parse(slos: list[dict[str, Any]]) -> GatewayConfig:
    return parse_config(yaml.safe_dump({**BASE, "slos": slos}), env={})


def issues(slos: list[dict[str, Any]]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse(slos)
    return [(issue.path, issue.message) for issue in caught.value.errors]


def test_defaults_are_the_workbooks() -> None:
    config = parse([{"name": "avail", "kind": "availability", "objective": 99.9}])
    spec = config.slos[0].to_spec()
    assert spec.model is None
    assert spec.route is None
    assert spec.window == 30 * 86400.0
    assert spec.alerts == WORKBOOK_ALERTS
    assert spec.budget == pytest.approx(0.001)


def test_full_slo_with_custom_alerts_builds_its_spec() -> None:
    config = parse(
        [
            {
                "name": "chat-ttft",
                "kind": "latency",
                "objective": 99,
                "model": "sim-small",
                "route": "chat",
                "threshold": 2,
                "latency_of": "ttft",
                "window": "7d",
                "alerts": [
                    {
                        "severity": "page",
                        "long_window": "1h",
                        "short_window": "5m",
                        "burn_rate": 10,
                        "for": "1m",
                    }
                ],
            }
        ]
    )
    spec = config.slos[0].to_spec()
    assert (spec.model, spec.route, spec.threshold, spec.latency_of) == (
        "sim-small",
        "chat",
        2.0,
        "ttft",
    )
    assert spec.window == 7 * 86400.0
    [alert] = spec.alerts
    assert (alert.long_window, alert.short_window, alert.burn_rate, alert.for_seconds) == (
        3600.0,
        300.0,
        10.0,
        60.0,
    )
    # A dump validates again (the 'for' field dumps as 'for_'), and is unchanged.
    again = GatewayConfig.model_validate(config.model_dump())
    assert diff_configs(config, again) == []


def test_every_mistake_is_reported_at_its_field_path() -> None:
    found = issues(
        [
            {"name": "a", "kind": "availability", "objective": 100, "model": "nope"},
            {"name": "a", "kind": "latency", "objective": 0, "threshold": 0.3},
            {"name": "b", "kind": "latency", "objective": 99, "route": "images"},
            {"name": "c", "kind": "availability", "objective": 99, "threshold": 1, "window": "90m"},
            {
                "name": "d",
                "kind": "availability",
                "objective": 99,
                "window": "2d",
                "alerts": [
                    {"severity": "page", "long_window": "5m", "short_window": "1h", "burn_rate": 1},
                    {"severity": "sms", "long_window": "3d", "short_window": "90s", "burn_rate": 0},
                    {"severity": "page", "long_window": "8d", "short_window": "1x", "burn_rate": 1},
                ],
            },
            {"name": "e f", "kind": "speed", "objective": 99},
        ]
    )
    paths = {path for path, _ in found}
    assert paths == {
        "slos[0].objective",
        "slos[0].model",
        "slos[1].name",
        "slos[1].objective",
        "slos[1].threshold",
        "slos[2].route",
        "slos[2].threshold",
        "slos[3].threshold",
        "slos[3].window",
        "slos[4].alerts[0].short_window",
        "slos[4].alerts[1].severity",
        "slos[4].alerts[1].short_window",
        "slos[4].alerts[1].burn_rate",
        "slos[4].alerts[1].long_window",
        "slos[4].alerts[2].short_window",
        "slos[5].name",
        "slos[5].kind",
    }, found
    messages = dict(found)
    assert "unknown model 'nope'" in messages["slos[0].model"]
    assert "duplicate SLO name 'a'" in messages["slos[1].name"]
    assert "bucket bound" in messages["slos[1].threshold"]
    assert "needs a threshold" in messages["slos[2].threshold"]
    assert "latency SLOs only" in messages["slos[3].threshold"]
    assert "whole hours" in messages["slos[3].window"]
    assert "shorter than long_window" in messages["slos[4].alerts[0].short_window"]
    assert "whole minutes" in messages["slos[4].alerts[1].short_window"]
    assert "must not exceed the SLO's window" in messages["slos[4].alerts[1].long_window"]


def test_long_alert_windows_are_bounded() -> None:
    found = issues(
        [
            {
                "name": "a",
                "kind": "availability",
                "objective": 99,
                "alerts": [
                    {
                        "severity": "ticket",
                        "long_window": "8d",
                        "short_window": "1h",
                        "burn_rate": 1,
                    }
                ],
            }
        ]
    )
    assert found == [("slos[0].alerts[0].long_window", "must be at most 7d (got 8d)")]


def test_every_model_is_star_and_needs_no_models() -> None:
    config = parse_config(
        yaml.safe_dump(
            {"version": 1, "slos": [{"name": "x", "kind": "availability", "objective": 99.5}]}
        )
    )
    assert config.slos[0].model == "*"
