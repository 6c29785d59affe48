"""One upstream HTTP/1.1 connection: an ``asyncio.Protocol`` feeding ``httptools``' response
parser, and the waits a request makes on it.

Guarantees:
- Every wait is one Future woken by the parser callbacks (no polling), bounded by the earliest
  of the request's deadline and the phase's timeout; timers go through the shared per-clock
  timer queue (a heap entry, not an event-loop timer, per wait). A passed deadline raises
  :class:`DeadlineExceeded`; a phase timeout raises :class:`UpstreamTimeout` with the phase's
  reason (``ttft_timeout``, ``stall_timeout``).
- Body bytes are kept exactly as the parser hands them over (chunked coding removed, nothing
  copied or re-framed) in a deque. When more than ``max_buffered`` bytes wait for the consumer
  the transport stops reading, and it resumes once the consumer has drained to half of that:
  a slow consumer slows the upstream instead of growing a buffer (the overshoot is at most
  what one socket read delivers).
- Nothing the upstream sends grows without bound: the response head and the body are capped.
- A connection that is closed or sends anything while idle is marked unusable at once, so the
  pool never reuses it; ``untouched`` tells the pool whether a failed request saw any byte of
  a response (only then is a transparent retry safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import Final, Protocol, cast

import httptools

from headway.core import Clock, DeadlineExceeded, UpstreamError, UpstreamTimeout
from headway.core._timers import TimerEntry, TimerQueue, timer_queue

from ._names import lowered
from ._response import Header

__all__ = ["UpstreamConnection"]

_INF: Final = float("inf")
_CONNECTION_RESET: Final = "connection_reset"
_BAD_RESPONSE: Final = "bad_response"


class _Owner(Protocol):
    """What a connection tells its pool: it died while sitting idle."""

    def _idle_lost(self, conn: UpstreamConnection) -> None: ...


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing a response we refuse (too large, extra)."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(
        self,
        owner: _Owner,
        clock: Clock,
        *,
        max_head: int,
        max_body: int,
        max_buffered: int,
    ) -> None:
        self._owner = owner
        self._clock = clock
        self._loop = loop = asyncio.get_running_loop()
        self._timers: TimerQueue = timer_queue(clock, loop)
        self._max_head = max_head
        self._max_body = max_body
        self._stream_bound = max_buffered
        self._max_buffered = max_buffered
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._entry: TimerEntry | None = None  # the timer of the wait in progress
        self._timeout_reason: str | None = None
        self._lost = False
        self._lost_waiter: asyncio.Future[None] | None = None
        # Per-request state, reset by begin().
        self.busy = False
        self.status = 0
        self.headers: list[Header] = []
        self._head_done = False
        self._head_only = False
        self._head_seen = 0
        self._informational = False
        self._done = False
        self._keep_alive = False
        self._body_size = 0
        self._delivered = False
        self._fail: str | None = None
        self._fail_message = ""
        # Pool bookkeeping.
        self.pooled = False
        self.idle = False
        self.idle_since = 0.0
        self.reused = False

    # ---- state the pool and the response read ---------------------------------------------

    @property
    def usable(self) -> bool:
        """Can carry another request: open, nothing pending, last answer allowed keep-alive."""
        return not self._lost and self._fail is None and self._keep_alive and self._done

    @property
    def untouched(self) -> bool:
        """No byte of a response arrived for the current request."""
        return self._head_seen == 0 and not self._head_done

    @property
    def delivered(self) -> bool:
        """Some body bytes were handed to the caller (a retry could duplicate output)."""
        return self._delivered

    @property
    def done(self) -> bool:
        return self._done

    # ---- transport callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Nothing was asked: a stray answer or garbage; this connection cannot be trusted.
            self._spoil(_BAD_RESPONSE, "upstream sent data on an idle connection")
            self.abort()
            return
        head_pending = not self._head_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._failed(_BAD_RESPONSE, "upstream switched protocols unasked")
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Stop):
                self._failed(_BAD_RESPONSE, str(exc.__context__))
            else:
                self._failed(_BAD_RESPONSE, f"malformed upstream response: {exc}")
            return
        if head_pending:
            seen = self._head_seen + len(data)
            if seen > self._max_head and (
                not self._head_done or self._head_size() > self._max_head
            ):
                # Rare path: only reads that could hold an oversized head get measured exactly.
                self._fail = _BAD_RESPONSE
                self._fail_message = f"upstream response head larger than {self._max_head} bytes"
                self._keep_alive = False
                self.abort()
                self._wake()
            elif not self._head_done:
                self._head_seen = seen

    def eof_received(self) -> bool | None:
        self._ended()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._ended()
        if self.idle:
            self._owner._idle_lost(self)
        waiter = self._lost_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ended(self) -> None:
        """The upstream closed its side: end a close-delimited body, or fail the request."""
        if self._done or self._fail is not None:
            return
        if not self.busy:
            self._spoil(_CONNECTION_RESET, "upstream closed the connection")
            return
        if self._head_done and self._close_delimited():
            self._done = True
            self._keep_alive = False
            self._wake()
            return
        self._failed(_CONNECTION_RESET, "upstream closed the connection mid-response")

    def _head_size(self) -> int:
        """The received head's size, give or take the status line (a few dozen bytes)."""
        return 32 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _spoil(self, reason: str, message: str) -> None:
        """Between requests: never reuse this connection; tell the pool at once (before the
        transport's ``connection_lost``, which asyncio delivers a loop turn later)."""
        if self._fail is None:
            self._fail = reason
            self._fail_message = message
        if self.idle:
            self._owner._idle_lost(self)

    def _close_delimited(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return False
            if name == b"transfer-encoding" and value.lower().endswith(b"chunked"):
                return False
        return True

    def _failed(self, reason: str, message: str) -> None:
        if self._done:
            # The answer is complete and stays valid; only the connection is spoilt.
            self._keep_alive = False
        elif self._fail is None:
            self._fail = reason
            self._fail_message = message
        self.abort()
        self._wake()

    # ---- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            raise _Stop("upstream sent more than one answer to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((lowered(name), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # 1xx interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._informational = True
            self.headers = []
            return
        self.status = status
        self._head_done = True
        if self._head_only or status == 204 or status == 304:
            # No body follows; a HEAD answer's length headers would confuse the parser on the
            # next message, so such a connection is not reused.
            self._done = True
            self._keep_alive = not self._head_only and self._parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        size = self._body_size + len(body)
        self._body_size = size
        if size > self._max_body:
            raise _Stop(f"upstream response body larger than {self._max_body} bytes")
        self._chunks.append(body)
        buffered = self._buffered + len(body)
        self._buffered = buffered
        if buffered > self._max_buffered and not self._paused:
            self._paused = True
            if self._transport is not None:
                self._transport.pause_reading()
        if self._waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if not self._done:
            self._done = True
            self._keep_alive = self._parser.should_keep_alive()
            self._wake()

    # ---- the request side -----------------------------------------------------------------

    def begin(self, data: bytes, body: bytes, head_only: bool) -> None:
        """Reset the per-request state and send the request (``body`` only if not in ``data``)."""
        self.busy = True
        self.status = 0
        self.headers = []
        self._head_done = False
        self._head_only = head_only
        self._head_seen = 0
        self._done = False
        self._keep_alive = False
        self._body_size = 0
        self._delivered = False
        self._max_buffered = self._stream_bound
        transport = self._transport
        if transport is None or self._lost:
            if self._fail is None:
                self._fail = _CONNECTION_RESET
                self._fail_message = "upstream connection already closed"
            return
        transport.write(data)
        if body:
            transport.write(body)

    def recycle(self) -> None:
        """Between requests: drop leftovers and make sure the idle socket is read (EOF)."""
        self.busy = False
        self.reused = False
        if self._chunks:
            self._chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()

    def error(self) -> UpstreamError:
        """The typed error for the recorded failure; retryable while nothing was delivered."""
        return UpstreamError(
            self._fail_message,
            status=None,
            retryable=not self._delivered,
            reason=self._fail,
        )

    async def wait_head(self, seconds: float | None, deadline: float) -> None:
        """Until the response head is in, at most ``seconds`` (``ttft_timeout``)."""
        while not self._head_done:
            if self._fail is not None:
                raise self.error()
            # _wait's steps inline: every request waits here, and a coroutine less is cheaper.
            waiter = self._arm_wait(seconds, "ttft_timeout", deadline)
            try:
                await waiter
            finally:
                self._disarm_wait()
        if self._fail is not None:
            raise self.error()

    def pop_chunk(self) -> bytes | None:
        """The next buffered body piece without waiting, or None when none is buffered."""
        chunks = self._chunks
        if not chunks:
            return None
        chunk = chunks.popleft()
        self._delivered = True
        buffered = self._buffered - len(chunk)
        self._buffered = buffered
        if self._paused and buffered <= self._max_buffered >> 1:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        return chunk

    async def next_chunk(
        self, first_timeout: float | None, stall_timeout: float | None, deadline: float
    ) -> bytes | None:
        """The next body piece as it arrives; None once the body is complete."""
        while True:
            chunk = self.pop_chunk()
            if chunk is not None:
                return chunk
            if self._done:
                return None
            if self._fail is not None:
                raise self.error()
            if self._body_size == 0 and first_timeout is not None:
                await self._wait(first_timeout, "ttft_timeout", deadline)
            else:
                await self._wait(stall_timeout, "stall_timeout", deadline)

    async def read_body(
        self, first_timeout: float | None, stall_timeout: float | None, deadline: float
    ) -> bytes:
        """The whole body (bounded by ``max_body``); reading is never paused meanwhile."""
        self._max_buffered = self._max_body + 1
        if self._paused:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        while not self._done:
            if self._fail is not None:
                raise self.error()
            if self._body_size == 0 and first_timeout is not None:
                await self._wait(first_timeout, "ttft_timeout", deadline)
            else:
                await self._wait(stall_timeout, "stall_timeout", deadline)
        return self.take_body()

    def take_body(self) -> bytes:
        """Everything buffered, as one bytes object (no copy when it arrived in one piece)."""
        chunks = self._chunks
        self._buffered = 0
        if len(chunks) == 1:
            return chunks.pop()
        if not chunks:
            return b""
        body = b"".join(chunks)
        chunks.clear()
        return body

    # ---- waiting --------------------------------------------------------------------------

    async def _wait(self, seconds: float | None, reason: str, deadline: float) -> None:
        """Until the parser reports progress, the phase timeout, or the deadline."""
        waiter = self._arm_wait(seconds, reason, deadline)
        try:
            await waiter
        finally:
            self._disarm_wait()

    def _arm_wait(
        self, seconds: float | None, reason: str, deadline: float
    ) -> asyncio.Future[None]:
        """The future the parser wakes on progress, with its timer (the phase's timeout or the
        deadline, the earlier) registered; raises at once when that has already passed. Await
        it, then :meth:`_disarm_wait` however the wait ended."""
        limit = deadline
        timeout_reason = None
        if seconds is not None:
            now = self._clock.now()
            at = now + seconds
            if at < limit:
                limit = at
                timeout_reason = reason
            if limit <= now:
                raise self._timeout_error(timeout_reason)
        elif limit != _INF and limit <= self._clock.now():
            raise self._timeout_error(timeout_reason)
        waiter = self._loop.create_future()
        self._waiter = waiter
        if limit != _INF:
            self._timeout_reason = timeout_reason
            self._entry = self._timers.add(limit, self._on_timeout)
        return waiter

    def _disarm_wait(self) -> None:
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._timers.remove(entry)
        self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _on_timeout(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(self._timeout_error(self._timeout_reason))

    def _timeout_error(self, reason: str | None) -> Exception:
        if reason is None:
            return DeadlineExceeded("deadline exceeded waiting for the upstream")
        if reason == "ttft_timeout":
            error = UpstreamTimeout("no response from the upstream in time", reason=reason)
        else:
            error = UpstreamTimeout("the upstream stalled between body chunks", reason=reason)
        # Once body bytes reached the caller, another attempt would duplicate them.
        error.retryable = not self._delivered
        return error

    # ---- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Close politely (pending writes are flushed first)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        """Close at once, dropping anything unsent or unread."""
        transport = self._transport
        if transport is not None and not self._lost:
            transport.abort()

    def lost_waiter(self) -> asyncio.Future[None]:
        """A future done once the transport has really gone (``connection_lost`` ran)."""
        waiter = self._lost_waiter
        if waiter is None:
            waiter = self._lost_waiter = self._loop.create_future()
            if self._lost or self._transport is None:
                waiter.set_result(None)
        return waiter
