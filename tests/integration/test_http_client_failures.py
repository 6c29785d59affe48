"""The upstream client's failures, typed and timed exactly: connect errors and timeouts, TTFT,
stalls, deadlines, resets, malformed and oversized answers; and backpressure on a fast stream.

Timeouts run on a ManualClock while the sockets are real: the test waits until the server holds
the request, then moves the clock, so each bound is checked to the tick without sleeping.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from headway.core import (
    DeadlineExceeded,
    ManualClock,
    UpstreamError,
    UpstreamTimeout,
    request_context,
)
from headway.http import AbortConnection, HttpServer, Request, Response, StreamingResponse
from headway.http.client import UpstreamPool
from headway.sim import FaultConfig, SimConfig, SimServer

SSE = b"data: {}\n\n"
CHAT = b'{"model":"sim-small","messages":[{"role":"user","content":"hi"}]}'


class Upstream:
    """A handler whose behaviour each test picks, with events to synchronise on."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.proceed = asyncio.Event()
        self.mode = "hang"

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        self.arrived.set()
        mode = self.mode
        if mode == "hang":
            await self.proceed.wait()
            return Response(200, b"late")
        if mode == "big":
            return Response(200, b"x" * 5000)
        return StreamingResponse(self._chunks(mode))

    async def _chunks(self, mode: str) -> AsyncIterator[bytes]:
        if mode == "stream_hang_first":
            await self.proceed.wait()
        yield SSE
        if mode == "stream_reset_after_one":
            raise AbortConnection
        if mode == "stream_stall":
            await self.proceed.wait()
            yield SSE


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    handler = Upstream()
    server = HttpServer(handler)
    port = await server.start()
    yield handler, f"http://127.0.0.1:{port}"
    handler.proceed.set()
    await server.stop(grace=0.5)


@pytest.fixture
async def pools() -> AsyncIterator[list[UpstreamPool]]:
    made: list[UpstreamPool] = []
    yield made
    for pool in made:
        conns = list(pool._conns)
        await pool.aclose()
        assert pool.snapshot()["open"] == 0
        for conn in conns:
            await asyncio.wait_for(conn.lost_waiter(), 2.0)
    await asyncio.sleep(0)
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []


def make(
    pools: list[UpstreamPool], url: str, clock: ManualClock, **options: object
) -> UpstreamPool:
    pool = UpstreamPool(url, clock=clock, **options)  # type: ignore[arg-type]
    pools.append(pool)
    return pool


# ---- connecting -----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_refused(pools: list[UpstreamPool], clock: ManualClock) -> None:
    pool = make(pools, f"http://127.0.0.1:{closed_port()}", clock)
    with pytest.raises(UpstreamError) as info:
        await pool.request("GET", "/", [], b"")
    assert type(info.value) is UpstreamError
    assert info.value.reason == "connect_error"
    assert info.value.retryable is True
    assert info.value.status is None
    snap = pool.snapshot()
    assert (snap["open"], snap["connects"], snap["errors"]) == (0, 0, 1)


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A listener whose accept queue is full and never drained: new connects hang in SYN-SENT
    (Linux drops the SYN when the queue of a ``listen(0)`` socket holds one connection)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    filler = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    try:
        yield port
    finally:
        filler.close()
        listener.close()


async def test_connect_timeout(
    pools: list[UpstreamPool], clock: ManualClock, unaccepting_port: int
) -> None:
    pool = make(pools, f"http://127.0.0.1:{unaccepting_port}", clock, connect_timeout=2.0)
    task = asyncio.create_task(pool.request("GET", "/", [], b""))
    await clock.advance(1.9)
    assert not task.done()
    assert pool.snapshot()["open"] == 1  # the slot is held while connecting
    await clock.advance(0.2)
    with pytest.raises(UpstreamTimeout) as info:
        await task
    assert info.value.reason == "connect_timeout"
    assert info.value.retryable is True
    assert pool.snapshot()["open"] == 0


async def test_deadline_shorter_than_connect_timeout(
    pools: list[UpstreamPool], clock: ManualClock, unaccepting_port: int
) -> None:
    pool = make(pools, f"http://127.0.0.1:{unaccepting_port}", clock, connect_timeout=2.0)
    with request_context(deadline=clock.now() + 1.0, clock=clock):
        task = asyncio.create_task(pool.request("GET", "/", [], b""))
    await clock.advance(1.0)
    with pytest.raises(DeadlineExceeded):
        await task
    assert pool.snapshot()["open"] == 0


# ---- waiting for the answer -----------------------------------------------------------------


async def test_ttft_timeout_on_the_response_head(
    upstream: tuple[Upstream, str], pools: list[UpstreamPool], clock: ManualClock
) -> None:
    handler, url = upstream
    pool = make(pools, url, clock)
    task = asyncio.create_task(pool.request("POST", "/", [], b"{}", first_byte_timeout=5.0))
    await handler.arrived.wait()
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(UpstreamTimeout) as info:
        await task
    assert info.value.reason == "ttft_timeout"
    assert info.value.retryable is True
    snap = pool.snapshot()
    assert (snap["open"], snap["errors"]) == (0, 1)
    assert clock.pending_timers == 0


async def test_deadline_beats_a_longer_ttft(
    upstream: tuple[Upstream, str], pools: list[UpstreamPool], clock: ManualClock
) -> None:
    handler, url = upstream
    pool = make(pools, url, clock)
    task = asyncio.create_task(
        pool.request("POST", "/", [], b"{}", deadline=clock.now() + 3.0, first_byte_timeout=10.0)
    )
    await handler.arrived.wait()
    await clock.advance(2.9)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(DeadlineExceeded):
        await task
    # The context's deadline is the default, and an already-passed one fails before sending.
    with request_context(deadline=clock.now() - 1.0, clock=clock), pytest.raises(DeadlineExceeded):
        await pool.request("POST", "/", [], b"{}")
    assert pool.snapshot()["open"] == 0


async def test_first_chunk_timeout_then_stall_timeout(
    upstream: tuple[Upstream, str], pools: list[UpstreamPool], clock: ManualClock
) -> None:
    handler, url = upstream
    pool = make(pools, url, clock)
    handler.mode = "stream_hang_first"
    resp = await pool.request(
        "POST", "/", [], b"{}", first_byte_timeout=1.0, first_chunk_timeout=8.0, stall_timeout=2.0
    )
    assert resp.status == 200  # the head came at once; the first token did not
    task = asyncio.create_task(resp.iter_chunks().__anext__())
    await clock.advance(7.9)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(UpstreamTimeout) as info:
        await task
    assert info.value.reason == "ttft_timeout"
    assert info.value.retryable is True

    handler.mode = "stream_stall"
    handler.proceed.clear()
    resp = await pool.request("POST", "/", [], b"{}", first_chunk_timeout=8.0, stall_timeout=2.0)
    chunks = resp.iter_chunks()
    assert await chunks.__anext__() == SSE
    task = asyncio.create_task(chunks.__anext__())
    await clock.advance(1.9)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(UpstreamTimeout) as info:
        await task
    assert info.value.reason == "stall_timeout"
    assert info.value.retryable is False  # a chunk already went to the caller
    snap = pool.snapshot()
    assert (snap["open"], snap["errors"]) == (0, 2)


async def test_deadline_mid_stream(
    upstream: tuple[Upstream, str], pools: list[UpstreamPool], clock: ManualClock
) -> None:
    handler, url = upstream
    pool = make(pools, url, clock)
    handler.mode = "stream_stall"
    resp = await pool.request(
        "POST", "/", [], b"{}", deadline=clock.now() + 4.0, stall_timeout=30.0
    )
    chunks = resp.iter_chunks()
    assert await chunks.__anext__() == SSE
    task = asyncio.create_task(chunks.__anext__())
    await clock.advance(4.0)
    with pytest.raises(DeadlineExceeded):
        await task
    assert pool.snapshot()["open"] == 0


async def test_read_waits_are_bounded_too(
    upstream: tuple[Upstream, str], pools: list[UpstreamPool], clock: ManualClock
) -> None:
    handler, url = upstream
    pool = make(pools, url, clock)
    handler.mode = "stream_stall"
    resp = await pool.request("POST", "/", [], b"{}", stall_timeout=2.0)
    task = asyncio.create_task(resp.read())
    await clock.advance(2.0)
    with pytest.raises(UpstreamTimeout) as info:
        await task
    assert info.value.reason == "stall_timeout"
    assert info.value.retryable is True  # read() had handed over nothing


# ---- broken answers -------------------------------------------------------------------------


async def test_reset_mid_stream_after_delivery_is_not_retryable(
    upstream: tuple[Upstream, str], pools: list[UpstreamPool], clock: ManualClock
) -> None:
    handler, url = upstream
    pool = make(pools, url, clock)
    handler.mode = "stream_reset_after_one"
    resp = await pool.request("POST", "/", [], b"{}")
    chunks = resp.iter_chunks()
    assert await chunks.__anext__() == SSE
    with pytest.raises(UpstreamError) as info:
        await chunks.__anext__()
    assert info.value.reason == "connection_reset"
    assert info.value.retryable is False
    # The same reset seen through read(): nothing was delivered, so it may be retried.
    resp = await pool.request("POST", "/", [], b"{}")
    with pytest.raises(UpstreamError) as info:
        await resp.read()
    assert info.value.reason == "connection_reset"
    assert info.value.retryable is True
    snap = pool.snapshot()
    assert (snap["open"], snap["errors"], snap["connects"]) == (0, 2, 2)


async def test_sim_reset_before_the_answer(pools: list[UpstreamPool], clock: ManualClock) -> None:
    sim = SimServer(SimConfig(faults=FaultConfig(reset_rate=1.0)))
    await sim.start()
    try:
        pool = make(pools, sim.base_url, clock)
        with pytest.raises(UpstreamError) as info:
            await pool.request("POST", "/chat/completions", [], CHAT)
        assert info.value.reason == "connection_reset"
        assert info.value.retryable is True
    finally:
        await sim.stop(grace=0.5)


async def _raw_server(answer: bytes) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    ("answer", "options"),
    [
        (b"HTTP/1.1 abc nonsense\r\n\r\n", {}),
        (b"SSH-2.0-OpenSSH\r\n\r\n", {}),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", {}),
        (
            b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n",
            {"max_response_header_bytes": 1024},
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000,
            {"max_response_body_bytes": 4096},
        ),
    ],
    ids=["bad-status", "not-http", "bad-chunk", "head-too-large", "body-too-large"],
)
async def test_bad_responses(
    pools: list[UpstreamPool], clock: ManualClock, answer: bytes, options: dict[str, int]
) -> None:
    server, url = await _raw_server(answer)
    try:
        pool = make(pools, url, clock, **options)

        async def fetch() -> bytes:
            resp = await pool.request("GET", "/", [], b"")
            return await resp.read()

        with pytest.raises(UpstreamError) as info:
            await fetch()
        assert info.value.reason == "bad_response"
        assert pool.snapshot()["open"] == 0
    finally:
        server.close()
        await server.wait_closed()


# ---- backpressure ---------------------------------------------------------------------------

# asyncio's selector transport reads at most 256 KiB per recv() (uvloop the same).
ONE_READ = 256 * 1024


async def test_slow_consumer_pauses_the_upstream_read(pools: list[UpstreamPool]) -> None:
    total = 32 * 1024 * 1024
    piece = b"z" * (64 * 1024)
    produced = 0

    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            nonlocal produced
            while produced < total:
                produced += len(piece)
                yield piece

        return StreamingResponse(chunks(), content_type=b"application/octet-stream")

    server = HttpServer(handler)
    port = await server.start()
    try:
        bound = 64 * 1024
        pool = UpstreamPool(f"http://127.0.0.1:{port}", max_buffered_bytes=bound)
        pools.append(pool)
        resp = await pool.request("GET", "/", [], b"")
        conn = resp._conn
        assert conn is not None
        received = 0
        peak = 0
        lead = 0
        async for chunk in resp.iter_chunks():
            # Buffered bytes only grow between two takes, so this samples the true peak.
            peak = max(peak, conn._buffered + len(chunk))
            received += len(chunk)
            lead = max(lead, produced - received)
            for _ in range(10):  # a slow consumer: the producer gets many turns per chunk
                await asyncio.sleep(0)
        assert received == total
        assert peak <= bound + ONE_READ
        # The producer was held back (by the kernel's socket buffers and the server's write
        # high-water mark), not allowed to run the whole body ahead of the consumer.
        assert lead < total // 2
        assert pool.snapshot()["idle"] == 1
    finally:
        await server.stop(grace=0.5)


async def test_read_of_a_large_body_is_not_paused(pools: list[UpstreamPool]) -> None:
    body = bytes(range(256)) * (8 * 1024 * 4)  # 8 MiB

    async def handler(request: Request) -> Response:
        return Response(200, body)

    server = HttpServer(handler)
    port = await server.start()
    try:
        pool = UpstreamPool(f"http://127.0.0.1:{port}", max_buffered_bytes=16 * 1024)
        pools.append(pool)
        resp = await pool.request("GET", "/", [], b"")
        assert await resp.read() == body
    finally:
        await server.stop(grace=0.5)
