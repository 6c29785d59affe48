"""``observe.tracing``: defaults, every bad value reported at its field path, secrets masked, and
a clear error when tracing is on but the OpenTelemetry SDK is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from headway.config import (
    OTEL_MODULES,
    ConfigError,
    TracingConfig,
    check_main,
    diff_configs,
    load_config,
    parse_config,
)


def issues(tracing: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"version: 1\nobserve:\n  tracing: {tracing}\n", env=env or {})
    return [(issue.path, issue.message) for issue in caught.value.errors]


def test_off_by_default_with_the_otel_sdk_defaults() -> None:
    tracing = parse_config("version: 1").observe.tracing
    assert tracing == TracingConfig()
    assert tracing.enabled is False
    assert tracing.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert tracing.service_name == "headway"
    assert tracing.sample_ratio == 1.0
    assert (tracing.export_timeout, tracing.batch_delay) == (10.0, 5.0)
    assert (tracing.max_queue, tracing.max_batch) == (2048, 512)
    assert tracing.headers == {}


def test_the_demo_spells_out_the_defaults() -> None:
    assert load_config(None).observe.tracing == TracingConfig()


def test_a_full_section_loads() -> None:
    tracing = parse_config(
        "version: 1\nobserve:\n  tracing:\n"
        "    enabled: true\n"
        "    endpoint: https://collector.example:4318/v1/traces\n"
        "    service_name: edge-gw\n"
        "    sample_ratio: 0.25\n"
        "    headers: {x-api-key: '${OTLP_KEY}'}\n",
        env={"OTLP_KEY": "s3cret"},
    ).observe.tracing
    assert tracing.enabled
    assert tracing.sample_ratio == 0.25
    assert tracing.headers["x-api-key"].get_secret_value() == "s3cret"
    assert "s3cret" not in repr(tracing)


@pytest.mark.parametrize(
    ("tracing", "path", "message"),
    [
        ("{sample_ratio: 1.5}", "sample_ratio", "less than or equal to 1"),
        ("{sample_ratio: -0.1}", "sample_ratio", "greater than or equal to 0"),
        ("{endpoint: 'grpc://c:4317'}", "endpoint", "expected an http(s) URL"),
        ("{endpoint: 'http://:4318/v1/traces'}", "endpoint", "missing host"),
        ("{endpoint: 'http://c:99999/v1/traces'}", "endpoint", "invalid port"),
        ("{service_name: ''}", "service_name", "at least 1 character"),
        ("{export_timeout: 0}", "export_timeout", "greater than 0"),
        ("{batch_delay: -1}", "batch_delay", "greater than 0"),
        ("{max_queue: 0}", "max_queue", "greater than or equal to 1"),
        ("{enabled: maybe}", "enabled", "valid boolean"),
        ("{headers: {'bad name': x}}", "headers", "invalid header name 'bad name'"),
        ('{headers: {x-key: "a\\nb"}}', "headers", "line break"),
        ("{sampl_ratio: 1}", "sampl_ratio", "did you mean 'sample_ratio'?"),
        ("{headers: {x-key: '${MISSING}'}}", "headers.x-key", "'MISSING' is not set"),
    ],
)
def test_every_bad_value_names_its_field(tracing: str, path: str, message: str) -> None:
    [(where, what)] = issues(tracing)
    assert where == f"observe.tracing.{path}"
    assert message in what


def test_batch_larger_than_queue_is_reported_on_the_section() -> None:
    assert issues("{max_queue: 100, max_batch: 200}") == [
        ("observe.tracing", "max_batch (200) must not exceed max_queue (100)")
    ]


def test_all_mistakes_are_reported_together() -> None:
    found = issues("{sample_ratio: 2, endpoint: 'x', batch_delay: 0}")
    assert sorted(path for path, _ in found) == [
        "observe.tracing.batch_delay",
        "observe.tracing.endpoint",
        "observe.tracing.sample_ratio",
    ]


@pytest.mark.parametrize("module", OTEL_MODULES)
def test_enabled_without_the_sdk_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what a missing package looks like
    [(path, message)] = issues("{enabled: true}")
    assert path == "observe.tracing"
    assert module in message
    assert "pip install 'headway[otel]'" in message
    # Off, the same config is fine: nothing is imported.
    assert parse_config("version: 1\nobserve: {tracing: {enabled: false}}").observe.tracing


def test_headway_check_reports_tracing_mistakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("version: 1\nobserve:\n  tracing:\n    sample_ratio: 3\n")
    assert check_main([str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "observe.tracing.sample_ratio: Input should be less than or equal to 1 (got 3) (line 4)"
    ]


def test_diff_masks_header_secrets() -> None:
    text = "version: 1\nobserve: {tracing: {headers: {x-api-key: '${K}'}}}"
    old, new = parse_config(text, env={"K": "one"}), parse_config(text, env={"K": "two"})
    assert diff_configs(old, new) == ["observe.tracing.headers.x-api-key: (secret changed)"]
