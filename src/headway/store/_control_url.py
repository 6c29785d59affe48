"""Choosing the control-plane store by URL, so deployments switch backends in one setting.

``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (SQLAlchemy's convention:
what follows the third slash is the path) select the embedded store;
``postgresql://user@host:port/db[?schema=NAME]`` (or ``postgres://``) the shared one. The
PostgreSQL driver is imported only when such a URL is opened, so SQLite users never need it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._control import ControlStore

__all__ = ["DEFAULT_STORE_URL", "open_control_store"]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_STORE_URL = "sqlite:///./headway-control.db"


def open_control_store(url: str, *, wall: Callable[[], float] = time.time) -> ControlStore:
    """The store ``url`` names (nothing is opened until the first call); ``ValueError`` for a
    URL no backend understands."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or len(path) < 2:
            raise ValueError(
                f"bad SQLite store URL {url!r}: expected sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        from ._sqlite import SqliteControlStore

        return SqliteControlStore(path[1:], wall=wall)
    if url.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresControlStore

        return PostgresControlStore(url, wall=wall)
    scheme = url.partition(":")[0] if ":" in url else url
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use sqlite:///PATH or postgresql://..."
    )
