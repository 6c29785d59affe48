"""``observe``: the switches' defaults and ``record_delay``'s bounds, reported at its path."""

from __future__ import annotations

import pytest

from headway.config import ConfigError, parse_config


def test_defaults_metrics_and_log_off_outcomes_recorded_in_10ms_batches() -> None:
    observe = parse_config("version: 1").observe
    assert (observe.metrics, observe.access_log, observe.record_delay) == (False, False, 0.01)
    assert parse_config("version: 1\nobserve: {record_delay: 0}").observe.record_delay == 0.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-0.5", "greater than or equal to 0"),
        ("2", "less than or equal to 1"),
        ("soon", "valid number"),
    ],
)
def test_a_bad_record_delay_names_its_field(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"version: 1\nobserve: {{record_delay: {value}}}\n")
    [issue] = caught.value.errors
    assert issue.path == "observe.record_delay"
    assert message in issue.message
