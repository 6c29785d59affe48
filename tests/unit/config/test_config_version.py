"""The config format version: required, the future refused clearly, the past migrated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from headway.config import MIGRATIONS, ConfigError, parse_config


@pytest.fixture
def migrations() -> Iterator[dict[int, Any]]:
    saved = dict(MIGRATIONS)
    yield MIGRATIONS
    MIGRATIONS.clear()
    MIGRATIONS.update(saved)


def only_issue(text: str) -> tuple[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    (issue,) = caught.value.errors
    return issue.path, issue.message


def test_version_1_is_read() -> None:
    assert parse_config("version: 1\n").version == 1


def test_a_future_version_is_refused_clearly_and_alone() -> None:
    # Only the version is reported: the rest follows a schema this Headway does not know.
    assert only_issue("version: 2\nfuture_section: {a: 1}\n") == (
        "version",
        "unsupported config version 2 (this Headway knows 1)",
    )


def test_missing_or_malformed_version() -> None:
    assert only_issue("server: {}\n") == (
        "version",
        "required: start the file with 'version: 1' (this Headway knows 1)",
    )
    assert only_issue("version: '1'\n") == (
        "version",
        "must be an integer (this Headway knows 1), got '1'",
    )
    assert only_issue("version: true\n") == (
        "version",
        "must be an integer (this Headway knows 1), got True",
    )


def test_an_old_version_without_a_migration_is_refused() -> None:
    assert only_issue("version: 0\n") == (
        "version",
        "unsupported config version 0 (this Headway knows 1)",
    )


def test_migrations_run_in_order_before_validation(migrations: dict[int, Any]) -> None:
    seen: list[int] = []

    def zero_to_one(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data["version"])
        server = data.pop("listener")  # version 0 called the section "listener"
        return {**data, "server": server}

    def minus_one_to_zero(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data["version"])
        address = data.pop("address")
        return {**data, "listener": {"listen": address}}

    migrations[0] = zero_to_one
    migrations[-1] = minus_one_to_zero
    config = parse_config("version: -1\naddress: '127.0.0.1:9999'\n")
    assert seen == [-1, 0]
    assert config.version == 1
    assert config.server.listen == "127.0.0.1:9999"


def test_migrated_config_is_still_validated(migrations: dict[int, Any]) -> None:
    migrations[0] = lambda data: {**data, "server": {"workers": 0}}
    assert only_issue("version: 0\n") == (
        "server.workers",
        "Input should be greater than or equal to 1 (got 0)",
    )


def test_a_failing_migration_is_an_issue(migrations: dict[int, Any]) -> None:
    def refuse(data: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("section 'x' has no equivalent")

    migrations[0] = refuse
    assert only_issue("version: 0\n") == (
        "version",
        "cannot migrate from version 0 to 1: section 'x' has no equivalent",
    )
