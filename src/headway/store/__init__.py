"""State backends behind small interfaces, so state shared across instances has one home.

Today: rate-limit state (:class:`LimitStore`) in process (:class:`MemoryStore`, the embedded
default) or in Redis (:class:`RedisStore`). Control-plane state (config versions, the audit
log, rollout state documents: :class:`ControlStore`) in SQLite (:class:`SqliteControlStore`, the
embedded default) or PostgreSQL (``PostgresControlStore``, imported on first use so psycopg stays
optional), chosen by URL with :func:`open_control_store`.
This package imports only ``headway.core``.
"""

from typing import TYPE_CHECKING, Any

from ._control import (
    MAX_VERSION_NUMBER,
    AuditEntry,
    BuildVersion,
    ConfigVersion,
    ControlStore,
    StateStore,
    StoreError,
    StoreUnavailable,
    VersionDraft,
    parse_version_number,
    sha256_text,
)
from ._control_url import DEFAULT_STORE_URL, open_control_store
from ._gcra import Decision, gcra_step
from ._limit_store import LimitStore, SyncLimitStore
from ._memory import MemoryStore
from ._redis import RedisStore
from ._sqlite import SqliteControlStore

if TYPE_CHECKING:
    from ._postgres import PostgresControlStore

__all__ = [
    "DEFAULT_STORE_URL",
    "MAX_VERSION_NUMBER",
    "AuditEntry",
    "BuildVersion",
    "ConfigVersion",
    "ControlStore",
    "Decision",
    "LimitStore",
    "MemoryStore",
    "PostgresControlStore",
    "RedisStore",
    "SqliteControlStore",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
    "SyncLimitStore",
    "VersionDraft",
    "gcra_step",
    "open_control_store",
    "parse_version_number",
    "sha256_text",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresControlStore":  # psycopg is imported only when PostgreSQL is used
        from ._postgres import PostgresControlStore

        return PostgresControlStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
