"""The embedded control-plane store: one SQLite file, no server to run.

Threading: stdlib ``sqlite3`` is blocking, so every call runs in a worker thread
(``asyncio.to_thread``) on the store's one connection, serialised by a lock; the event loop never
waits on the disk. Several processes may share the file: the database is in WAL mode (readers
never block the writer), writers take the write lock up front (``BEGIN IMMEDIATE``) and wait up
to ``busy_timeout`` seconds for it, which is what makes version numbering atomic across
processes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ._control import (
    AuditEntry,
    BuildVersion,
    ConfigVersion,
    StoreError,
    StoreUnavailable,
    pending_migrations,
    version_audit,
)

__all__ = ["SqliteControlStore"]

_T = TypeVar("_T")

# Our choice: an apply waits up to 10 s for another writer (a human-driven, rare operation;
# SQLite's own default is 0, i.e. fail at once).
DEFAULT_BUSY_TIMEOUT = 10.0

# Schema migrations, applied in order on first use; the schema_version table records how many.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE config_versions (
            number INTEGER PRIMARY KEY,
            author TEXT NOT NULL,
            created REAL NOT NULL,
            message TEXT NOT NULL,
            yaml_text TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            diff TEXT NOT NULL)""",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL)""",
        """CREATE TABLE state (
            name TEXT PRIMARY KEY,
            doc TEXT NOT NULL,
            updated REAL NOT NULL)""",
        """CREATE TRIGGER config_versions_immutable BEFORE UPDATE ON config_versions
            BEGIN SELECT RAISE(ABORT, 'config versions are immutable'); END""",
        """CREATE TRIGGER config_versions_kept BEFORE DELETE ON config_versions
            BEGIN SELECT RAISE(ABORT, 'config versions are immutable'); END""",
        """CREATE TRIGGER audit_log_immutable BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_log_kept BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    ),
)

_VERSION_COLUMNS = "number, author, created, message, yaml_text, sha256, diff"


class SqliteControlStore:
    """:class:`~headway.store.ControlStore` in a SQLite file (``sqlite:///path``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self._busy_timeout = busy_timeout
        self._wall = wall
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # -- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn is not None:
            return self._conn
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write transaction starts
        # with the write lock (IMMEDIATE) instead of upgrading to it half-way.
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL takes an exclusive lock that SQLite's busy handler does
        # not wait for: several processes opening the same new store at once may see "database
        # is locked" here, so this step retries with a short backoff up to the busy timeout.
        delay, waited = 0.01, 0.0
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk when it returns, even across a power loss (NORMAL in
                # WAL mode may drop the last commits then: https://sqlite.org/pragma.html).
                # Control-plane writes are rare, so the extra fsync costs nothing that matters.
                conn.execute("PRAGMA synchronous=FULL")
                self._migrate(conn)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or waited >= self._busy_timeout:
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.2)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            done = row[0] or 0
            for number, statements in pending_migrations(done, _MIGRATIONS):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await asyncio.to_thread(self._locked, work)

    def _locked(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            try:
                return work(self._connect())
            except (sqlite3.OperationalError, OSError) as exc:
                raise StoreUnavailable(f"{self.url}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"{self.url}: {exc}") from exc

    @staticmethod
    def _write(conn: sqlite3.Connection, work: Callable[[], _T]) -> _T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- config versions ------------------------------------------------------------------

    async def append_version(self, build: BuildVersion) -> ConfigVersion | None:
        def work(conn: sqlite3.Connection) -> ConfigVersion | None:
            def transaction() -> ConfigVersion | None:
                latest = _latest(conn)
                draft = build(latest)
                if draft is None:
                    return None
                version = draft.version(latest, self._wall())
                conn.execute(
                    f"INSERT INTO config_versions ({_VERSION_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        version.number,
                        version.author,
                        version.created,
                        version.message,
                        version.yaml_text,
                        version.sha256,
                        json.dumps(list(version.diff)),
                    ),
                )
                action, target, detail = version_audit(version, draft)
                _insert_audit(conn, version.created, version.author, action, target, detail)
                return version

            return self._write(conn, transaction)

        return await self._run(work)

    async def latest_version(self) -> ConfigVersion | None:
        return await self._run(_latest)

    async def latest_number(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT max(number) FROM config_versions").fetchone()
            return int(row[0] or 0)

        return await self._run(work)

    async def get_version(self, number: int) -> ConfigVersion | None:
        def work(conn: sqlite3.Connection) -> ConfigVersion | None:
            row = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM config_versions WHERE number = ?", (number,)
            ).fetchone()
            return _version(row) if row else None

        return await self._run(work)

    async def versions(self, limit: int | None = None) -> list[ConfigVersion]:
        def work(conn: sqlite3.Connection) -> list[ConfigVersion]:
            rows = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM config_versions ORDER BY number DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
            return [_version(row) for row in rows]

        return await self._run(work)

    # -- audit log ------------------------------------------------------------------------

    async def audit(
        self, actor: str, action: str, target: str, detail: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        now = self._wall()
        body = dict(detail or {})

        def work(conn: sqlite3.Connection) -> AuditEntry:
            return self._write(conn, lambda: _insert_audit(conn, now, actor, action, target, body))

        return await self._run(work)

    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        def work(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT id, time, actor, action, target, detail FROM audit_log "
                "ORDER BY id DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
            return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

        return await self._run(work)

    # -- state documents ------------------------------------------------------------------

    async def load(self, name: str) -> dict[str, Any] | None:
        def work(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT doc FROM state WHERE name = ?", (name,)).fetchone()
            return json.loads(row[0]) if row else None

        return await self._run(work)

    async def save(self, name: str, doc: Mapping[str, Any]) -> None:
        # TypeError/ValueError here, before any I/O; NaN is refused as PostgreSQL's jsonb does.
        text = json.dumps(dict(doc), sort_keys=True, allow_nan=False)
        now = self._wall()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO state (name, doc, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated = excluded.updated",
                (name, text, now),
            )

        await self._run(work)

    async def delete(self, name: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM state WHERE name = ?", (name,)).rowcount > 0

        return await self._run(work)

    async def names(self, prefix: str = "") -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT name FROM state ORDER BY name").fetchall()
            return [row[0] for row in rows if row[0].startswith(prefix)]

        return await self._run(work)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)


def _latest(conn: sqlite3.Connection) -> ConfigVersion | None:
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM config_versions ORDER BY number DESC LIMIT 1"
    ).fetchone()
    return _version(row) if row else None


def _version(row: tuple[Any, ...]) -> ConfigVersion:
    number, author, created, message, yaml_text, sha256, diff = row
    return ConfigVersion(
        number, author, created, message, yaml_text, sha256, tuple(json.loads(diff))
    )


def _insert_audit(
    conn: sqlite3.Connection,
    now: float,
    actor: str,
    action: str,
    target: str,
    detail: Mapping[str, Any],
) -> AuditEntry:
    body = dict(detail)
    cursor = conn.execute(
        "INSERT INTO audit_log (time, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (now, actor, action, target, json.dumps(body, sort_keys=True)),
    )
    return AuditEntry(int(cursor.lastrowid or 0), now, actor, action, target, body)
