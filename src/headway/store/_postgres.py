"""The shared control-plane store: PostgreSQL, for several gateway instances on several hosts.

One async psycopg 3 connection per store (control-plane traffic is a handful of queries per
minute; a pool would be idle), used by one task at a time and reopened after a failure. All
tables live in one PostgreSQL schema (``headway`` unless the URL says ``?schema=NAME``), created
on first use under an advisory lock so concurrent first starts do not race.

Version numbering: the append transaction locks the version table in SHARE ROW EXCLUSIVE mode,
which conflicts with itself but not with readers, so concurrent appends from any number of
instances run one after another and each sees the version it follows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ._control import (
    AuditEntry,
    BuildVersion,
    ConfigVersion,
    StoreError,
    StoreUnavailable,
    pending_migrations,
    version_audit,
)

__all__ = ["PostgresControlStore", "redact_url"]

_T = TypeVar("_T")

DEFAULT_SCHEMA = "headway"
# Our choice: a control-plane call that cannot connect in 5 s treats the store as unreachable
# (the gateway then serves its last known good config); libpq's default is to wait forever.
DEFAULT_CONNECT_TIMEOUT = 5
# Any fixed 64-bit number works; it only has to be the same for every Headway instance.
_MIGRATION_LOCK = 0x4865616477617931  # "Headway1"

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE {s}.config_versions (
            number INTEGER PRIMARY KEY,
            author TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            message TEXT NOT NULL,
            yaml_text TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            diff TEXT[] NOT NULL)""",
        """CREATE TABLE {s}.audit_log (
            id BIGSERIAL PRIMARY KEY,
            time DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail JSONB NOT NULL)""",
        """CREATE TABLE {s}.state (
            name TEXT PRIMARY KEY,
            doc JSONB NOT NULL,
            updated DOUBLE PRECISION NOT NULL)""",
        """CREATE FUNCTION {s}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
        """CREATE TRIGGER config_versions_immutable BEFORE UPDATE OR DELETE
            ON {s}.config_versions FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change()""",
        """CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE
            ON {s}.audit_log FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change()""",
    ),
)

_VERSION_COLUMNS = "number, author, created, message, yaml_text, sha256, diff"


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def _split_schema(url: str) -> tuple[str, str]:
    """Take Headway's own ``schema`` parameter out of the URL (libpq would reject it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), DEFAULT_SCHEMA)
    rest = [(key, value) for key, value in query if key != "schema"]
    if not any(key == "connect_timeout" for key, _ in rest):
        rest.append(("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT)))
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


class PostgresControlStore:
    """:class:`~headway.store.ControlStore` in PostgreSQL (``postgresql://...[?schema=NAME]``)."""

    def __init__(self, url: str, *, wall: Callable[[], float] = time.time) -> None:
        self._conninfo, self.schema = _split_schema(url)
        if not self.schema:
            raise ValueError("the 'schema' URL parameter must not be empty")
        self.url = redact_url(url)
        self._wall = wall
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._closed = False

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await self._migrate(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
            await conn.execute(
                self._q("CREATE TABLE IF NOT EXISTS {s}.schema_version (version INTEGER NOT NULL)")
            )
            cursor = await conn.execute(self._q("SELECT max(version) FROM {s}.schema_version"))
            row = await cursor.fetchone()
            done = (row[0] if row else None) or 0
            for number, statements in pending_migrations(done, _MIGRATIONS):
                for statement in statements:
                    await conn.execute(self._q(statement))
                await conn.execute(
                    self._q("INSERT INTO {s}.schema_version (version) VALUES (%s)"), (number,)
                )

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        async with self._lock:
            try:
                return await work(await self._connect())
            except psycopg.OperationalError as exc:
                await self._drop()
                raise StoreUnavailable(f"{self.url}: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"{self.url}: {exc}") from exc

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    # -- config versions ------------------------------------------------------------------

    async def append_version(self, build: BuildVersion) -> ConfigVersion | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> ConfigVersion | None:
            async with conn.transaction():
                await conn.execute(
                    self._q("LOCK TABLE {s}.config_versions IN SHARE ROW EXCLUSIVE MODE")
                )
                latest = await self._latest(conn)
                draft = build(latest)
                if draft is None:
                    return None
                version = draft.version(latest, self._wall())
                await conn.execute(
                    self._q(
                        f"INSERT INTO {{s}}.config_versions ({_VERSION_COLUMNS}) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    ),
                    (
                        version.number,
                        version.author,
                        version.created,
                        version.message,
                        version.yaml_text,
                        version.sha256,
                        list(version.diff),
                    ),
                )
                action, target, detail = version_audit(version, draft)
                await self._insert_audit(
                    conn, version.created, version.author, action, target, detail
                )
                return version

        return await self._run(work)

    async def _latest(self, conn: psycopg.AsyncConnection[Any]) -> ConfigVersion | None:
        cursor = await conn.execute(
            self._q(
                f"SELECT {_VERSION_COLUMNS} FROM {{s}}.config_versions ORDER BY number DESC LIMIT 1"
            )
        )
        row = await cursor.fetchone()
        return _version(row) if row else None

    async def latest_version(self) -> ConfigVersion | None:
        return await self._run(self._latest)

    async def latest_number(self) -> int:
        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            cursor = await conn.execute(self._q("SELECT max(number) FROM {s}.config_versions"))
            row = await cursor.fetchone()
            return int(row[0] or 0) if row else 0

        return await self._run(work)

    async def get_version(self, number: int) -> ConfigVersion | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> ConfigVersion | None:
            cursor = await conn.execute(
                self._q(f"SELECT {_VERSION_COLUMNS} FROM {{s}}.config_versions WHERE number = %s"),
                (number,),
            )
            row = await cursor.fetchone()
            return _version(row) if row else None

        return await self._run(work)

    async def versions(self, limit: int | None = None) -> list[ConfigVersion]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[ConfigVersion]:
            cursor = await conn.execute(
                self._q(
                    f"SELECT {_VERSION_COLUMNS} FROM {{s}}.config_versions "
                    "ORDER BY number DESC LIMIT %s"
                ),
                (limit,),
            )
            return [_version(row) for row in await cursor.fetchall()]

        return await self._run(work)

    # -- audit log ------------------------------------------------------------------------

    async def _insert_audit(
        self,
        conn: psycopg.AsyncConnection[Any],
        now: float,
        actor: str,
        action: str,
        target: str,
        detail: Mapping[str, Any],
    ) -> AuditEntry:
        body = dict(detail)
        cursor = await conn.execute(
            self._q(
                "INSERT INTO {s}.audit_log (time, actor, action, target, detail) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id"
            ),
            (now, actor, action, target, Jsonb(body)),
        )
        row = await cursor.fetchone()
        return AuditEntry(int(row[0]) if row else 0, now, actor, action, target, body)

    async def audit(
        self, actor: str, action: str, target: str, detail: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        now = self._wall()
        body = dict(detail or {})

        async def work(conn: psycopg.AsyncConnection[Any]) -> AuditEntry:
            return await self._insert_audit(conn, now, actor, action, target, body)

        return await self._run(work)

    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[AuditEntry]:
            cursor = await conn.execute(
                self._q(
                    "SELECT id, time, actor, action, target, detail FROM {s}.audit_log "
                    "ORDER BY id DESC LIMIT %s"
                ),
                (limit,),
            )
            return [AuditEntry(*row) for row in await cursor.fetchall()]

        return await self._run(work)

    # -- state documents ------------------------------------------------------------------

    async def load(self, name: str) -> dict[str, Any] | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any] | None:
            cursor = await conn.execute(
                self._q("SELECT doc FROM {s}.state WHERE name = %s"), (name,)
            )
            row = await cursor.fetchone()
            return dict(row[0]) if row else None

        return await self._run(work)

    async def save(self, name: str, doc: Mapping[str, Any]) -> None:
        json.dumps(dict(doc), allow_nan=False)  # TypeError/ValueError here, before any I/O
        body = Jsonb(dict(doc))
        now = self._wall()

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                self._q(
                    "INSERT INTO {s}.state (name, doc, updated) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE "
                    "SET doc = excluded.doc, updated = excluded.updated"
                ),
                (name, body, now),
            )

        await self._run(work)

    async def delete(self, name: str) -> bool:
        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cursor = await conn.execute(self._q("DELETE FROM {s}.state WHERE name = %s"), (name,))
            return cursor.rowcount > 0

        return await self._run(work)

    async def names(self, prefix: str = "") -> list[str]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            cursor = await conn.execute(self._q("SELECT name FROM {s}.state ORDER BY name"))
            return [row[0] for row in await cursor.fetchall() if row[0].startswith(prefix)]

        return await self._run(work)

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            await self._drop()


def _version(row: tuple[Any, ...]) -> ConfigVersion:
    number, author, created, message, yaml_text, sha256, diff = row
    return ConfigVersion(number, author, created, message, yaml_text, sha256, tuple(diff))
