"""`headway config apply|history|diff|rollback|show` through ``headway.cli.main`` (and once as a
real subprocess): output, exit codes, and what ends up in the store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headway.cli import main
from headway.rollout import LastKnownGood
from headway.store import open_control_store

V1 = "version: 1\nserver:\n  drain_timeout: 30\n"
V2 = "version: 1\nserver:\n  drain_timeout: 20\n"
INVALID = "version: 1\nserver: {workers: 0}\nmodels:\n  - {name: m, pool: nope}\n"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path with the defaults (store and last-good file in the working directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEADWAY_STORE", raising=False)
    monkeypatch.delenv("HEADWAY_LAST_GOOD", raising=False)
    monkeypatch.setenv("USER", "ana")
    (tmp_path / "v1.yaml").write_text(V1)
    (tmp_path / "v2.yaml").write_text(V2)
    (tmp_path / "bad.yaml").write_text(INVALID)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_apply_history_diff_rollback_show(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "config", "apply", "v1.yaml", "-m", "initial") == (
        0,
        "applied version 1: the first version\n",
        "",
    )
    assert (env / "headway-control.db").exists()
    code, out, _ = run(capsys, "config", "apply", "v1.yaml", "-m", "again")
    assert (code, out) == (0, "no change: v1.yaml is identical to the current version 1\n")
    code, out, _ = run(
        capsys, "config", "apply", "v2.yaml", "-m", "drain faster", "--author", "bob"
    )
    assert (code, out) == (
        0,
        "applied version 2: 1 setting changed\n  server.drain_timeout: 30.0 -> 20.0\n",
    )

    code, out, _ = run(capsys, "config", "history")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "VERSION",
        "CREATED",
        "(UTC)",
        "AUTHOR",
        "CHANGES",
        "SHA256",
        "MESSAGE",
    ]
    row2, row1 = lines[1].split(), lines[2].split()
    assert (row2[0], row2[1], row2[4:6], " ".join(row2[7:])) == (
        "*",
        "2",
        ["bob", "1"],
        "drain faster",
    )
    assert (row1[0], row1[3:5], row1[6]) == ("1", ["ana", "-"], "initial")

    code, out, _ = run(capsys, "config", "diff", "--summary")
    assert (code, out) == (
        0,
        "settings changed from version 1 to version 2:\n  server.drain_timeout: 30.0 -> 20.0\n",
    )
    code, out, _ = run(capsys, "config", "diff", "v1.yaml")  # current -> a file
    assert code == 0
    assert out.splitlines()[:2] == [
        "settings changed from version 2 to v1.yaml:",
        "  server.drain_timeout: 20.0 -> 30.0",
    ]
    assert "-  drain_timeout: 20" in out.splitlines()
    assert "+  drain_timeout: 30" in out.splitlines()
    assert run(capsys, "config", "diff", "2", "v2.yaml")[1] == (
        "no differences between version 2 and v2.yaml\n"
    )

    code, out, _ = run(capsys, "config", "rollback", "-m", "too fast")
    assert (code, out) == (
        0,
        "applied version 3 (rollback to 1: too fast): 1 setting changed\n"
        "  server.drain_timeout: 20.0 -> 30.0\n",
    )
    assert run(capsys, "config", "show") == (0, V1, "")
    assert run(capsys, "config", "show", "2") == (0, V2, "")
    saved = LastKnownGood(env / "headway-last-good.yaml").read()
    assert saved is not None
    assert (saved.number, saved.yaml_text) == (3, V1)


def test_rejected_apply_prints_field_paths_and_stores_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "config", "apply", "bad.yaml", "-m", "broken")
    assert code == 1
    assert out.splitlines() == [
        "server.workers: Input should be greater than or equal to 1 (got 0) (line 2)",
        "models[0].pool: unknown pool 'nope' (known: none declared) (line 4)",
    ]
    assert err == "bad.yaml: rejected, 2 errors; nothing changed\n"
    assert run(capsys, "config", "history")[1] == (
        "no config versions in sqlite:///./headway-control.db\n"
    )
    assert not (env / "headway-last-good.yaml").exists()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["config", "apply", "v1.yaml"], 2, "the following arguments are required: -m/--message"),
        (["config", "apply"], 2, "required: file"),
        (["config", "rollback", "abc"], 2, "expected a positive number"),
        (["config", "frobnicate"], 2, "usage: headway config COMMAND"),
        (["config", "diff", "1", "2", "3"], 2, "at most two operands"),
        (["config", "apply", "missing.yaml", "-m", "x"], 1, "cannot read"),
        (["config", "rollback"], 1, "nothing to roll back to"),
        (["config", "show", "4"], 1, "no config version 4"),
        (["config", "history", "--store", "mysql://db"], 2, "unsupported store URL scheme"),
    ],
)
def test_usage_and_refusals(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, _, err = run(capsys, *argv)
    assert got == code
    assert message in err


def test_store_from_env_and_store_errors(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADWAY_STORE", f"sqlite:///{env}/elsewhere.db")
    monkeypatch.setenv("HEADWAY_LAST_GOOD", "")
    assert run(capsys, "config", "apply", "v1.yaml", "-m", "x")[0] == 0
    assert (env / "elsewhere.db").exists()
    assert not (env / "headway-control.db").exists()
    assert not (env / "headway-last-good.yaml").exists()
    code, _, err = run(capsys, "config", "history", "--store", f"sqlite:///{env}/v1.yaml/x.db")
    assert code == 3
    assert "store error" in err


def test_cli_as_a_real_subprocess(tmp_path: Path) -> None:
    (tmp_path / "v1.yaml").write_text(V1)
    url = f"sqlite:///{tmp_path}/control.db"
    env = {**os.environ, "HEADWAY_STORE": url, "HEADWAY_LAST_GOOD": str(tmp_path / "lkg.yaml")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "headway",
            "config",
            "apply",
            "v1.yaml",
            "-m",
            "from a shell",
            "--author",
            "ops",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "applied version 1: the first version\n",
        "",
    )

    async def stored() -> tuple[int, str, str]:
        store = open_control_store(url)
        try:
            version = await store.latest_version()
            assert version is not None
            return version.number, version.author, version.message
        finally:
            await store.aclose()

    assert asyncio.run(stored()) == (1, "ops", "from a shell")
    assert (tmp_path / "lkg.yaml").exists()
