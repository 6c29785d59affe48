"""``ControlStore.latest_number``: the cheap question a polling gateway asks, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from headway.store import VersionDraft, open_control_store


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/control.db"
    return str(request.getfixturevalue("pg_url"))


async def test_latest_number_counts_versions_from_zero(url: str) -> None:
    store = open_control_store(url)
    try:
        assert await store.latest_number() == 0
        for n in (1, 2, 3):
            draft = VersionDraft(yaml_text=f"version: 1\n# {n}\n", author="ana", message="m")
            await store.append_version(lambda latest, d=draft: d)  # type: ignore[misc]
            assert await store.latest_number() == n
        await store.append_version(lambda latest: None)  # declined: nothing written
        assert await store.latest_number() == 3
    finally:
        await store.aclose()
