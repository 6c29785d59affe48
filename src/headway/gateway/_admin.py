"""The admin port: health, readiness, status and Prometheus metrics, apart from the API port.

Kept out of ``_app`` so the data path and the operator's surface change independently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from headway.http import Request, Response
from headway.observe import GatewayMetrics

if TYPE_CHECKING:
    from ._app import Gateway

_JSON = b"application/json"
_METRICS_TYPE = GatewayMetrics.content_type.encode()


class AdminApi:
    """Answers the admin port's requests from the gateway's live state."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def handle(self, request: Request) -> Response:
        gateway = self._gateway
        runtime = gateway.runtime
        path = request.path
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz" and runtime is not None:
            return gateway.ready(runtime)
        if path == "/status" and runtime is not None:
            return _json(200, runtime.snapshot())
        if path == "/metrics" and gateway.config.observe.metrics:
            return Response(200, gateway.metrics.render(), content_type=_METRICS_TYPE)
        return _json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})


def _json(status: int, payload: Any) -> Response:
    return Response(status, orjson.dumps(payload), content_type=_JSON)
