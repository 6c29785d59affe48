"""The listening side: binds a socket, owns the connections, shuts down gracefully.

``HttpServer(handler, limits).start(host, port)`` returns the bound port (``port=0`` picks a
free one, which is what tests use). ``stop(grace)`` stops accepting, closes idle keep-alive
connections at once, lets running requests finish (their answers carry ``connection: close``)
for up to ``grace`` seconds, then aborts what is left. Counters are plain ints for ``snapshot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from email.utils import formatdate
from typing import Any

from ._limits import Limits
from ._protocol import Handler, HttpProtocol

__all__ = ["HttpServer", "ServerState"]


def _date_header() -> bytes:
    return b"date: " + formatdate(time.time(), usegmt=True).encode() + b"\r\n"


class ServerState:
    """What every connection of one server shares; counters are written by the protocol."""

    def __init__(self, handler: Handler, limits: Limits) -> None:
        self.handler = handler
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.draining = False
        self.drained: asyncio.Event | None = None
        self.date = _date_header()
        self.accepted = 0
        self.requests = 0
        self.rejected = 0
        self.timeouts = 0


class HttpServer:
    """A small HTTP/1.1 server for one handler; see the package docstring for the contract."""

    kind = "http_server"

    def __init__(self, handler: Handler, limits: Limits | None = None, *, name: str = "http"):
        self.name = name
        self._state = ServerState(handler, limits or Limits())
        self._server: asyncio.Server | None = None
        self._date_timer: asyncio.TimerHandle | None = None
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def limits(self) -> Limits:
        return self._state.limits

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> int:
        """Listen and return the bound port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        state = self._state
        state.draining = False
        if sock is not None:
            server = await loop.create_server(
                lambda: HttpProtocol(state), sock=sock, backlog=backlog
            )
        else:
            server = await loop.create_server(
                lambda: HttpProtocol(state),
                host,
                port,
                backlog=backlog,
                reuse_port=reuse_port or None,
            )
        self._server = server
        # Through Any: typeshed says a tuple, uvloop's is a list, and the compiled build checks.
        listening: Any = server
        self._port = int(listening.sockets[0].getsockname()[1])
        self._tick_date()
        return self._port

    def _tick_date(self) -> None:
        self._state.date = _date_header()
        loop = asyncio.get_running_loop()
        self._date_timer = loop.call_later(1.0, self._tick_date)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; finish running requests for up to ``grace`` s; abort the rest."""
        server = self._server
        if server is None:
            return
        self._server = None
        state = self._state
        state.draining = True
        state.drained = asyncio.Event()
        server.close()
        if self._date_timer is not None:
            self._date_timer.cancel()
            self._date_timer = None
        for conn in list(state.connections):
            conn.close_if_idle()
        if state.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.drained.wait(), grace)
        for conn in list(state.connections):
            conn.abort()
        # Let connection_lost callbacks run so handler tasks see their cancellation.
        for _ in range(3):
            await asyncio.sleep(0)
        await server.wait_closed()

    async def serve_forever(self) -> None:
        server = self._server
        if server is None:
            raise RuntimeError("server not started")
        await server.serve_forever()

    def snapshot(self) -> dict[str, float]:
        state = self._state
        return {
            "connections": float(len(state.connections)),
            "accepted": float(state.accepted),
            "requests": float(state.requests),
            "rejected": float(state.rejected),
            "timeouts": float(state.timeouts),
        }
