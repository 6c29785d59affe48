"""The request a handler receives: parsed, bounded, fully read.

Headers are a dict keyed by lower-cased header names as ``bytes`` (what the parser produces;
no decoding on the hot path); repeated headers are joined with ``b", "`` as RFC 9110 5.3
allows. ``path`` and ``query`` are ``str`` (latin-1 decoded, not percent-decoded).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Request"]


class _Connection(Protocol):
    @property
    def disconnected(self) -> bool: ...


class Request:
    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[bytes, bytes],
        body: bytes,
        *,
        http_version: str = "1.1",
        keep_alive: bool = True,
        connection: _Connection | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.http_version = http_version
        self.keep_alive = keep_alive
        self._conn = connection

    def header(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """A header by lower-case name (``b"content-type"``)."""
        return self.headers.get(name, default)

    @property
    def disconnected(self) -> bool:
        """True once the client has gone; a running handler is also cancelled then."""
        conn = self._conn
        return conn is not None and conn.disconnected

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path!r}, {len(self.body)} bytes)"
