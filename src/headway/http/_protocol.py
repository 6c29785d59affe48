"""One HTTP/1.1 connection: parse with httptools, run the handler, write the answer.

Guarantees:
- Responses leave in request order (pipelining-safe): requests parsed ahead of a running
  handler wait in a bounded queue; past ``max_pipelined`` the socket stops being read.
- Nothing the client sends grows without bound: the target, the header block, the header count
  and the body are capped (414, 431, 413), each answered with an OpenAI error and a close.
- Every wait on the client has a deadline: headers (408 + close), body between reads (408 +
  close), keep-alive idle (silent close), a response the client does not read (abort).
- ``Expect: 100-continue`` gets ``100 Continue`` once the head is accepted; a body declared
  over the limit gets its 413 instead, before the client sends it.
- Streaming writes apply backpressure: above the transport's high-water mark the writer awaits
  ``resume_writing`` instead of buffering more, so a slow reader slows its producer.
- A client that goes away cancels its running handler; a stream's iterator is closed
  (``aclose``) so producers release what they hold.
- A handler exception becomes a 500 OpenAI error body (logged here, never sent); after a stream
  has started there is no status left to send, so the connection is aborted instead.

One timer per connection: ``_deadline`` moves on every phase change as a plain float, and the
timer re-arms itself lazily when it fires early, so the hot path schedules no timer handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final, cast

import httptools

from ._limits import Limits
from ._names import lowered
from ._request import Request
from ._response import (
    AbortConnection,
    Header,
    Response,
    StreamingResponse,
    error_response,
    status_line,
)

if TYPE_CHECKING:
    from ._server import ServerState

__all__ = ["Handler", "HttpProtocol"]

Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]

log: Final = logging.getLogger("headway.http")

_CRLF: Final = b"\r\n"
_CHUNK_END: Final = b"0\r\n\r\n"
_CLOSE: Final = b"connection: close\r\n"
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_KEEP_ALIVE_10: Final = b"connection: keep-alive\r\n"
_CHUNKED: Final = b"transfer-encoding: chunked\r\n"
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
# A kept-alive HTTP/1.1 answer with a body and no extra headers: status line, content type,
# date line, length, body.
_PLAIN_ANSWER: Final = b"%bcontent-type: %b\r\n%bcontent-length: %d\r\n\r\n%b"
_INTERNAL: Final = error_response(500, "internal server error", code="internal_error")

# What a timed-out phase does: answer 408 and close, or close silently (idle keep-alive).
_TIMEOUT_408: Final = 1
_TIMEOUT_SILENT: Final = 0


class _Reject(Exception):
    """Raised inside parser callbacks to stop parsing; the answer is in ``response``."""

    def __init__(self, response: Response) -> None:
        self.response = response


class HttpProtocol(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._limits: Limits = state.limits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._in_head = False
        self._in_message = False
        self._head_seen = 0
        self._pending: deque[Request | Response] = deque()
        # One worker task per connection, kept across keep-alive requests: between requests it
        # parks on ``_wakeup`` instead of exiting, so a request costs a future, not a new task
        # (a task is also registered in and removed from asyncio's all-tasks WeakSet). ``_busy``
        # says whether it is answering: the "between requests" checks read it, not ``_worker``.
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._busy = False
        self._closed = False
        self._rejected = False
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._tick = 0.0  # the loop's time when the data being parsed arrived
        self._timeout_action = _TIMEOUT_408
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # ---- connection lifecycle -------------------------------------------------------------

    @property
    def disconnected(self) -> bool:
        return self._closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self._transport = transport
        transport.set_write_buffer_limits(high=self._limits.write_high_water)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP (unix socket)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._state.connections.add(self)
        self._state.accepted += 1
        if self._state.draining:
            transport.close()
            return
        self._arm(self._limits.header_timeout, _TIMEOUT_408)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        state = self._state
        state.connections.discard(self)
        if state.drained is not None and not state.connections:
            state.drained.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        worker = self._worker
        if worker is not None and not worker.done():
            worker.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def close_if_idle(self) -> bool:
        """Close now if between requests (server shutdown); True if closed."""
        if not self._busy and not self._in_message and not self._closed:
            self._close()
            return True
        return False

    def abort(self) -> None:
        transport = self._transport
        if transport is not None and not self._closed:
            transport.abort()

    def _close(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _reset(self) -> None:
        """Abort with a TCP RST where possible, so the peer sees a reset, not a clean FIN."""
        transport = self._transport
        if transport is None or self._closed:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()

    # ---- deadline (one lazily re-armed timer) ---------------------------------------------

    def _arm(self, seconds: float, action: int, now: float = -1.0) -> None:
        """Move the deadline ``seconds`` past ``now`` (the loop's time; -1: read it)."""
        deadline = (self._loop.time() if now < 0.0 else now) + seconds
        self._deadline = deadline
        self._timeout_action = action
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline == 0.0 or self._closed:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
            return
        self._deadline = 0.0
        self._state.timeouts += 1
        if self._timeout_action == _TIMEOUT_408 and not self._busy:
            self._write_final(error_response(408, "timed out reading the request"))
        self._close()

    # ---- reading --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        # One read of the loop's time for every parser callback this data triggers (uvloop's
        # is the time cached for this loop turn anyway; asyncio's moves by microseconds).
        self._tick = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # upgrades are not supported; the request is answered, then we close
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.response)
            else:
                self._reject(error_response(400, "malformed HTTP request"))
            return
        if self._in_head:
            self._head_seen += len(data)
            limits = self._limits
            if self._head_seen > limits.max_header_bytes + limits.max_url_bytes:
                self._reject(error_response(431, "request header fields too large"))

    def _reject(self, response: Response) -> None:
        self._rejected = True
        self._in_message = False
        self._deadline = 0.0
        self._state.rejected += 1
        if self._transport is not None:
            self._transport.pause_reading()
        self._pending.append(response)
        if not self._busy:
            self._start_work()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_message = True
        self._in_head = True
        self._head_seen = 0
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._arm(self._limits.header_timeout, _TIMEOUT_408, self._tick)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            raise _Reject(error_response(414, "request target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes or (
            len(headers) >= self._limits.max_headers
        ):
            raise _Reject(error_response(431, "request header fields too large"))
        name = lowered(name)
        previous = headers.get(name)
        headers[name] = value if previous is None else previous + b", " + value

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self._headers
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._limits.max_body_bytes:
            raise _Reject(error_response(413, "request body too large"))
        expect = headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            self._continue()
        self._arm(self._limits.body_timeout, _TIMEOUT_408, self._tick)

    def _continue(self) -> None:
        """Ask for a body the client holds back until told to send it (RFC 9110 10.1.1).

        Without this, such clients (curl for large bodies, .NET, some Java clients) wait out
        their own expect timeout, typically 1 s, before sending. A 100 is only written when no
        earlier answer on this connection is pending, or it would land inside that answer; the
        client then sends after its timeout, which is always allowed.
        """
        transport = self._transport
        if (
            transport is not None
            and not self._busy
            and not self._pending
            and self._parser.get_http_version() == "1.1"
        ):
            transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_bytes:
            raise _Reject(error_response(413, "request body too large"))
        self._body.append(body)
        self._deadline = self._tick + self._limits.body_timeout

    def on_message_complete(self) -> None:
        self._in_message = False
        self._deadline = 0.0
        parser = self._parser
        url = self._url
        if b"?" not in url:  # a containment test: url.find is a costly method call (see _names)
            path = url.decode("latin-1")
            query = ""
        else:
            q = url.find(b"?")
            path = url[:q].decode("latin-1")
            query = url[q + 1 :].decode("latin-1")
        body = self._body
        request = Request(
            parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            body[0] if len(body) == 1 else b"".join(body),
            http_version=parser.get_http_version(),
            keep_alive=parser.should_keep_alive(),
            connection=self,
        )
        self._state.requests += 1
        pending = self._pending
        pending.append(request)
        if not self._busy:
            self._start_work()
        elif len(pending) >= self._limits.max_pipelined and not self._read_paused:
            self._read_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    # ---- answering ------------------------------------------------------------------------

    def _start_work(self) -> None:
        """Have the worker answer ``_pending``: wake it if parked, else start it."""
        self._busy = True
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)
        else:
            self._worker = self._loop.create_task(self._work())

    async def _work(self) -> None:
        pending = self._pending
        try:
            while True:
                while pending and not self._closed:
                    item = pending.popleft()
                    if self._read_paused and len(pending) < self._limits.max_pipelined:
                        self._read_paused = False
                        if self._transport is not None and not self._rejected:
                            self._transport.resume_reading()
                    if type(item) is Response:
                        self._write_final(item)
                        self._close()
                        return
                    assert isinstance(item, Request)
                    if not await self._answer(item):
                        self._close()
                        return
                self._busy = False
                if self._closed:
                    return
                if not self._in_message:
                    if self._state.draining:
                        self._close()
                        return
                    self._arm(self._limits.keepalive_timeout, _TIMEOUT_SILENT)
                # Park until the next request (``_start_work``); closing the connection
                # cancels this wait (``connection_lost``).
                wakeup = self._loop.create_future()
                self._wakeup = wakeup
                await wakeup
        finally:
            self._busy = False
            self._wakeup = None
            self._worker = None

    async def _answer(self, request: Request) -> bool:
        """Run the handler and write its answer; False if the connection must close."""
        try:
            response = await self._state.handler(request)
        except AbortConnection:
            self._reset()
            return False
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = _INTERNAL
        if self._closed:
            return False
        keep_alive = request.keep_alive and not self._state.draining
        if type(response) is Response:
            self._write_response(response, request, keep_alive)
            return keep_alive
        if isinstance(response, StreamingResponse):
            return await self._stream(response, request, keep_alive)
        log.error("handler returned %r, not a Response", type(response))
        self._write_response(_INTERNAL, request, keep_alive)
        return keep_alive

    def _head(
        self,
        status: int,
        content_type: bytes,
        extra: Sequence[Header],
        keep_alive: bool,
        http10: bool,
    ) -> list[bytes]:
        parts = [status_line(status), b"content-type: ", content_type, _CRLF, self._state.date]
        for name, value in extra:
            parts += (name, b": ", value, _CRLF)
        if not keep_alive:
            parts.append(_CLOSE)
        elif http10:
            parts.append(_KEEP_ALIVE_10)
        return parts

    def _write_response(self, response: Response, request: Request, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        status = response.status
        body = response.body
        if (
            keep_alive
            and not response.headers
            and 200 <= status < 300
            and status != 204
            and request.http_version == "1.1"
            and request.method != "HEAD"
        ):
            # The common answer: the same bytes as below, in one formatting step.
            transport.write(
                _PLAIN_ANSWER
                % (status_line(status), response.content_type, self._state.date, len(body), body)
            )
            return
        parts = self._head(
            status,
            response.content_type,
            response.headers,
            keep_alive,
            request.http_version == "1.0",
        )
        if status == 204 or status == 304 or status < 200:
            parts.append(_CRLF)
            transport.write(b"".join(parts))
            return
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n")
        if request.method != "HEAD":
            parts.append(body)
        transport.write(b"".join(parts))

    def _write_final(self, response: Response) -> None:
        """An error answer outside any request (limits, timeouts): always closes."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        body = response.body
        parts = self._head(response.status, response.content_type, response.headers, False, False)
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        transport.write(b"".join(parts))

    async def _stream(
        self, response: StreamingResponse, request: Request, keep_alive: bool
    ) -> bool:
        transport = self._transport
        assert transport is not None
        chunked = request.http_version != "1.0"
        if not chunked:
            keep_alive = False  # HTTP/1.0: the body ends when the connection does
        parts = self._head(
            response.status, response.content_type, response.headers, keep_alive, False
        )
        if chunked:
            parts.append(_CHUNKED)
        parts.append(_CRLF)
        transport.write(b"".join(parts))
        if request.method == "HEAD":
            if chunked:
                transport.write(_CHUNK_END)
            return keep_alive
        iterator: AsyncIterator[bytes] = response.chunks.__aiter__()
        failure: BaseException | None = None
        try:
            kept = await self._send_chunks(iterator, transport, chunked, request)
        except BaseException as error:  # cancelled: the client went away, or shutdown
            failure = error
        # The iterator is closed after the ``try``, not in a ``finally``: an await there is
        # what mypyc gets wrong (tests/unit/test_native.py).
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
        if failure is not None:
            raise failure
        return keep_alive and kept

    async def _send_chunks(
        self,
        iterator: AsyncIterator[bytes],
        transport: asyncio.Transport,
        chunked: bool,
        request: Request,
    ) -> bool:
        """Write each chunk as it comes; False when the connection cannot be reused."""
        try:
            async for chunk in iterator:
                if self._closed:
                    return False
                if not chunk:
                    continue
                if chunked:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    transport.write(chunk)
                if self._write_paused:
                    await self._drain()
            if chunked and not self._closed:
                transport.write(_CHUNK_END)
        except AbortConnection:
            self._reset()
            return False
        except ConnectionError:
            return False
        except Exception:
            log.exception("stream failed for %s %s", request.method, request.path)
            self._reset()
            return False
        return True

    async def _drain(self) -> None:
        """Wait until the client has read enough; abort if it stops reading (send_timeout)."""
        while self._write_paused and not self._closed:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiter = waiter
            timer = self._loop.call_later(self._limits.send_timeout, self._send_timed_out)
            try:
                await waiter
            finally:
                timer.cancel()
        if self._closed:
            raise ConnectionResetError("client disconnected")

    def _send_timed_out(self) -> None:
        self._state.timeouts += 1
        self.abort()
