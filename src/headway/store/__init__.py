"""State backends behind small interfaces, so state shared across instances has one home.

Today: rate-limit state (:class:`LimitStore`) in process (:class:`MemoryStore`, the embedded
default) or in Redis (:class:`RedisStore`). Control-plane stores (SQLite, PostgreSQL) join here.
This package imports only ``headway.core``.
"""

from ._gcra import Decision, gcra_step
from ._limit_store import LimitStore, SyncLimitStore
from ._memory import MemoryStore
from ._redis import RedisStore

__all__ = [
    "Decision",
    "LimitStore",
    "MemoryStore",
    "RedisStore",
    "SyncLimitStore",
    "gcra_step",
]
