"""A small, fast HTTP/1.1 server on asyncio + httptools, shared by the gateway and simulator.

Chosen by measurement (bench/http_choice.py): a bare ``asyncio.Protocol`` over httptools on
uvloop answered several times more requests per second than aiohttp.web and granian's RSGI on
loopback. This package keeps that speed and adds what a front door needs: keep-alive,
pipelining in order, chunked and sized bodies, caps on every client-controlled buffer, timeouts
on every client-controlled wait, streaming with backpressure, and OpenAI-shaped error answers.

A handler is ``async def handler(request: Request) -> Response | StreamingResponse``.
"""

from ._limits import Limits
from ._protocol import Handler
from ._request import Request
from ._response import (
    AbortConnection,
    Header,
    Response,
    StreamingResponse,
    error_response,
)
from ._server import HttpServer

__all__ = [
    "AbortConnection",
    "Handler",
    "Header",
    "HttpServer",
    "Limits",
    "Request",
    "Response",
    "StreamingResponse",
    "error_response",
]
