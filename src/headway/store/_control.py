"""The control-plane store: durable state an operator changes, shared by every gateway instance.

Three kinds of record, all behind :class:`ControlStore`:

- **config versions**: numbered, immutable (the backends refuse UPDATE and DELETE with a
  trigger), each with author, time, message, the YAML text, its SHA-256 and the diff from the
  previous version. :meth:`ControlStore.append_version` assigns the number and writes the audit
  entry in one transaction that holds the version table's write lock, so two concurrent applies,
  from any number of processes, never get the same number and each diff is against the version
  it really follows.
- **audit log**: append-only (time, actor, action, target, JSON detail).
- **state documents**: a key/value of JSON objects (:class:`StateStore`, ``load``/``save``),
  where the rollout controller keeps its progress so a rollout survives a restart.

The API is async: the gateway calls it from its event loop, and a slow disk or database must
never stall request handling. ``open_control_store(url)`` picks the backend by URL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = [
    "MAX_VERSION_NUMBER",
    "AuditEntry",
    "ConfigVersion",
    "ControlStore",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
    "VersionDraft",
    "parse_version_number",
    "pending_migrations",
    "sha256_text",
    "version_audit",
]


class StoreError(Exception):
    """The control-plane store failed an operation (the backend's error is ``__cause__``)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or used right now (connection refused, file unopenable,
    locked past the busy timeout). Callers may fall back to the last known good config."""


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` as UTF-8: the identity of a config version's content."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One applied config, as stored; never changes once written."""

    number: int
    author: str
    #: Unix seconds (UTC) when the store wrote it.
    created: float
    message: str
    yaml_text: str
    sha256: str
    #: What changed from the previous version, one line per change (empty for version 1).
    diff: tuple[str, ...]

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)


@dataclass(frozen=True, slots=True)
class VersionDraft:
    """What a caller of :meth:`ControlStore.append_version` wants written next."""

    yaml_text: str
    author: str
    message: str
    diff: tuple[str, ...] = ()
    #: The audit entry's action (``config.apply``, ``config.rollback``) and extra detail.
    action: str = "config.apply"
    detail: Mapping[str, Any] = field(default_factory=dict)

    def version(self, latest: ConfigVersion | None, created: float) -> ConfigVersion:
        """The version this draft becomes on top of ``latest`` (the next number)."""
        return ConfigVersion(
            number=(latest.number if latest else 0) + 1,
            author=self.author,
            created=created,
            message=self.message,
            yaml_text=self.yaml_text,
            sha256=sha256_text(self.yaml_text),
            diff=tuple(self.diff),
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: who did what to which thing, when, with what detail."""

    id: int
    time: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


#: Decides the next version from the latest one (``None`` when the store is empty); returns
#: ``None`` to write nothing. Runs inside the store's write transaction: keep it pure and quick.
BuildVersion = Callable[[ConfigVersion | None], VersionDraft | None]


class StateStore(Protocol):
    """JSON documents by name, for state a controller must find again after a restart."""

    async def load(self, name: str) -> dict[str, Any] | None:
        """The document saved under ``name``, or ``None``."""
        ...

    async def save(self, name: str, doc: Mapping[str, Any]) -> None:
        """Store ``doc`` (JSON-serialisable) under ``name``, replacing any previous one."""
        ...

    async def delete(self, name: str) -> bool:
        """Remove ``name``; whether it existed."""
        ...

    async def names(self, prefix: str = "") -> list[str]:
        """Names of the stored documents starting with ``prefix``, sorted."""
        ...


class ControlStore(StateStore, Protocol):
    """Config versions, the audit log and state documents in one durable place."""

    #: The store's URL with any password removed (for logs and messages).
    url: str

    async def append_version(self, build: BuildVersion) -> ConfigVersion | None:
        """Atomically: read the latest version, call ``build(latest)``, and if it returns a
        draft, store it as number ``latest + 1`` (1 for the first) with a matching audit entry.
        Returns the new version, or ``None`` when ``build`` declined. An exception from
        ``build`` propagates and nothing is written."""
        ...

    async def latest_version(self) -> ConfigVersion | None:
        """The highest-numbered version, or ``None`` if nothing was ever applied."""
        ...

    async def latest_number(self) -> int:
        """The highest version number, 0 before the first apply: the cheap question a gateway
        polling for new versions asks every few seconds (no YAML text is read)."""
        ...

    async def get_version(self, number: int) -> ConfigVersion | None:
        """Version ``number``, or ``None``."""
        ...

    async def versions(self, limit: int | None = None) -> list[ConfigVersion]:
        """Versions newest first (at most ``limit``)."""
        ...

    async def audit(
        self, actor: str, action: str, target: str, detail: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        """Append one audit entry."""
        ...

    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        """Audit entries newest first (at most ``limit``)."""
        ...

    async def aclose(self) -> None:
        """Release the connection; the store must not be used afterwards."""
        ...


def version_audit(version: ConfigVersion, draft: VersionDraft) -> tuple[str, str, dict[str, Any]]:
    """The audit entry (action, target, detail) every backend writes with a new version."""
    detail = {"message": version.message, "sha256": version.sha256, "changes": len(version.diff)}
    detail.update(draft.detail)
    return draft.action, f"config/{version.number}", detail


def pending_migrations(
    done: int, migrations: Sequence[tuple[str, ...]]
) -> list[tuple[int, tuple[str, ...]]]:
    """The migrations a store at schema version ``done`` still needs, numbered from
    ``done + 1``; a store newer than ``migrations`` is refused (an older Headway must not
    write to a schema it does not know)."""
    if done > len(migrations):
        raise StoreError(
            f"store schema version {done} is newer than this Headway knows "
            f"({len(migrations)}); upgrade Headway"
        )
    return list(enumerate(migrations[done:], start=done + 1))


#: The largest version number a store holds: SQLite's and PostgreSQL's BIGINT maximum (a
#: larger one overflows the drivers).
MAX_VERSION_NUMBER = 2**63 - 1


def parse_version_number(text: str) -> int | None:
    """``text`` as a version number a store can hold, else None. ASCII digits only
    (``str.isdigit`` also takes e.g. superscripts, which ``int`` refuses)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_VERSION_NUMBER else None
