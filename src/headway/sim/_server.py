"""The simulator as a running server, in-process (tests, ``sim://`` upstreams) or standalone."""

from __future__ import annotations

from headway.core import REAL_CLOCK, Clock
from headway.http import HttpServer, Limits

from ._app import SimApp
from ._config import SimConfig
from ._faults import Faults

__all__ = ["SimServer"]


class SimServer:
    """``port = await SimServer(config).start()``; ``await stop()`` when done."""

    kind = "sim"

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        limits: Limits | None = None,
        clock: Clock = REAL_CLOCK,
        name: str = "sim",
    ) -> None:
        self.name = name
        self.app = SimApp(config, clock=clock)
        self._http = HttpServer(self.app, limits, name=name)

    @property
    def faults(self) -> Faults:
        """Flip faults in-process: ``server.faults.update({"error_rate": 1.0})``."""
        return self.app.faults

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.port}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self._http.start(host, port)

    async def stop(self, grace: float = 1.0) -> None:
        await self._http.stop(grace)

    def snapshot(self) -> dict[str, float]:
        return {**self.app.snapshot(), **self._http.snapshot()}
