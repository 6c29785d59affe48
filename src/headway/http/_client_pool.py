"""A keep-alive connection pool for one upstream origin, and the request path through it.

Guarantees:
- At most ``max_connections`` connections are open or opening at once. Idle ones are reused
  last-in first-out, so the most recently used (warmest) connection carries the next request
  and the rest age out after ``idle_timeout`` (one pool timer, not one per connection).
- When every connection is busy, callers queue first-in first-out for the next free one (or a
  free slot), each bounded by its deadline; with ``max_pending`` set, a full queue refuses at
  once with ``Overloaded(reason="upstream_pool_full")``.
- A connection the upstream closed while it sat idle is noticed (EOF / ``connection_lost``)
  and dropped, never reused. The remaining keep-alive race (the upstream closes just as a
  request goes out) is healed transparently: a request that fails on a *reused* connection
  before any byte of a response arrived is sent once more on a fresh connection. That is
  safe because the upstream answered nothing, and keep-alive servers only close between
  requests, so the first copy was not processed.
- Every failure is typed (see ``client``); a connection that failed, timed out, was cancelled
  or was left with unread body is closed, never returned to the pool.

The request head is built with one ``bytes.join``; header lines are validated by counting
line breaks in the joined head (one C scan) instead of inspecting every value, so a header
value smuggling CR or LF is refused with ``ValueError`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import deque
from collections.abc import Sequence
from typing import Final

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    DeadlineExceeded,
    DeadlineScope,
    Hooks,
    Overloaded,
    TimerHandle,
    UpstreamError,
    UpstreamTimeout,
    chained,
    current_context,
)
from headway.core._timers import TimerEntry, TimerQueue, timer_queue

from ._client_conn import UpstreamConnection
from ._client_origin import Origin, parse_origin
from ._client_response import UpstreamResponse
from ._response import Header

__all__ = ["UpstreamPool"]

_CRLF: Final = b"\r\n"
_SEP: Final = b": "
_CONTENT_LENGTH: Final = b"content-length: "
_END_HEAD: Final = b"\r\n\r\n"
_METHODS: Final = {
    m: m.encode() for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
}
# Methods whose requests carry a content-length even when the body is empty (RFC 9110 8.6).
_BODY_METHODS: Final = frozenset((b"POST", b"PUT", b"PATCH"))
# Bodies larger than this go out in a second write rather than being copied into the head.
_JOIN_BODY_BELOW: Final = 64 * 1024
# Request heads remembered per (method, path); a gateway pool uses three or four paths.
_MAX_CACHED_HEADS: Final = 32


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to one ``http://host:port[/base-path]`` origin."""

    kind = "upstream_pool"

    def __init__(
        self,
        base_url: str,
        *,
        # Judgement: comfortably above what one model server decodes at once (vLLM's
        # max_num_seqs defaults to 256 across all clients; a gateway worker is one of several)
        # while bounding sockets; aiohttp's TCPConnector allows 100 in total by default.
        max_connections: int = 64,
        # None: queue without a bound other than each waiter's deadline.
        max_pending: int | None = None,
        # Tighter than Envoy's cluster connect_timeout default (5 s): upstreams sit on the
        # local network, where a connect either succeeds in milliseconds or the host is gone.
        connect_timeout: float = 2.0,
        # nginx upstream keepalive_timeout default: 60 s idle before a cached connection closes.
        idle_timeout: float = 60.0,
        # Judgement: 4x the server side's 16 KiB request-head cap; model servers send tiny heads.
        max_response_header_bytes: int = 64 * 1024,
        # Judgement: large embedding batches reach tens of MiB; bounds memory per response.
        max_response_body_bytes: int = 64 * 1024 * 1024,
        # asyncio's transport default high-water mark (64 KiB), as on the server's write side.
        max_buffered_bytes: int = 64 * 1024,
        default_headers: Sequence[Header] = (),
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        name: str | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_pending is not None and max_pending < 0:
            raise ValueError("max_pending must not be negative")
        if connect_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("connect_timeout and idle_timeout must be positive")
        if min(max_response_header_bytes, max_response_body_bytes, max_buffered_bytes) < 1:
            raise ValueError("byte limits must be positive")
        origin = parse_origin(base_url)
        self.origin: Origin = origin
        self.name = name or origin.url
        self._max = max_connections
        self._max_pending = max_pending
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_head = max_response_header_bytes
        self._max_body = max_response_body_bytes
        self._max_buffered = max_buffered_bytes
        self._clock = clock
        self._hooks = hooks
        lines = [b" HTTP/1.1\r\nhost: ", origin.authority, _CRLF]
        for name_, value in default_headers:
            lines += (name_.lower(), _SEP, value, _CRLF)
        # Everything after the request target up to the caller's headers, encoded once.
        self._fixed = b"".join(lines)
        self._fixed_lines = self._fixed.count(b"\n")
        if self._fixed.count(b"\r") != self._fixed_lines or (
            self._fixed_lines != 2 + len(default_headers)
        ):
            raise ValueError("default_headers must not contain CR or LF")
        self._base_path = origin.base_path
        self._heads: dict[tuple[bytes, str | bytes], tuple[list[Header], bytes]] = {}
        self._idle: list[UpstreamConnection] = []
        self._conns: set[UpstreamConnection] = set()
        self._waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self._open = 0
        self._sweeper: TimerHandle | None = None
        self._closed = False
        self._requests = 0
        self._connects = 0
        self._reuses = 0
        self._retries = 0
        self._errors = 0

    @classmethod
    def from_url(cls, url: str, **options: object) -> UpstreamPool:
        """Like the constructor, but forgiving: ``host:port`` means ``http://host:port``."""
        url = url.strip()
        if "://" not in url:
            url = "http://" + url
        return cls(url, **options)  # type: ignore[arg-type]

    @property
    def base_url(self) -> str:
        return self.origin.url

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- the request path -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str | bytes,
        headers: Sequence[Header] = (),
        body: bytes = b"",
        *,
        deadline: float | None = None,
        first_byte_timeout: float | None = None,
        first_chunk_timeout: float | None = None,
        stall_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request and wait for the response head.

        ``path`` is appended to the base path (it should start with ``/`` and may carry a
        query). The pool writes ``host`` and ``content-length`` itself; ``headers`` must not
        repeat them, nor hop-by-hop headers (the caller filters what it forwards).
        ``deadline`` is absolute on the pool's clock (default: the request context's).
        ``first_byte_timeout`` bounds the wait for the response head (``ttft_timeout``): the
        time to first token of a non-streamed answer. A streamed answer's head comes at once,
        so its time to first token is ``first_chunk_timeout``, the wait for the first body
        chunk (also ``ttft_timeout``; when None, ``stall_timeout`` bounds that wait too).
        ``stall_timeout`` bounds every later wait for body bytes (``stall_timeout``).
        """
        if self._closed:
            raise UpstreamError("upstream pool is closed", reason="pool_closed", retryable=True)
        if deadline is None:
            deadline = current_context().deadline
        if deadline != math.inf and deadline <= self._clock.now():
            raise DeadlineExceeded("deadline exceeded before the upstream request")
        self._requests += 1
        method_bytes = _METHODS.get(method)
        if method_bytes is None:
            method_bytes = method.encode("ascii")
        data, extra = self._encode(method_bytes, path, headers, body)
        head_only = method_bytes == b"HEAD"
        conn = self._take_idle()
        if conn is None:
            try:
                conn = await self._acquire(deadline)
            except Exception:
                self._errors += 1
                raise
        try:
            conn.begin(data, extra, head_only)
            raced = False
            try:
                await conn.wait_head(first_byte_timeout, deadline)
            except UpstreamError as exc:
                if not (conn.reused and exc.reason == "connection_reset" and conn.untouched):
                    raise
                raced = True
            if raced:  # (awaits out of the handler: see tests/unit/test_native.py)
                # The keep-alive race: the upstream closed this connection as we reused it.
                self._discard(conn, keep_slot=True)
                self._retries += 1
                conn = await self._connect(deadline)
                conn.begin(data, extra, head_only)
                await conn.wait_head(first_byte_timeout, deadline)
        except BaseException as exc:
            self._discard(conn, failed=isinstance(exc, Exception))
            raise
        return UpstreamResponse(conn, self, deadline, first_chunk_timeout, stall_timeout)

    def _encode(
        self, method: bytes, path: str | bytes, headers: Sequence[Header], body: bytes
    ) -> tuple[bytes, bytes]:
        """The request head (with the body when small) and the body to write after it.

        A gateway sends the same head, up to ``content-length``, on nearly every request of a
        route, so the last head built per (method, path) is kept with its headers and reused
        when they are equal (one list comparison instead of building and re-validating it)."""
        size = len(body)
        if size or method in _BODY_METHODS:
            cached = self._heads.get((method, path))
            if cached is not None and cached[0] == headers:
                if size < _JOIN_BODY_BELOW:
                    return b"%b%d\r\n\r\n%b" % (cached[1], size, body), b""
                return b"%b%d\r\n\r\n" % (cached[1], size), body
        target = path.encode("latin-1") if isinstance(path, str) else path
        parts = [method, b" ", self._base_path, target, self._fixed]
        for name, value in headers:
            parts += (name, _SEP, value, _CRLF)
        lines = self._fixed_lines + len(headers) + 1
        if size or method in _BODY_METHODS:
            lines += 1
            parts += (_CONTENT_LENGTH, b"%d" % size, _END_HEAD)
        else:
            parts.append(_CRLF)
        extra = b""
        if size < _JOIN_BODY_BELOW:
            if size:
                parts.append(body)
        else:
            extra = body
        data = b"".join(parts)
        head = len(data) - (size if not extra else 0)
        if data.count(b"\n", 0, head) != lines or data.count(b"\r", 0, head) != lines:
            raise ValueError("request path and headers must not contain CR or LF")
        if b" " in target:
            raise ValueError("request path must not contain spaces (percent-encode them)")
        if size or method in _BODY_METHODS:
            # Validated above: everything before the length's digits, for the next request.
            prefix = data[: data.rindex(_CONTENT_LENGTH, 0, head) + len(_CONTENT_LENGTH)]
            if len(self._heads) >= _MAX_CACHED_HEADS:
                self._heads.clear()
            self._heads[(method, path)] = (list(headers), prefix)
        return data, extra

    # ---- connections ----------------------------------------------------------------------

    def _take_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection, if any (idle ones are known usable)."""
        idle = self._idle
        if not idle:
            return None
        conn = idle.pop()
        conn.idle = False
        conn.reused = True
        self._reuses += 1
        return conn

    async def _acquire(self, deadline: float) -> UpstreamConnection:
        """A connection when none is idle: open one, or queue for one (FIFO, to the deadline)."""
        if self._open < self._max:
            self._open += 1
            return await self._connect(deadline)
        if self._max_pending is not None and len(self._waiters) >= self._max_pending:
            self._hooks.on_event(self.kind, self.name, "rejected.pool_full")
            raise Overloaded(
                f"all {self._max} connections to {self.name} are busy",
                reason="upstream_pool_full",
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[UpstreamConnection | None] = loop.create_future()
        self._waiters.append(waiter)
        timers: TimerQueue | None = None
        entry: TimerEntry = []
        if deadline != math.inf:
            if deadline <= self._clock.now():
                self._waiters.remove(waiter)
                raise DeadlineExceeded("deadline exceeded waiting for an upstream connection")
            timers = timer_queue(self._clock, loop)
            entry = timers.add(deadline, functools.partial(_expire, waiter))
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection or slot just as we gave up: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self._release(handed)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            if timers is not None:
                timers.remove(entry)
        if conn is None:  # a slot, not a connection
            return await self._connect(deadline)
        conn.reused = True
        self._reuses += 1
        return conn

    async def _connect(self, deadline: float) -> UpstreamConnection:
        """Open a connection on a slot the caller holds; the slot is given back on failure."""
        origin = self.origin
        clock = self._clock
        conn = UpstreamConnection(
            self,
            clock,
            max_head=self._max_head,
            max_body=self._max_body,
            max_buffered=self._max_buffered,
        )
        connect_at = clock.now() + self._connect_timeout
        scope = DeadlineScope(min(connect_at, deadline), clock=clock)
        try:
            try:
                async with scope:  # aexit never waits
                    await asyncio.get_running_loop().create_connection(
                        lambda: conn, origin.host, origin.port
                    )
            except DeadlineExceeded:
                if scope.deadline == connect_at and connect_at < deadline:
                    self._hooks.on_event(self.kind, self.name, "connect_timeout")
                    timeout = UpstreamTimeout(
                        f"connecting to {self.name} took over {self._connect_timeout} s",
                        reason="connect_timeout",
                    )
                    raise chained(timeout, None)  # noqa: B904 - ``from None`` (mypyc drops it)
                raise
            except OSError as exc:
                self._hooks.on_event(self.kind, self.name, "connect_error")
                refused = UpstreamError(
                    f"cannot connect to {self.name}: {exc}",
                    status=None,
                    retryable=True,
                    reason="connect_error",
                )
                raise chained(refused, exc)  # noqa: B904 - is ``from exc`` (mypyc drops it)
        except BaseException:
            conn.abort()
            self._free_slot()
            raise
        self._connects += 1
        conn.pooled = True
        self._conns.add(conn)
        if self._closed:
            self._discard(conn)
            raise UpstreamError("upstream pool is closed", reason="pool_closed", retryable=True)
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        """A response is over; keep its connection for the next request if it can serve one."""
        if self._closed or not conn.usable or not conn.pooled:
            self._discard(conn)
            return
        conn.recycle()
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle = True
        conn.idle_since = self._clock.now()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self._clock.call_later(self._idle_timeout, self._sweep)

    def _discard(
        self, conn: UpstreamConnection, *, failed: bool = False, keep_slot: bool = False
    ) -> None:
        """Close ``conn`` and give its slot to the next waiter (unless the caller keeps it)."""
        if failed:
            self._errors += 1
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        if conn.done and conn.usable:
            conn.close()
        else:
            conn.abort()
        self._conns.discard(conn)
        if conn.pooled:
            conn.pooled = False
            if not keep_slot:
                self._free_slot()

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter, who connects
                return
        self._open -= 1

    def _idle_lost(self, conn: UpstreamConnection) -> None:
        """The upstream closed an idle connection: forget it."""
        self._discard(conn)

    def _sweep(self) -> None:
        """Close connections idle for ``idle_timeout``; they are the oldest, at the bottom."""
        self._sweeper = None
        idle = self._idle
        limit = self._clock.now() - self._idle_timeout
        while idle and idle[0].idle_since <= limit:
            self._discard(idle[0])
        if idle:
            wait = idle[0].idle_since - limit
            self._sweeper = self._clock.call_later(wait, self._sweep)

    # ---- lifecycle and observation --------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection (in-flight responses fail with ``connection_reset``) and
        refuse new requests; returns once the sockets are closed."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    UpstreamError("upstream pool closed", reason="pool_closed", retryable=True)
                )
        conns = list(self._conns)
        lost = [conn.lost_waiter() for conn in conns]
        for conn in conns:
            if conn.busy:
                conn.abort()  # its response fails and discards it
            else:
                self._discard(conn)
        if lost:
            await asyncio.wait(lost, timeout=1.0)

    async def __aenter__(self) -> UpstreamPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def snapshot(self) -> dict[str, float]:
        idle = len(self._idle)
        return {
            "open": float(self._open),
            "idle": float(idle),
            "busy": float(self._open - idle),
            "waiting": float(sum(1 for w in self._waiters if not w.done())),
            "requests": float(self._requests),
            "connects": float(self._connects),
            "reuses": float(self._reuses),
            "retries": float(self._retries),
            "errors": float(self._errors),
        }

    def __repr__(self) -> str:
        return f"UpstreamPool({self.name!r}, open={self._open}, idle={len(self._idle)})"


def _expire(waiter: asyncio.Future[UpstreamConnection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(
            DeadlineExceeded("deadline exceeded waiting for an upstream connection")
        )
