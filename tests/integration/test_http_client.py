"""The upstream client against real loopback servers: bodies, keep-alive pooling, streaming.

Servers are ``headway.http.HttpServer`` handlers, ``headway.sim.SimServer``, and, where a
behaviour needs exact control of the bytes on the wire (close-delimited bodies, a server that
closes a kept-alive connection), a tiny scripted asyncio server; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from headway.core import DeadlineExceeded, ManualClock, Overloaded, UpstreamError
from headway.http import HttpServer, Request, Response, StreamingResponse
from headway.http.client import UpstreamPool, UpstreamResponse, parse_origin
from headway.sim import SimConfig, SimServer

Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


# ---- servers --------------------------------------------------------------------------------


class Servers:
    """Starts servers and pools for one test; stops them and checks nothing leaked."""

    def __init__(self) -> None:
        self.http: list[HttpServer] = []
        self.raw: list[RawServer] = []
        self.pools: list[UpstreamPool] = []

    async def serve(self, handler: Handler) -> tuple[HttpServer, str]:
        server = HttpServer(handler)
        port = await server.start()
        self.http.append(server)
        return server, f"http://127.0.0.1:{port}"

    async def serve_raw(self, script: Script) -> tuple[RawServer, str]:
        server = RawServer(script)
        port = await server.start()
        self.raw.append(server)
        return server, f"http://127.0.0.1:{port}"

    def pool(self, url: str, **options: Any) -> UpstreamPool:
        pool = UpstreamPool(url, **options)
        self.pools.append(pool)
        return pool

    async def close(self) -> None:
        for pool in self.pools:
            conns = list(pool._conns)
            await pool.aclose()
            assert pool.snapshot()["open"] == 0
            assert not pool._conns
            for conn in conns:
                await asyncio.wait_for(conn.lost_waiter(), 2.0)
        for server in self.http:
            await server.stop(grace=0.5)
        for raw in self.raw:
            await raw.stop()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        await s.close()
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leaked, leaked


# A scripted answer: bytes to send and keep the connection, ("close", bytes) to send and close,
# or None to close without answering. Called with (connection number, request number, peer port).
Script = Callable[[int, int, int], "bytes | tuple[str, bytes] | None"]


class RawServer:
    """A loopback HTTP/1.1 server whose answers are scripted byte for byte."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        number = self.connections
        self.connections += 1
        peer_port = writer.get_extra_info("peername")[1]
        try:
            index = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                self.requests.append(head)
                answer = self.script(number, index, peer_port)
                index += 1
                if answer is None:
                    break
                if isinstance(answer, tuple):
                    writer.write(answer[1])
                    await writer.drain()
                    break
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def echo(request: Request) -> Response:
    return Response(
        200,
        orjson.dumps(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": {k.decode(): v.decode() for k, v in request.headers.items()},
                "body": request.body.decode(),
            }
        ),
        headers=[(b"X-Multi", b"a"), (b"x-multi", b"b")],
    )


# ---- bodies and heads -----------------------------------------------------------------------


async def test_content_length_request_and_response(servers: Servers) -> None:
    _, url = await servers.serve(echo)
    pool = servers.pool(url + "/v1/", default_headers=[(b"User-Agent", b"headway-test")])
    resp = await pool.request(
        "POST", "/chat?x=1", [(b"content-type", b"application/json")], b'{"a":1}'
    )
    assert isinstance(resp, UpstreamResponse)
    assert resp.status == 200
    assert resp.header(b"Content-Type") == b"application/json"
    assert resp.header("x-multi") == b"a, b"
    assert resp.header(b"missing") is None
    assert (b"x-multi", b"a") in resp.headers
    assert all(name == name.lower() for name, _ in resp.headers)
    seen = orjson.loads(await resp.read())
    assert seen["method"] == "POST"
    assert seen["path"] == "/v1/chat"
    assert seen["query"] == "x=1"
    assert seen["body"] == '{"a":1}'
    assert seen["headers"]["host"] == url.removeprefix("http://")
    assert seen["headers"]["user-agent"] == "headway-test"
    assert seen["headers"]["content-length"] == "7"


async def test_get_without_body_sends_no_content_length(servers: Servers) -> None:
    _, url = await servers.serve(echo)
    pool = servers.pool(url)
    resp = await pool.request("GET", "/models", [], b"")
    seen = orjson.loads(await resp.read())
    assert seen["method"] == "GET"
    assert "content-length" not in seen["headers"]


async def test_large_request_body_is_sent_whole(servers: Servers) -> None:
    _, url = await servers.serve(echo)
    pool = servers.pool(url)
    body = b"x" * (300 * 1024)
    resp = await pool.request("POST", "/big", [], body)
    assert orjson.loads(await resp.read())["body"] == body.decode()


async def test_chunked_response_read_whole(servers: Servers) -> None:
    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(50):
                yield b"piece-%d;" % i

        return StreamingResponse(chunks(), content_type=b"text/plain")

    _, url = await servers.serve(handler)
    pool = servers.pool(url)
    resp = await pool.request("GET", "/", [], b"")
    assert resp.header(b"transfer-encoding") == b"chunked"
    assert await resp.read() == b"".join(b"piece-%d;" % i for i in range(50))
    # Chunked answers keep the connection alive.
    resp = await pool.request("GET", "/", [], b"")
    await resp.read()
    assert pool.snapshot()["connects"] == 1


async def test_close_delimited_response(servers: Servers) -> None:
    raw, url = await servers.serve_raw(
        lambda c, i, p: ("close", b"HTTP/1.1 200 OK\r\nx-kind: eof\r\n\r\nuntil the end")
    )
    pool = servers.pool(url)
    resp = await pool.request("GET", "/", [], b"")
    assert resp.header(b"x-kind") == b"eof"
    assert await resp.read() == b"until the end"
    assert pool.snapshot()["idle"] == 0  # a close-delimited body cannot leave a reusable socket
    resp = await pool.request("GET", "/", [], b"")
    assert [c async for c in resp.iter_chunks()] == [b"until the end"]
    assert pool.snapshot()["connects"] == 2
    assert raw.connections == 2


async def test_empty_bodies_204_and_head(servers: Servers) -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/none":
            return Response(204)
        return Response(200, b"0123456789")

    _, url = await servers.serve(handler)
    pool = servers.pool(url)
    resp = await pool.request("DELETE", "/none", [], b"")
    assert resp.status == 204
    assert await resp.read() == b""
    resp = await pool.request("HEAD", "/thing", [], b"")
    assert resp.header(b"content-length") == b"10"
    assert await resp.read() == b""
    # 204 kept the connection; a HEAD answer's connection is not reused.
    assert pool.snapshot()["connects"] == 1
    assert pool.snapshot()["open"] == 0
    resp = await pool.request("GET", "/thing", [], b"")
    assert await resp.read() == b"0123456789"


async def test_interim_100_continue_is_skipped(servers: Servers) -> None:
    _, url = await servers.serve_raw(
        lambda c, i, p: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final", b"x-a: 1\r\n")
    )
    pool = servers.pool(url)
    resp = await pool.request("POST", "/", [], b"{}")
    assert resp.status == 200
    assert resp.headers == [(b"content-length", b"5"), (b"x-a", b"1")]
    assert await resp.read() == b"final"


async def test_header_injection_refused_before_connecting(servers: Servers) -> None:
    _, url = await servers.serve(echo)
    pool = servers.pool(url)
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.request("GET", "/", [(b"x-a", b"1\r\nx-evil: 1")], b"")
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.request("GET", "/\r\nx-evil: 1", [], b"")
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.request("GET", "/", [(b"x-a", b"1\rx")], b"")
    with pytest.raises(ValueError, match="spaces"):
        await pool.request("GET", "/a b", [], b"")
    assert pool.snapshot()["connects"] == 0


def test_origin_parsing_and_https_refusal() -> None:
    origin = parse_origin("http://10.0.0.5:8000/v1/")
    assert (origin.host, origin.port, origin.base_path) == ("10.0.0.5", 8000, b"/v1")
    assert origin.authority == b"10.0.0.5:8000"
    assert parse_origin("http://example.com").authority == b"example.com"
    assert parse_origin("http://[::1]:81").authority == b"[::1]:81"
    with pytest.raises(ValueError, match="TLS to upstreams is not supported yet"):
        UpstreamPool("https://api.openai.com/v1")
    with pytest.raises(ValueError, match="http://"):
        UpstreamPool("ftp://x")
    with pytest.raises(ValueError, match="query"):
        UpstreamPool("http://x/v1?a=1")
    assert UpstreamPool.from_url("127.0.0.1:9/v1").base_url == "http://127.0.0.1:9/v1"


# ---- keep-alive pooling ---------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(servers: Servers) -> None:
    server, url = await servers.serve(echo)
    pool = servers.pool(url)
    for i in range(10):
        resp = await pool.request("POST", "/r", [], b"%d" % i)
        assert orjson.loads(await resp.read())["body"] == str(i)
    snap = pool.snapshot()
    assert snap["connects"] == 1
    assert snap["reuses"] == 9
    assert snap["requests"] == 10
    assert snap["open"] == 1
    assert snap["idle"] == 1
    assert snap["errors"] == 0
    assert server.snapshot()["accepted"] == 1


async def test_idle_connections_are_reused_last_in_first_out(servers: Servers) -> None:
    def script(conn: int, index: int, port: int) -> bytes:
        return ok(b"%d" % port)

    _, url = await servers.serve_raw(script)
    pool = servers.pool(url)
    first = await pool.request("GET", "/", [], b"")
    second = await pool.request("GET", "/", [], b"")  # the first is still busy: new connection
    port_a = int(await first.read())  # released first
    port_b = int(await second.read())  # released last: the warmest
    assert port_a != port_b
    third = await pool.request("GET", "/", [], b"")
    assert int(await third.read()) == port_b


async def test_concurrency_bounded_and_waiters_served_fifo(servers: Servers) -> None:
    release = asyncio.Event()
    running = 0
    peak = 0

    async def handler(request: Request) -> Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return Response(200, request.body)

    _, url = await servers.serve(handler)
    pool = servers.pool(url, max_connections=2)
    finished: list[bytes] = []

    async def call(i: int) -> None:
        resp = await pool.request("POST", "/", [], b"%d" % i)
        finished.append(await resp.read())

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(call(i)))
        await asyncio.sleep(0.01)  # queue in a known order
    assert pool.snapshot()["waiting"] == 4
    assert pool.snapshot()["open"] == 2
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2
    # The two running first finish in either order; the queue is served in arrival order.
    assert sorted(finished[:2]) == [b"0", b"1"]
    assert sorted(finished[2:4]) == [b"2", b"3"]
    snap = pool.snapshot()
    assert snap["connects"] == 2
    assert snap["reuses"] == 4
    assert snap["waiting"] == 0


async def test_max_pending_refuses_with_overloaded(servers: Servers) -> None:
    release = asyncio.Event()

    async def handler(request: Request) -> Response:
        await release.wait()
        return Response(200, b"done")

    _, url = await servers.serve(handler)
    pool = servers.pool(url, max_connections=1, max_pending=1)
    busy = asyncio.create_task(pool.request("GET", "/", [], b""))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(pool.request("GET", "/", [], b""))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as info:
        await pool.request("GET", "/", [], b"")
    assert info.value.reason == "upstream_pool_full"
    release.set()
    for task in (busy, queued):
        assert await (await task).read() == b"done"
    assert pool.snapshot()["connects"] == 1


async def test_waiter_gives_up_at_its_deadline(servers: Servers, clock: ManualClock) -> None:
    release = asyncio.Event()

    async def handler(request: Request) -> Response:
        await release.wait()
        return Response(200, b"done")

    _, url = await servers.serve(handler)
    pool = servers.pool(url, max_connections=1, clock=clock)
    busy = asyncio.create_task(pool.request("GET", "/", [], b""))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(pool.request("GET", "/", [], b"", deadline=clock.now() + 5))
    await clock.advance(4.9)
    assert not waiter.done()
    assert pool.snapshot()["waiting"] == 1
    await clock.advance(0.2)
    with pytest.raises(DeadlineExceeded):
        await waiter
    assert pool.snapshot()["waiting"] == 0
    release.set()
    assert await (await busy).read() == b"done"
    assert (pool.snapshot()["open"], pool.snapshot()["idle"]) == (1, 1)


async def test_idle_connections_close_after_idle_timeout(
    servers: Servers, clock: ManualClock
) -> None:
    server, url = await servers.serve(echo)
    pool = servers.pool(url, idle_timeout=30.0, clock=clock)
    await (await pool.request("GET", "/", [], b"")).read()
    await clock.advance(20)
    await (await pool.request("GET", "/", [], b"")).read()  # idle clock restarts
    await clock.advance(29)
    assert pool.snapshot()["idle"] == 1
    await clock.advance(1.5)
    assert pool.snapshot()["idle"] == 0
    assert pool.snapshot()["open"] == 0
    assert clock.pending_timers == 0
    for _ in range(50):
        if server.snapshot()["connections"] == 0:
            break
        await asyncio.sleep(0.01)
    assert server.snapshot()["connections"] == 0
    await (await pool.request("GET", "/", [], b"")).read()
    assert pool.snapshot()["connects"] == 2


async def test_connection_closed_by_server_while_idle_is_not_reused(servers: Servers) -> None:
    # The server answers with keep-alive semantics, then closes the connection anyway.
    _, url = await servers.serve_raw(lambda c, i, p: ("close", ok(b"bye")))
    pool = servers.pool(url)
    assert await (await pool.request("GET", "/", [], b"")).read() == b"bye"
    for _ in range(100):
        if pool.snapshot()["idle"] == 0:
            break
        await asyncio.sleep(0.005)
    assert pool.snapshot()["idle"] == 0
    assert pool.snapshot()["open"] == 0
    assert await (await pool.request("GET", "/", [], b"")).read() == b"bye"
    snap = pool.snapshot()
    assert (snap["connects"], snap["reuses"], snap["retries"]) == (2, 0, 0)


async def test_keep_alive_race_is_retried_once_on_a_fresh_connection(servers: Servers) -> None:
    # The first connection answers once, then closes as the second request arrives on it: what
    # a client sees when a server's keep-alive timeout fires while the request is in flight.
    def script(conn: int, index: int, port: int) -> bytes | None:
        if conn == 0 and index == 1:
            return None
        return ok(b"conn %d" % conn)

    raw, url = await servers.serve_raw(script)
    pool = servers.pool(url)
    assert await (await pool.request("POST", "/", [], b"one")).read() == b"conn 0"
    assert await (await pool.request("POST", "/", [], b"two")).read() == b"conn 1"
    snap = pool.snapshot()
    assert (snap["connects"], snap["retries"], snap["errors"]) == (2, 1, 0)
    assert len(raw.requests) == 3


async def test_failure_on_a_fresh_connection_is_not_retried(servers: Servers) -> None:
    raw, url = await servers.serve_raw(lambda c, i, p: None)
    pool = servers.pool(url)
    with pytest.raises(UpstreamError) as info:
        await pool.request("POST", "/", [], b"x")
    assert info.value.reason == "connection_reset"
    assert info.value.retryable is True
    snap = pool.snapshot()
    assert (snap["connects"], snap["retries"], snap["errors"], snap["open"]) == (1, 0, 1, 0)
    assert len(raw.requests) == 1


async def test_pool_close_refuses_new_requests(servers: Servers) -> None:
    _, url = await servers.serve(echo)
    pool = servers.pool(url)
    await (await pool.request("GET", "/", [], b"")).read()
    await pool.aclose()
    assert pool.closed
    with pytest.raises(UpstreamError) as info:
        await pool.request("GET", "/", [], b"")
    assert info.value.reason == "pool_closed"


# ---- streaming ------------------------------------------------------------------------------


async def test_stream_chunks_arrive_as_sent(servers: Servers) -> None:
    proceed = asyncio.Event()
    sent: list[bytes] = []

    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            sent.append(b"data: 1\n\n")
            yield b"data: 1\n\n"
            await proceed.wait()
            sent.append(b"data: 2\n\n")
            yield b"data: 2\n\n"

        return StreamingResponse(chunks())

    _, url = await servers.serve(handler)
    pool = servers.pool(url)
    resp = await pool.request("POST", "/stream", [], b"{}")
    assert resp.header(b"content-type") == b"text/event-stream"
    chunks = resp.iter_chunks()
    assert await chunks.__anext__() == b"data: 1\n\n"
    assert sent == [b"data: 1\n\n"]  # received before the second was even produced
    assert resp.delivered
    proceed.set()
    assert await chunks.__anext__() == b"data: 2\n\n"
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
    assert pool.snapshot()["idle"] == 1  # fully consumed: back in the pool


async def test_chunks_are_stamped_as_handed_over_and_a_full_list_handed_on(
    servers: Servers,
) -> None:
    """``stamp_chunks``: each chunk handed over after it is set appends the stamping clock's
    time, whether it was buffered already or waited for; at ``held`` stamps ``full`` gets the
    list (here it keeps the last, as the gateway's relay does)."""
    gates = [asyncio.Event() for _ in range(4)]

    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: 0\n\n"
            for number, gate in enumerate(gates, start=1):
                await gate.wait()
                yield b"data: %d\n\n" % number

        return StreamingResponse(chunks())

    _, url = await servers.serve(handler)
    pool = servers.pool(url)
    resp = await pool.request("POST", "/stream", [], b"{}")
    clock = ManualClock(start=100.0)
    stamps = [99.0]  # the relay's own first stamp
    handed: list[list[float]] = []

    def full(held: list[float]) -> None:
        handed.append(list(held))
        del held[:-1]

    resp.stamp_chunks(stamps, clock, 3, full)
    chunks = resp.iter_chunks()
    for number, gate in enumerate(gates):
        assert await chunks.__anext__() == b"data: %d\n\n" % number
        clock.step(1.0)
        gate.set()
    assert await chunks.__anext__() == b"data: 4\n\n"
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
    assert handed == [[99.0, 100.0, 101.0], [101.0, 102.0, 103.0]]
    assert stamps == [103.0, 104.0]


async def test_sim_server_stream_and_json(servers: Servers) -> None:
    sim = SimServer(
        SimConfig(
            ttft_base=0.001,
            ttft_per_prompt_token=0.0,
            tokens_per_second=20_000.0,
            default_output_tokens=5,
        )
    )
    await sim.start()
    try:
        pool = servers.pool(sim.base_url)
        body = orjson.dumps({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]})
        headers = [(b"content-type", b"application/json")]
        resp = await pool.request("POST", "/chat/completions", headers, body)
        assert resp.status == 200
        answer = orjson.loads(await resp.read())
        assert answer["choices"][0]["message"]["content"] == "the quick brown fox jumps"
        stream_body = body[:-1] + b',"stream":true}'
        resp = await pool.request("POST", "/chat/completions", headers, stream_body)
        raw = b"".join([chunk async for chunk in resp.iter_chunks()])
        events = [line for line in raw.split(b"\n\n") if line]
        assert events[-1] == b"data: [DONE]"
        assert len(events) >= 6
        assert pool.snapshot()["connects"] == 1
    finally:
        await sim.stop(grace=0.5)


async def test_aclose_releases_complete_and_closes_unread(servers: Servers) -> None:
    forever = asyncio.Event()

    async def handler(request: Request) -> Response | StreamingResponse:
        if request.path == "/small":
            return Response(200, b"small")

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await forever.wait()
            yield b"never"

        return StreamingResponse(chunks())

    _, url = await servers.serve(handler)
    pool = servers.pool(url)
    async with await pool.request("GET", "/small", [], b"") as resp:
        assert resp.complete
    assert pool.snapshot()["idle"] == 1  # body fully received, unread: still reusable
    resp = await pool.request("GET", "/stream", [], b"")
    assert await resp.iter_chunks().__anext__() == b"first"
    await resp.aclose()
    await resp.aclose()  # idempotent
    snap = pool.snapshot()
    assert (snap["open"], snap["idle"], snap["errors"]) == (0, 0, 0)
    with pytest.raises(RuntimeError):
        await resp.read()
    assert [c async for c in resp.iter_chunks()] == []


async def test_reused_request_head_keeps_lengths_headers_and_checks(servers: Servers) -> None:
    """The per-path head cache: each request still carries its own length and headers, and a
    header that would inject a line is refused even after a clean head for that path."""
    _, url = await servers.serve(echo)
    pool = servers.pool(url)
    sent = [
        ([(b"content-type", b"application/json")], b'{"a":1}'),
        ([(b"content-type", b"application/json")], b'{"a":12345}'),
        ([(b"content-type", b"text/plain"), (b"x-b", b"2")], b"hello"),
        ([(b"content-type", b"application/json")], b""),
    ]
    for headers, body in sent:
        resp = await pool.request("POST", "/same", headers, body)
        got = orjson.loads(await resp.read())
        assert got["body"] == body.decode()
        assert got["headers"]["content-length"] == str(len(body))
        assert got["headers"]["content-type"] == headers[0][1].decode()
        assert ("x-b" in got["headers"]) == (len(headers) == 2)
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.request("POST", "/same", [(b"content-type", b"a\r\nx-evil: 1")], b"{}")
