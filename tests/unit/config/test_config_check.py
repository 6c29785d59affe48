"""`headway check` and `headway config schema` bodies: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headway.config import DEFAULT_CONFIG_PATH, check_main, config_json_schema, schema_main


def test_check_default_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([]) == 0
    assert capsys.readouterr().out == "ok: 3 pools, 2 models, 2 tenants\n"


def test_check_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(DEFAULT_CONFIG_PATH.read_bytes())
    assert check_main([str(path)]) == 0
    assert capsys.readouterr().out == "ok: 3 pools, 2 models, 2 tenants\n"


def test_check_prints_every_error_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\n"
        "server: {workers: 0}\n"
        "models:\n"
        "  - {name: m, pool: nope}\n"
        "tenants:\n"
        "  - {name: t, keys: [k], models: [m, ghost]}\n"
    )
    assert check_main([str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "server.workers: Input should be greater than or equal to 1 (got 0) (line 2)",
        "models[0].pool: unknown pool 'nope' (known: none declared) (line 4)",
        "tenants[0].models[1]: unknown model 'ghost' (known: m; '*' allows all) (line 6)",
    ]
    assert captured.err == f"{path}: 3 errors\n"


def test_check_yaml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nserver: [\n")
    assert check_main([str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("YAML syntax error at line 3, column 1: ")


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert check_main([str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"cannot read {path}: No such file or directory\n"
    assert captured.err == f"{path}: 1 error\n"


def test_schema_main_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert schema_main([]) == 0
    assert json.loads(capsys.readouterr().out) == config_json_schema()


def test_schema_main_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert schema_main(["--output", str(out)]) == 0
    assert json.loads(out.read_text()) == config_json_schema()
