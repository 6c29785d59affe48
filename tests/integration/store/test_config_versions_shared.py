"""Config versions where several processes share one store: PostgreSQL through the CLI and the
API, and one SQLite file written by concurrent ``headway config apply`` processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headway.cli import main
from headway.rollout import ConfigVersions
from headway.store import ConfigVersion, open_control_store


def text(i: int) -> str:
    return f"version: 1\nserver:\n  drain_timeout: {10 + i}\n"


async def test_apply_and_rollback_on_postgres(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_control_store(pg_url)
    try:
        versions = ConfigVersions(store, last_good=tmp_path / "lkg.yaml")
        await versions.apply(text(0), author="a", message="one")
        await versions.apply(text(1), author="a", message="two")
        rolled = await versions.rollback(author="b")
        assert (rolled.version.number, rolled.version.yaml_text) == (3, text(0))
        assert rolled.version.diff == ("server.drain_timeout: 11.0 -> 10.0",)
        assert [e.action for e in await store.audit_log()] == [
            "config.rollback",
            "config.apply",
            "config.apply",
        ]
    finally:
        await store.aclose()
    # The CLI sees the same history through the same URL.
    assert await asyncio.to_thread(main, ["config", "history", "--store", pg_url]) == 0
    out = capsys.readouterr().out
    assert "rollback to 1" in out
    assert len(out.splitlines()) == 4


def test_concurrent_cli_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    """Four `headway config apply` processes at once, three applies each: twelve versions,
    numbered 1..12 without a gap or a repeat."""
    for i in range(12):
        (tmp_path / f"c{i}.yaml").write_text(text(i))
    url = f"sqlite:///{tmp_path}/control.db"
    env = {**os.environ, "HEADWAY_STORE": url, "HEADWAY_LAST_GOOD": ""}
    script = (
        "import sys\n"
        "from headway.cli import main\n"
        "for name in sys.argv[1:]:\n"
        "    assert main(['config', 'apply', name, '-m', name]) == 0\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *(f"c{i}.yaml" for i in range(w, 12, 4))],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    history = asyncio.run(_versions(url))
    assert sorted(v.number for v in history) == list(range(1, 13))
    assert sorted(v.message for v in history) == sorted(f"c{i}.yaml" for i in range(12))


async def _versions(url: str) -> list[ConfigVersion]:
    store = open_control_store(url)
    try:
        return await store.versions()
    finally:
        await store.aclose()
