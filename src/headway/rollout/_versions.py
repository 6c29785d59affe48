"""Config versions: every applied config is validated, numbered, kept, diffable and reversible.

Guarantees:

- ``apply`` validates with the real loader first; an invalid config raises ``ConfigError`` with
  every issue's field path and nothing is stored.
- A stored version never changes. Numbers are assigned by the store inside one transaction that
  also computes the diff against the version really preceding it, so concurrent applies get
  distinct numbers and correct diffs.
- Re-applying the text of the latest version is a no-op (``ApplyResult.changed`` is False).
- ``rollback`` never rewrites history: it applies the target's text again as a new version
  ("rollback to N").
- After every apply or rollback the latest version is written to the last known good file
  (when one is configured), and :func:`load_active_config` serves from that file when the store
  is unreachable.

The stored diff is ``headway.config.diff_configs`` (one line per changed setting, secrets
masked); a unified text diff is computed on demand by :func:`diff_texts`.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from headway.config import ConfigError, GatewayConfig, diff_configs, parse_config
from headway.store import (
    ConfigVersion,
    ControlStore,
    StoreError,
    VersionDraft,
    sha256_text,
)

from ._last_good import LastKnownGood

__all__ = [
    "ActiveConfig",
    "ApplyResult",
    "ConcurrentChange",
    "ConfigVersions",
    "NoActiveConfig",
    "VersionDiff",
    "VersionNotFound",
    "diff_texts",
    "load_active_config",
]

log = logging.getLogger("headway.control")


class VersionNotFound(LookupError):
    """The version asked for does not exist (or there is nothing to roll back to)."""


class ConcurrentChange(RuntimeError):
    """Another apply landed while this one was being prepared; look at history and retry."""


class NoActiveConfig(LookupError):
    """Neither the store nor the last known good file has a config to serve."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an apply or rollback did."""

    #: The new version, or the latest one when nothing changed.
    version: ConfigVersion
    #: False when the text was identical to the latest version (nothing stored).
    changed: bool
    #: Problems that did not stop the apply (e.g. the last known good file could not be written).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """Two configs compared: setting by setting, and line by line."""

    old_label: str
    new_label: str
    #: ``diff_configs`` lines (``path: old -> new``); a note when a side no longer validates.
    changes: tuple[str, ...]
    #: Unified diff of the YAML texts (empty when the texts are identical).
    text: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ActiveConfig:
    """The config a gateway should serve and where it came from."""

    config: GatewayConfig
    source: Literal["store", "last-known-good"]
    #: The version number (from the store, or as recorded in the file).
    version: int
    sha256: str
    #: Why the file was used instead of the store (empty when the store answered).
    reason: str = ""


class ConfigVersions:
    """Apply, inspect and roll back config versions kept in a :class:`ControlStore`."""

    def __init__(
        self,
        store: ControlStore,
        *,
        last_good: LastKnownGood | str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        if last_good is not None and not isinstance(last_good, LastKnownGood):
            last_good = LastKnownGood(last_good)
        self.last_good = last_good
        self._env = env

    def _parse(self, text: str, source: str) -> GatewayConfig:
        return parse_config(text, source=source, env=self._env)

    async def apply(
        self, yaml_text: str, *, author: str, message: str, source: str = "<apply>"
    ) -> ApplyResult:
        """Validate ``yaml_text`` and store it as the next version (``ConfigError`` if invalid,
        with nothing stored)."""
        new = self._parse(yaml_text, source)
        return await self._append(yaml_text, new, author, message, "config.apply", {})

    async def rollback(
        self, to: int | None = None, *, author: str, message: str | None = None
    ) -> ApplyResult:
        """Apply version ``to``'s text again as a new version (default: the one before the
        latest). ``VersionNotFound`` if there is no such version; ``ConfigError`` if it no
        longer validates (nothing stored)."""
        expected: int | None = None
        if to is None:
            latest = await self.store.latest_version()
            if latest is None or latest.number < 2:
                raise VersionNotFound("nothing to roll back to: fewer than two versions exist")
            to, expected = latest.number - 1, latest.number
        target = await self.store.get_version(to)
        if target is None:
            raise VersionNotFound(f"no config version {to}")
        config = self._parse(target.yaml_text, f"version {to}")
        text = f"rollback to {to}" + (f": {message}" if message else "")
        return await self._append(
            target.yaml_text, config, author, text, "config.rollback", {"to": to}, expected
        )

    async def _append(
        self,
        yaml_text: str,
        new: GatewayConfig,
        author: str,
        message: str,
        action: str,
        detail: Mapping[str, object],
        expected_latest: int | None = None,
    ) -> ApplyResult:
        digest = sha256_text(yaml_text)
        unchanged: list[ConfigVersion] = []

        def build(latest: ConfigVersion | None) -> VersionDraft | None:
            if expected_latest is not None and (latest is None or latest.number != expected_latest):
                raise ConcurrentChange(
                    f"version {latest.number if latest else 0} was applied meanwhile "
                    f"(expected {expected_latest}); check 'headway config history' and retry"
                )
            if latest is not None and latest.sha256 == digest:
                unchanged.append(latest)
                return None
            changes = () if latest is None else self._changes(latest, new)
            return VersionDraft(yaml_text, author, message, changes, action, dict(detail))

        stored = await self.store.append_version(build)
        version = stored if stored is not None else unchanged[0]
        return ApplyResult(version, stored is not None, self._save_last_good(version))

    def _changes(self, latest: ConfigVersion, new: GatewayConfig) -> tuple[str, ...]:
        try:
            old = self._parse(latest.yaml_text, f"version {latest.number}")
        except ConfigError as exc:
            return (f"(version {latest.number} no longer validates, so no setting diff: {exc})",)
        return tuple(diff_configs(old, new))

    def _save_last_good(self, version: ConfigVersion) -> tuple[str, ...]:
        if self.last_good is None:
            return ()
        try:
            self.last_good.write(version)
        except OSError as exc:
            return (f"could not write the last known good file {self.last_good.path}: {exc}",)
        return ()

    async def current(self) -> ConfigVersion | None:
        """The latest version (``None`` before the first apply)."""
        return await self.store.latest_version()

    async def get(self, number: int) -> ConfigVersion:
        version = await self.store.get_version(number)
        if version is None:
            raise VersionNotFound(f"no config version {number}")
        return version

    async def history(self, limit: int | None = None) -> list[ConfigVersion]:
        """Versions newest first."""
        return await self.store.versions(limit)

    async def diff(self, old: int, new: int) -> VersionDiff:
        """Version ``old`` compared with version ``new``."""
        before, after = await self.get(old), await self.get(new)
        return diff_texts(
            before.yaml_text, after.yaml_text, f"version {old}", f"version {new}", env=self._env
        )


def diff_texts(
    old_text: str,
    new_text: str,
    old_label: str,
    new_label: str,
    *,
    env: Mapping[str, str] | None = None,
) -> VersionDiff:
    """Compare two config texts; a side that does not validate gets a note instead of a
    setting diff (the text diff is always there)."""
    text = tuple(
        difflib.unified_diff(
            old_text.splitlines(),
            new_text.splitlines(),
            fromfile=old_label,
            tofile=new_label,
            lineterm="",
        )
    )
    try:
        old = parse_config(old_text, source=old_label, env=env)
        new = parse_config(new_text, source=new_label, env=env)
    except ConfigError as exc:
        count = len(exc.errors)
        note = f"({exc.source} does not validate: {count} error{'s' if count != 1 else ''})"
        return VersionDiff(old_label, new_label, (note,), text)
    return VersionDiff(old_label, new_label, tuple(diff_configs(old, new)), text)


async def load_active_config(
    store: ControlStore | None,
    last_good: LastKnownGood | str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
) -> ActiveConfig:
    """The config to serve: the store's latest version (refreshing the last known good file),
    or, when the store is unreachable or empty, the last known good file.

    ``ConfigError`` if the chosen text does not validate here; ``NoActiveConfig`` if neither
    source has a config.
    """
    if not isinstance(last_good, LastKnownGood):
        last_good = LastKnownGood(last_good)
    reason = "no store configured"
    if store is not None:
        try:
            latest = await store.latest_version()
        except StoreError as exc:
            reason = f"store unavailable: {exc}"
        else:
            if latest is not None:
                config = parse_config(latest.yaml_text, source=f"version {latest.number}", env=env)
                try:
                    saved = last_good.read()
                except (ValueError, OSError):  # unreadable: rewritten below; the store serves
                    saved = None
                if saved is None or saved.sha256 != latest.sha256 or saved.number != latest.number:
                    # Serving matters more than the local copy; the next load retries it. Said
                    # out loud: without the copy, a restart while the store is down fails.
                    try:
                        last_good.write(latest)
                    except OSError as exc:
                        log.warning(
                            "could not write the last known good file %s: %s", last_good.path, exc
                        )
                return ActiveConfig(config, "store", latest.number, latest.sha256)
            reason = f"store {store.url} has no config versions"
    try:
        saved = last_good.read()
    except (ValueError, OSError) as exc:
        raise NoActiveConfig(f"{reason}; last known good file unusable: {exc}") from None
    if saved is None:
        raise NoActiveConfig(f"{reason}; no last known good file at {last_good.path}")
    config = parse_config(saved.yaml_text, source=str(last_good.path), env=env)
    return ActiveConfig(config, "last-known-good", saved.number, saved.sha256, reason)
