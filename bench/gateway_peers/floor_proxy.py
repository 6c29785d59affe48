"""The Python floor: the least a Python HTTP/1.1 proxy can do per request, for bench/gateway.py.

Same stack as Headway's data path (uvloop, httptools' C parser on both sides, keep-alive to
the upstream) and nothing else: no auth, no JSON, no guards, no timeouts, no error handling.
Each client connection gets its own upstream connection, requests are forwarded as they are
parsed, answers relayed as they arrive (a body of known length as is, else re-chunked).
What separates Headway from this line is the cost of Headway's own per-request work, not
Python's I/O.

Run: ``python floor_proxy.py LISTEN_PORT:UPSTREAM_PORT [...]`` (127.0.0.1 everywhere).
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import httptools
import uvloop

_REQUEST = b"POST %b HTTP/1.1\r\nHost: upstream\r\nContent-Type: application/json\r\n"


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[bytes] = []
        self.chunked = False
        self.head = b""  # the answer's head, sent with its first body bytes (one write)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.client.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers = []
        self.chunked = True

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length":
            self.chunked = False
        if lower in (b"content-type", b"content-length", b"cache-control"):
            self.headers.append(b"%b: %b\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        framing = b"Transfer-Encoding: chunked\r\n" if self.chunked else b""
        self.head = b"HTTP/1.1 %d OK\r\n%b%b\r\n" % (status, b"".join(self.headers), framing)

    def on_body(self, body: bytes) -> None:
        data = b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body
        if self.head:
            data = self.head + data
            self.head = b""
        self.client.write(data)

    def on_message_complete(self) -> None:
        end = b"0\r\n\r\n" if self.chunked else b""
        if self.head or end:
            self.client.write(self.head + end)
            self.head = b""


class Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.waiting: list[bytes] = []
        self.connecting: asyncio.Task[object] | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        loop = asyncio.get_running_loop()
        connect = loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.upstream_port)
        self.connecting = loop.create_task(connect)

    def upstream_ready(self, upstream: Upstream) -> None:
        self.upstream = upstream
        for data in self.waiting:
            self.forward(data)
        self.waiting.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body = []
        data = _REQUEST % self.url + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
        if self.upstream is None:
            self.waiting.append(data)
        else:
            self.forward(data)

    def forward(self, data: bytes) -> None:
        assert self.upstream is not None
        assert self.upstream.transport is not None
        self.upstream.transport.write(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def main(pairs: list[tuple[int, int]]) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda up=up: Client(up), "127.0.0.1", port)  # type: ignore[misc]
        for port, up in pairs
    ]
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    uvloop.run(main([tuple(int(x) for x in arg.split(":")) for arg in sys.argv[1:]]))  # type: ignore[misc]
