"""Config versions on a real SQLite store file: validate-then-store, no-op re-apply, rollback as a
new version, diffs, concurrent applies, and the last known good file a gateway falls back to."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headway.config import ConfigError, diff_configs, parse_config
from headway.rollout import (
    ConcurrentChange,
    ConfigVersions,
    LastKnownGood,
    NoActiveConfig,
    VersionNotFound,
    load_active_config,
)
from headway.store import ConfigVersion, ControlStore, open_control_store, sha256_text

V1 = "version: 1\nserver:\n  drain_timeout: 30\n"
V2 = "version: 1\nserver:\n  drain_timeout: 20\n  default_timeout: 120\n"
V3 = "version: 1\nserver:\n  drain_timeout: 10\n"
INVALID = (
    "version: 1\nserver:\n  drain_timeout: -1\n  workers: 0\nmodels: [{name: m, pool: nope}]\n"
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ControlStore]:
    opened = open_control_store(f"sqlite:///{tmp_path}/control.db")
    yield opened
    await opened.aclose()


@pytest.fixture
def versions(store: ControlStore, tmp_path: Path) -> ConfigVersions:
    return ConfigVersions(store, last_good=tmp_path / "last-good.yaml")


async def test_apply_numbers_versions_and_records_diff_and_audit(
    versions: ConfigVersions, store: ControlStore, tmp_path: Path
) -> None:
    first = await versions.apply(V1, author="ana", message="initial")
    assert first.changed
    assert (first.version.number, first.version.diff, first.version.author) == (1, (), "ana")
    second = await versions.apply(V2, author="bob", message="tighter drain")
    assert second.version.number == 2
    assert second.version.message == "tighter drain"
    assert second.version.sha256 == sha256_text(V2)
    assert second.version.diff == (
        "server.drain_timeout: 30.0 -> 20.0",
        "server.default_timeout: 600.0 -> 120.0",
    )
    assert [v.number for v in await versions.history()] == [2, 1]
    assert (await versions.get(1)).yaml_text == V1
    log = await store.audit_log()
    assert [(e.actor, e.action, e.target, e.detail["message"]) for e in log] == [
        ("bob", "config.apply", "config/2", "tighter drain"),
        ("ana", "config.apply", "config/1", "initial"),
    ]
    saved = LastKnownGood(tmp_path / "last-good.yaml").read()
    assert saved is not None
    assert (saved.number, saved.yaml_text) == (2, V2)


async def test_invalid_config_is_rejected_whole_and_nothing_changes(
    versions: ConfigVersions, store: ControlStore, tmp_path: Path
) -> None:
    await versions.apply(V1, author="ana", message="initial")
    before = (tmp_path / "last-good.yaml").read_bytes()
    with pytest.raises(ConfigError) as caught:
        await versions.apply(INVALID, author="ana", message="oops")
    assert [issue.path for issue in caught.value.errors] == [
        "server.drain_timeout",
        "server.workers",
        "models[0].pool",
    ]
    assert [v.number for v in await versions.history()] == [1]
    assert len(await store.audit_log()) == 1
    assert (tmp_path / "last-good.yaml").read_bytes() == before


async def test_identical_reapply_is_a_no_op(versions: ConfigVersions, store: ControlStore) -> None:
    await versions.apply(V1, author="ana", message="initial")
    again = await versions.apply(V1, author="bob", message="again")
    assert not again.changed
    assert again.version.number == 1
    assert again.version.author == "ana"
    assert len(await store.versions()) == 1
    assert len(await store.audit_log()) == 1
    # A comment is part of the record: it is a new version with no setting changed.
    commented = await versions.apply(V1 + "# why\n", author="ana", message="comment")
    assert (commented.changed, commented.version.number, commented.version.diff) == (True, 2, ())


async def test_rollback_restores_the_previous_config_as_a_new_version(
    versions: ConfigVersions, store: ControlStore, tmp_path: Path
) -> None:
    await versions.apply(V1, author="ana", message="initial")
    await versions.apply(V2, author="ana", message="change")
    result = await versions.rollback(author="carol")
    version = result.version
    assert (version.number, version.message, version.author) == (3, "rollback to 1", "carol")
    assert version.yaml_text == V1
    assert parse_config(version.yaml_text) == parse_config(V1)
    assert version.diff == (
        "server.drain_timeout: 20.0 -> 30.0",
        "server.default_timeout: 120.0 -> 600.0",
    )
    entry = (await store.audit_log(limit=1))[0]
    assert (entry.action, entry.target, entry.detail["to"]) == ("config.rollback", "config/3", 1)
    saved = LastKnownGood(tmp_path / "last-good.yaml").read()
    assert saved is not None
    assert saved.yaml_text == V1
    # History is never rewritten: versions 1 and 2 are still there, unchanged.
    assert (await versions.get(2)).yaml_text == V2
    # Rolling back to a version whose text is already current changes nothing.
    again = await versions.rollback(1, author="carol")
    assert not again.changed
    assert again.version.number == 3
    explicit = await versions.rollback(2, author="carol", message="it was fine")
    assert (explicit.version.number, explicit.version.message) == (4, "rollback to 2: it was fine")


async def test_rollback_needs_a_target(versions: ConfigVersions) -> None:
    with pytest.raises(VersionNotFound, match="nothing to roll back"):
        await versions.rollback(author="ana")
    await versions.apply(V1, author="ana", message="initial")
    with pytest.raises(VersionNotFound, match="nothing to roll back"):
        await versions.rollback(author="ana")
    with pytest.raises(VersionNotFound, match="no config version 7"):
        await versions.rollback(7, author="ana")


async def test_rollback_to_a_version_that_no_longer_validates_is_refused(
    store: ControlStore,
) -> None:
    with_env = ConfigVersions(store, env={"DRAIN": "5"})
    await with_env.apply(
        "version: 1\nserver: {drain_timeout: '${DRAIN}'}\n", author="a", message="env"
    )
    await with_env.apply(V1, author="a", message="plain")
    without_env = ConfigVersions(store, env={})
    with pytest.raises(ConfigError) as caught:
        await without_env.rollback(1, author="a")
    assert [issue.path for issue in caught.value.errors] == ["server.drain_timeout"]
    assert len(await store.versions()) == 2


async def test_diff_between_versions(versions: ConfigVersions) -> None:
    await versions.apply(V1, author="ana", message="one")
    await versions.apply(V3, author="ana", message="three")
    diff = await versions.diff(1, 2)
    assert diff.changes == ("server.drain_timeout: 30.0 -> 10.0",)
    assert diff.text == (
        "--- version 1",
        "+++ version 2",
        "@@ -1,3 +1,3 @@",
        " version: 1",
        " server:",
        "-  drain_timeout: 30",
        "+  drain_timeout: 10",
    )
    same = await versions.diff(2, 2)
    assert (same.changes, same.text) == ((), ())


async def test_concurrent_applies_each_diff_against_their_real_predecessor(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    stores = [open_control_store(url) for _ in range(3)]
    appliers = [ConfigVersions(s) for s in stores]
    texts = [f"version: 1\nserver:\n  drain_timeout: {10 + i}\n" for i in range(12)]
    try:
        results = await asyncio.gather(
            *(appliers[i % 3].apply(t, author="x", message=str(i)) for i, t in enumerate(texts))
        )
        assert sorted(r.version.number for r in results) == list(range(1, 13))
        history = await appliers[0].history()
        for newer, older in itertools.pairwise(history):
            expected = diff_configs(parse_config(older.yaml_text), parse_config(newer.yaml_text))
            assert list(newer.diff) == expected
    finally:
        for s in stores:
            await s.aclose()


class _RacingStore:
    """Delegates to a real store, but lands another apply just before a default rollback
    starts its transaction (between reading the latest version and appending)."""

    def __init__(self, inner: ControlStore) -> None:
        self.inner = inner
        self.url = inner.url

    async def latest_version(self) -> ConfigVersion | None:
        return await self.inner.latest_version()

    async def get_version(self, number: int) -> ConfigVersion | None:
        await ConfigVersions(self.inner).apply(V3, author="someone", message="meanwhile")
        return await self.inner.get_version(number)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_default_rollback_refuses_when_another_apply_landed(store: ControlStore) -> None:
    await ConfigVersions(store).apply(V1, author="a", message="1")
    await ConfigVersions(store).apply(V2, author="a", message="2")
    racing = ConfigVersions(_RacingStore(store))  # type: ignore[arg-type]
    with pytest.raises(ConcurrentChange, match="version 3 was applied meanwhile"):
        await racing.rollback(author="a")
    assert [v.message for v in await store.versions()] == ["meanwhile", "2", "1"]


async def test_last_good_write_failure_is_a_warning_not_a_failure(store: ControlStore) -> None:
    versions = ConfigVersions(store, last_good="/nonexistent-dir/last-good.yaml")
    result = await versions.apply(V1, author="a", message="1")
    assert result.changed
    assert result.version.number == 1
    assert len(result.warnings) == 1
    assert "could not write the last known good file" in result.warnings[0]


def test_last_good_file_is_a_valid_config_and_detects_tampering(tmp_path: Path) -> None:
    path = tmp_path / "lkg.yaml"
    lkg = LastKnownGood(path)
    assert lkg.read() is None
    version = ConfigVersion(4, "a", 0.0, "m", V2, sha256_text(V2), ())
    lkg.write(version)
    assert path.read_text().startswith("# headway last-known-good: version=4 sha256=")
    assert parse_config(path.read_text()) == parse_config(V2)  # serve it as it is
    assert [p.name for p in tmp_path.iterdir()] == ["lkg.yaml"]  # no temporary left behind
    path.write_text(path.read_text().replace("20", "25"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        lkg.read()
    path.write_text(V2)
    with pytest.raises(ValueError, match="not a Headway last-known-good file"):
        lkg.read()


# -- what a gateway loads at start ------------------------------------------------------------


async def test_active_config_prefers_the_store_and_refreshes_the_file(
    store: ControlStore, tmp_path: Path
) -> None:
    await ConfigVersions(store).apply(V1, author="a", message="1")  # no file written here
    lkg = tmp_path / "gw" / "lkg.yaml"
    lkg.parent.mkdir()
    active = await load_active_config(store, lkg)
    assert (active.source, active.version, active.reason) == ("store", 1, "")
    assert active.config == parse_config(V1)
    saved = LastKnownGood(lkg).read()
    assert saved is not None
    assert (saved.number, saved.yaml_text) == (1, V1)


async def test_active_config_falls_back_to_the_file_when_the_store_is_down(
    tmp_path: Path,
) -> None:
    lkg = LastKnownGood(tmp_path / "lkg.yaml")
    lkg.write(ConfigVersion(7, "a", 0.0, "m", V2, sha256_text(V2), ()))
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        down = open_control_store(f"postgresql://postgres@127.0.0.1:{closed.getsockname()[1]}/x")
        active = await load_active_config(down, lkg)
        await down.aclose()
    assert (active.source, active.version) == ("last-known-good", 7)
    assert active.config == parse_config(V2)
    assert active.reason.startswith("store unavailable:")
    # An unopenable SQLite file counts as down too.
    blocked = open_control_store(f"sqlite:///{tmp_path}/lkg.yaml/control.db")
    assert (await load_active_config(blocked, lkg)).source == "last-known-good"
    await blocked.aclose()


async def test_active_config_with_an_empty_store_uses_the_file(
    store: ControlStore, tmp_path: Path
) -> None:
    lkg = LastKnownGood(tmp_path / "lkg.yaml")
    with pytest.raises(NoActiveConfig, match="has no config versions; no last known good file"):
        await load_active_config(store, lkg)
    lkg.write(ConfigVersion(2, "a", 0.0, "m", V1, sha256_text(V1), ()))
    active = await load_active_config(store, lkg)
    assert (active.source, active.version) == ("last-known-good", 2)


async def test_no_active_config_when_the_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "lkg.yaml"
    path.write_text("garbage")
    with pytest.raises(NoActiveConfig, match="unusable"):
        await load_active_config(None, path)
