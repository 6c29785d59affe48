"""The control-plane store contract, run against a real SQLite file and the real PostgreSQL at
127.0.0.1:5432 (database ``test``, a throwaway schema per test)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from headway.store import (
    ConfigVersion,
    ControlStore,
    SqliteControlStore,
    StoreError,
    StoreUnavailable,
    VersionDraft,
    open_control_store,
    sha256_text,
)
from servers import POSTGRES_URL as PG_BASE


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/control.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(url: str) -> AsyncIterator[ControlStore]:
    opened = open_control_store(url, wall=iter(range(1000, 100000)).__next__)
    yield opened
    await opened.aclose()


def draft(text: str, message: str = "m", diff: tuple[str, ...] = ()) -> VersionDraft:
    return VersionDraft(yaml_text=text, author="ana", message=message, diff=diff)


async def test_versions_are_numbered_from_one_with_audit(store: ControlStore) -> None:
    assert await store.latest_version() is None
    seen: list[ConfigVersion | None] = []

    def first(latest: ConfigVersion | None) -> VersionDraft:
        seen.append(latest)
        return draft("version: 1\n", "initial")

    v1 = await store.append_version(first)
    assert seen == [None]
    assert v1 == ConfigVersion(
        1, "ana", 1000.0, "initial", "version: 1\n", sha256_text("version: 1\n"), ()
    )
    v2 = await store.append_version(lambda latest: draft("version: 1\n# b\n", "two", ("x: a",)))
    assert v2 is not None
    assert (v2.number, v2.diff) == (2, ("x: a",))
    assert await store.latest_version() == v2
    assert await store.get_version(1) == v1
    assert await store.get_version(3) is None
    assert await store.versions() == [v2, v1]
    assert await store.versions(limit=1) == [v2]
    log = await store.audit_log()
    assert [(e.actor, e.action, e.target) for e in log] == [
        ("ana", "config.apply", "config/2"),
        ("ana", "config.apply", "config/1"),
    ]
    assert log[0].detail == {"message": "two", "sha256": v2.sha256, "changes": 1}


async def test_declined_or_failed_build_writes_nothing(store: ControlStore) -> None:
    assert await store.append_version(lambda latest: None) is None

    def boom(latest: ConfigVersion | None) -> VersionDraft:
        raise ValueError("invalid")

    with pytest.raises(ValueError, match="invalid"):
        await store.append_version(boom)
    assert await store.versions() == []
    assert await store.audit_log() == []


async def test_audit_entries_keep_their_detail(store: ControlStore) -> None:
    entry = await store.audit("bob", "rollout.abort", "rollout/sim-large", {"weight": 0, "n": [1]})
    assert (entry.actor, entry.action, entry.detail) == (
        "bob",
        "rollout.abort",
        {"weight": 0, "n": [1]},
    )
    assert await store.audit_log() == [entry]


async def test_state_documents(store: ControlStore) -> None:
    assert await store.load("rollout/a") is None
    await store.save("rollout/a", {"step": 1, "weights": {"canary": 5.0}, "ok": True})
    await store.save("rollout/b", {"step": 0})
    await store.save("other", {})
    assert await store.load("rollout/a") == {"step": 1, "weights": {"canary": 5.0}, "ok": True}
    await store.save("rollout/a", {"step": 2})
    assert await store.load("rollout/a") == {"step": 2}
    assert await store.names("rollout/") == ["rollout/a", "rollout/b"]
    assert await store.delete("rollout/b") is True
    assert await store.delete("rollout/b") is False
    assert await store.names() == ["other", "rollout/a"]
    with pytest.raises(TypeError):
        await store.save("bad", {"x": object()})
    with pytest.raises(ValueError):
        await store.save("bad", {"x": float("nan")})
    assert await store.load("bad") is None


async def test_state_survives_reopening(url: str) -> None:
    first = open_control_store(url)
    await first.save("rollout/x", {"step": 3})
    await first.append_version(lambda latest: draft("version: 1\n"))
    await first.aclose()
    second = open_control_store(url)
    try:
        assert await second.load("rollout/x") == {"step": 3}
        latest = await second.latest_version()
        assert latest is not None
        assert latest.number == 1
    finally:
        await second.aclose()


async def test_concurrent_writers_never_share_a_number(url: str) -> None:
    """Four store instances (four "gateways", each with its own connection) apply 40 versions
    at once; each build sees the version it really follows."""
    stores = [open_control_store(url) for _ in range(4)]

    async def apply(store: ControlStore, index: int) -> ConfigVersion | None:
        def build(latest: ConfigVersion | None) -> VersionDraft:
            return draft(
                f"version: 1\n# {index}\n", diff=(f"after {latest.number if latest else 0}",)
            )

        return await store.append_version(build)

    try:
        results = await asyncio.gather(*(apply(stores[i % 4], i) for i in range(40)))
        numbers = sorted(v.number for v in results if v is not None)
        assert numbers == list(range(1, 41))
        for version in await stores[0].versions():
            assert version.diff == (f"after {version.number - 1}",)
        texts = {v.yaml_text for v in await stores[1].versions()}
        assert len(texts) == 40
        assert len(await stores[2].audit_log()) == 40
    finally:
        for store in stores:
            await store.aclose()


async def test_closed_store_refuses(store: ControlStore) -> None:
    await store.aclose()
    with pytest.raises(StoreError):
        await store.latest_version()


def test_versions_and_audit_are_immutable_in_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "c.db"

    async def seed() -> None:
        s = SqliteControlStore(path)
        await s.append_version(lambda latest: draft("version: 1\n"))
        await s.aclose()

    asyncio.run(seed())
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            conn.execute("UPDATE config_versions SET message = 'edited'")
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            conn.execute("DELETE FROM config_versions")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_log")
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    finally:
        conn.close()


async def test_versions_are_immutable_in_postgres(pg_url: str) -> None:
    store = open_control_store(pg_url)
    await store.append_version(lambda latest: draft("version: 1\n"))
    await store.aclose()
    schema = pg_url.rpartition("schema=")[2]
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(f'UPDATE "{schema}".config_versions SET message = %s', ("edited",))
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(f'DELETE FROM "{schema}".audit_log')
        assert conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall() == [(1,)]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    store = SqliteControlStore(path)
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        await store.latest_version()
    await store.aclose()


async def test_unreachable_stores_raise_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sqlite_store = open_control_store(f"sqlite:///{blocker}/sub/c.db")
    with pytest.raises(StoreUnavailable):
        await sqlite_store.latest_version()
    await sqlite_store.aclose()
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        pg = open_control_store(f"postgresql://postgres:secret@127.0.0.1:{port}/test")
        assert "secret" not in pg.url
        with pytest.raises(StoreUnavailable):
            await pg.latest_version()
        await pg.aclose()


@pytest.mark.parametrize(
    "bad",
    ["mysql://x", "sqlite://relative.db", "sqlite:///", "nonsense"],
)
def test_bad_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="store URL"):
        open_control_store(bad)


def test_sqlite_url_paths(tmp_path: Path) -> None:
    relative = open_control_store("sqlite:///./x.db")
    absolute = open_control_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(relative, SqliteControlStore)
    assert isinstance(absolute, SqliteControlStore)
    assert (relative.path, absolute.path) == ("./x.db", f"{tmp_path}/x.db")
