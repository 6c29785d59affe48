"""An upstream's answer: status and headers at once, the body read whole or streamed.

Guarantees:
- ``headers`` is the raw header list in arrival order with lower-cased names; ``header(name)``
  is a dict lookup (the index is built on first use; repeated fields are joined with ``, ``).
- The body is consumed exactly once, by ``read()`` or by iterating ``iter_chunks()``; the
  chunks are the body bytes exactly as they arrived (chunked coding removed, nothing else
  touched), so an SSE relay can forward them unchanged.
- The connection goes back to its pool as soon as the body is complete and the upstream allowed
  keep-alive; on any error, cancellation or early ``aclose()`` it is closed instead. ``aclose()``
  is idempotent; ``async with`` calls it.
- Waiting for the first body chunk is bounded by ``first_chunk_timeout`` (``ttft_timeout``),
  or, when that is None, by ``stall_timeout``; every later wait by ``stall_timeout``
  (``stall_timeout``); all of them by the request's deadline (``DeadlineExceeded``). A stall is
  measured from the moment the consumer finds the buffer empty, not from the previous chunk.
- A connection lost mid-body raises ``UpstreamError(reason="connection_reset")``, retryable
  only while no body byte has been handed to the caller (``read()`` hands over nothing until it
  returns, so its errors stay retryable).
- ``stamp_chunks`` records each later chunk's arrival time as it is handed over.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from headway.core import Clock

from ._names import lowered
from ._response import Header

if TYPE_CHECKING:
    from ._client_conn import UpstreamConnection

__all__ = ["UpstreamResponse"]


class _Owner(Protocol):
    def _release(self, conn: UpstreamConnection) -> None: ...

    def _discard(self, conn: UpstreamConnection, *, failed: bool = False) -> None: ...


class UpstreamResponse:
    def __init__(
        self,
        conn: UpstreamConnection,
        owner: _Owner,
        deadline: float,
        first_chunk_timeout: float | None,
        stall_timeout: float | None,
    ) -> None:
        self.status: int = conn.status
        self.headers: list[Header] = conn.headers
        self._conn: UpstreamConnection | None = conn
        self._owner = owner
        self._deadline = deadline
        self._first_timeout = first_chunk_timeout
        self._stall_timeout = stall_timeout
        self._index: dict[bytes, bytes] | None = None
        self._looked_up = False
        self._stamps: list[float] | None = None
        self._stamp_clock: Clock | None = None
        self._stamps_held = 0
        self._stamps_full: Callable[[list[float]], object] | None = None

    def header(self, name: bytes | str) -> bytes | None:
        """A header's value by case-insensitive name, or None."""
        if isinstance(name, str):
            name = name.encode("latin-1")
        name = lowered(name)
        index = self._index
        if index is not None:
            return index.get(name)
        if self._looked_up:
            index = self._index = {}
            for key, value in self.headers:
                previous = index.get(key)
                index[key] = value if previous is None else previous + b", " + value
            return index.get(name)
        # The first lookup scans the (short) list instead of building the index: most
        # responses are asked for one header (content-type) only, and the gateway's profile
        # showed the per-response dict build. Same answer: repeated fields joined in order.
        self._looked_up = True
        found: bytes | None = None
        for key, value in self.headers:
            if key == name:
                found = value if found is None else found + b", " + value
        return found

    @property
    def complete(self) -> bool:
        """The whole body has been received (it may still be buffered)."""
        conn = self._conn
        return conn is None or conn.done

    @property
    def delivered(self) -> bool:
        """Some body bytes were already handed to the caller."""
        conn = self._conn
        return conn is not None and conn.delivered

    def read_now(self) -> bytes | None:
        """The whole body if all of it has arrived (releasing the connection, as :meth:`read`
        does), else None: then ``await read()``. A small answer usually comes with its head, and
        this takes it without a coroutine."""
        conn = self._conn
        if conn is None or not conn.done:
            return None
        body = conn.take_body()
        self._conn = None
        self._owner._release(conn)
        return body

    async def read(self) -> bytes:
        """The whole body; releases the connection."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the response body was already consumed or closed")
        try:
            if conn.done:
                body = conn.take_body()
            else:
                body = await conn.read_body(
                    self._first_timeout, self._stall_timeout, self._deadline
                )
        except BaseException as exc:
            self._conn = None
            self._owner._discard(conn, failed=isinstance(exc, Exception))
            raise
        self._conn = None
        self._owner._release(conn)
        return body

    def stamp_chunks(
        self, stamps: list[float], clock: Clock, held: int, full: Callable[[list[float]], object]
    ) -> None:
        """Append the time (``clock``) each chunk from now on is handed over to ``stamps``;
        once it holds ``held`` of them, call ``full(stamps)``, which should empty it but for
        the last. Why here: a relay is an async generator, which mypyc cannot compile, and a
        stamp taken there cost ~400 instructions a chunk; here, compiled, a few dozen."""
        self._stamps = stamps
        self._stamp_clock = clock
        self._stamps_held = held
        self._stamps_full = full

    def _stamp(self, stamps: list[float]) -> None:
        clock = self._stamp_clock
        assert clock is not None
        stamps.append(clock.now())
        full = self._stamps_full
        if len(stamps) >= self._stamps_held and full is not None:
            full(stamps)

    def iter_chunks(self) -> UpstreamResponse:
        """``async for chunk in resp.iter_chunks()``: body bytes as they arrive."""
        return self

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        chunk = conn.pop_chunk()
        if chunk is not None:
            stamps = self._stamps
            if stamps is not None:
                self._stamp(stamps)
            return chunk
        try:
            chunk = await conn.next_chunk(self._first_timeout, self._stall_timeout, self._deadline)
        except BaseException as exc:
            self._conn = None
            self._owner._discard(conn, failed=isinstance(exc, Exception))
            raise
        if chunk is None:
            self._conn = None
            self._owner._release(conn)
            raise StopAsyncIteration
        stamps = self._stamps
        if stamps is not None:
            self._stamp(stamps)
        return chunk

    async def aclose(self) -> None:
        """Give the connection back (body complete) or close it (anything left unread)."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if conn.done:
            self._owner._release(conn)
        else:
            self._owner._discard(conn)

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"UpstreamResponse({self.status}, {len(self.headers)} headers)"
