"""headway.http over raw sockets: limits, timeouts, pipelining, streaming backpressure."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from headway.http import (
    AbortConnection,
    HttpServer,
    Limits,
    Request,
    Response,
    StreamingResponse,
)

Handler = Callable[[Request], object]


async def echo(request: Request) -> Response:
    return Response(
        200,
        orjson.dumps(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": request.body.decode(),
                "agent": (request.header(b"user-agent") or b"").decode(),
            }
        ),
    )


@asynccontextmanager
async def serving(handler: object = echo, **limits: float) -> AsyncIterator[HttpServer]:
    server = HttpServer(handler, Limits(**limits))  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.2)


async def connect(
    server: HttpServer,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.lower()] = value.strip()
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    else:
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 2) == b""
    except ConnectionResetError:
        return True


async def test_keep_alive_and_pipelining_answer_in_order() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(
            b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        first = await read_response(reader)
        second = await read_response(reader)
        assert orjson.loads(first[2]) == {
            "method": "POST",
            "path": "/a",
            "query": "x=1",
            "body": "abc",
            "agent": "t",
        }
        assert orjson.loads(second[2])["path"] == "/b"
        assert b"connection" not in second[1]
        writer.write(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")  # same connection, still open
        assert orjson.loads((await read_response(reader))[2])["path"] == "/c"
        writer.close()
        assert server.snapshot()["requests"] == 3


async def test_chunked_request_body_is_assembled() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        status, _, body = await read_response(reader)
        assert (status, orjson.loads(body)["body"]) == (200, "abcdefg")
        writer.close()


async def test_body_over_limit_is_413_and_close() -> None:
    async with serving(max_body_bytes=100) as server:
        reader, writer = await connect(server)
        writer.write(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == 413
        assert headers[b"connection"] == b"close"
        assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
        assert await closed_by_server(reader)
        # chunked bodies have no length up front: the limit applies as bytes arrive
        reader, writer = await connect(server)
        writer.write(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"64\r\n" + b"x" * 100 + b"\r\n" + b"1\r\ny\r\n0\r\n\r\n")
        assert (await read_response(reader))[0] == 413
        assert await closed_by_server(reader)


async def test_body_at_limit_is_accepted() -> None:
    async with serving(max_body_bytes=100) as server:
        reader, writer = await connect(server)
        writer.write(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_huge_headers_are_431() -> None:
    async with serving(max_header_bytes=1024, max_headers=10) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        assert (await read_response(reader))[0] == 431
        assert await closed_by_server(reader)
        reader, writer = await connect(server)
        many = b"".join(b"X-%d: v\r\n" % i for i in range(11))
        writer.write(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
        assert (await read_response(reader))[0] == 431
        # a header that never ends is cut off once it passes the cap, not buffered forever
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nX-Endless: ")
        for _ in range(5):
            writer.write(b"b" * 4096)
        assert (await read_response(reader))[0] == 431


async def test_long_url_is_414() -> None:
    async with serving(max_url_bytes=64) as server:
        reader, writer = await connect(server)
        writer.write(b"GET /" + b"p" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await read_response(reader))[0] == 414


async def test_malformed_request_is_400() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        assert (await read_response(reader))[0] == 400
        assert await closed_by_server(reader)


async def test_slowloris_header_timeout_is_408_and_close() -> None:
    async with serving(header_timeout=0.2) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")  # headers never finish
        await asyncio.sleep(0.1)
        writer.write(b"X-Drip: 1\r\n")  # dripping bytes does not extend the deadline
        status, headers, _ = await read_response(reader)
        assert status == 408
        assert headers[b"connection"] == b"close"
        assert await closed_by_server(reader)
        assert server.snapshot()["timeouts"] == 1


async def test_between_keep_alive_requests_errors_are_still_answered() -> None:
    # The connection's worker stays parked between requests; a timeout or a malformed request
    # after a first answer must still get its 408/400, exactly as on a fresh connection.
    async with serving(header_timeout=0.2) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")  # the second head never finishes
        status, headers, _ = await read_response(reader)
        assert (status, headers[b"connection"]) == (408, b"close")
        assert await closed_by_server(reader)

        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        assert (await read_response(reader))[0] == 400
        assert await closed_by_server(reader)
        writer.close()


async def test_stop_closes_idle_keep_alive_connections_and_their_workers() -> None:
    before = len(asyncio.all_tasks())
    server = HttpServer(echo, Limits())
    await server.start()
    clients = [await connect(server) for _ in range(3)]
    for reader, writer in clients:
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await read_response(reader))[0] == 200
    await server.stop(grace=5.0)  # idle connections close at once, without waiting the grace
    for reader, writer in clients:
        assert await closed_by_server(reader)
        writer.close()
    assert len(asyncio.all_tasks()) == before  # no parked worker outlives its connection


async def test_idle_keep_alive_connection_is_closed_silently() -> None:
    async with serving(keepalive_timeout=0.1) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 2) == b""


async def test_handler_exception_is_500_without_traceback() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("secret internal detail")

    async with serving(broken) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 500
        assert set(orjson.loads(body)["error"]) == {"message", "type", "code", "param"}
        assert b"secret" not in body
        assert b"Traceback" not in body
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # the connection survives
        assert (await read_response(reader))[0] == 500


async def test_http10_and_head() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(b"GET /x HTTP/1.0\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert (status, headers[b"connection"]) == (200, b"close")
        assert await closed_by_server(reader)
        reader, writer = await connect(server)
        writer.write(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\nGET /y HTTP/1.1\r\nHost: h\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert b"content-length:" in head
        status, _, body = await read_response(reader)  # no HEAD body in between
        assert orjson.loads(body)["path"] == "/y"


def streaming(record: list[str], chunk: bytes, count: int) -> Handler:
    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                for _ in range(count):
                    record.append("chunk")
                    yield chunk
            finally:
                record.append("closed")

        return StreamingResponse(chunks())

    return handler


async def test_stream_backpressure_bounds_what_is_produced() -> None:
    record: list[str] = []
    chunk = b"x" * 65536
    count = 300  # 19 MiB: far more than the socket buffers on both ends hold (~4 MiB here)
    async with serving(streaming(record, chunk, count)) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.sleep(0.2)  # the client reads nothing meanwhile
        produced = record.count("chunk")
        assert 0 < produced < count // 2
        assert "closed" not in record
        status, headers, body = await read_response(reader)  # reading lets it finish
        assert (status, headers[b"transfer-encoding"]) == (200, b"chunked")
        assert len(body) == count * len(chunk)
        assert record[-1] == "closed"
        writer.close()


async def test_stream_body_is_chunked_and_complete() -> None:
    record: list[str] = []
    async with serving(streaming(record, b"z" * 1000, 50)) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert (status, headers[b"transfer-encoding"]) == (200, b"chunked")
        assert headers[b"content-type"] == b"text/event-stream"
        assert body == b"z" * 50_000
        assert record == ["chunk"] * 50 + ["closed"]
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # still keep-alive
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_client_disconnect_mid_stream_closes_the_producer() -> None:
    record: list[str] = []

    async def handler(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"data: tick\n\n"
                    await asyncio.sleep(0.01)
            finally:
                record.append("closed")

        return StreamingResponse(chunks())

    async with serving(handler) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await reader.readuntil(b"data: tick")
        writer.close()
        for _ in range(200):
            if record:
                break
            await asyncio.sleep(0.01)
        assert record == ["closed"]


async def test_client_that_stops_reading_is_aborted_after_send_timeout() -> None:
    record: list[str] = []
    async with serving(streaming(record, b"y" * 65536, 10_000), send_timeout=0.2) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        sock.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        for _ in range(200):
            if "closed" in record:
                break
            await asyncio.sleep(0.02)
        assert record[-1] == "closed"
        assert record.count("chunk") < 10_000
        assert server.snapshot()["timeouts"] == 1
        sock.close()


async def test_abort_connection_resets() -> None:
    async def handler(request: Request) -> Response:
        raise AbortConnection

    async with serving(handler) as server:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await read_response(reader)


async def test_stop_finishes_running_requests_and_closes_idle_ones() -> None:
    started = asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await asyncio.sleep(0.1)
        return Response(200, b"{}")

    server = HttpServer(slow)
    await server.start()
    idle_reader, _ = await asyncio.open_connection("127.0.0.1", server.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await started.wait()
    await server.stop(grace=2.0)
    status, headers, _ = await read_response(reader)
    assert (status, headers[b"connection"]) == (200, b"close")
    assert await asyncio.wait_for(idle_reader.read(), 2) == b""
    assert server.snapshot()["connections"] == 0
