"""The admin port: probes, metrics, the admin API (status, timeline, reload, drain) and the
dashboard page, apart from the API port.

Kept out of ``_app`` so the data path and the operator's surface change independently.

Access (``server.admin_token``):

- ``/healthz``, ``/readyz``, ``/metrics`` are always open: probes and Prometheus scrapers
  carry no token, and they reveal nothing an operator's network does not already see.
- ``GET /`` (the dashboard page) is open: it holds no data, it asks for the token and then
  reads ``/api/*`` with it.
- Reads (``GET /api/*``, ``/status``): with a token set they need ``Authorization: Bearer
  <token>`` (401 otherwise); with none set they are open, as the admin port listens on
  loopback by default.
- Writes (``POST /api/*``: reload, drain, undrain, config apply and rollback, see
  ``_admin_config``, canary rollouts, see ``_admin_rollouts``) always need the token; with
  none set they are refused with 403 saying to set ``server.admin_token``. Every write,
  allowed or not, is one JSON line on the ``headway.audit`` logger (action, target, outcome, time).

The token is compared in constant time (SHA-256 digests of both sides through
``hmac.compare_digest``, so neither the value nor the length leaks through timing). Like every
``server.*`` setting it is read at start; a reload does not change it. Errors are OpenAI-format
JSON, as on the API port: 401, 403, 404 unknown path, 405 wrong method.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import orjson

from headway.config import ConfigError, diff_configs, load_config
from headway.core import REAL_CLOCK, Clock
from headway.http import Request, Response, error_response
from headway.observe import (
    GatewayMetrics,
    Timeline,
    Totals,
    dashboard_page,
    read_totals,
    slos_json,
)

from ._admin_config import VERSIONS_PREFIX, ConfigApi
from ._admin_rollouts import RolloutRoutes, rollout_target
from ._admin_status import config_fingerprint, status_document
from ._errors import AuthError, GatewayError, MethodNotAllowed, NotFound, error_response_for

if TYPE_CHECKING:
    from ._app import Gateway
    from ._control import ControlPlane
    from ._runtime import Runtime

__all__ = ["AUDIT_LOGGER", "AdminApi"]

#: Where write actions are recorded, one JSON line each (configure its handler to keep them).
AUDIT_LOGGER = "headway.audit"

_JSON = b"application/json"
_HTML = b"text/html; charset=utf-8"
_METRICS_TYPE = GatewayMetrics.content_type.encode()
_BEARER = b"bearer "
# The page may be framed by nothing and run no script but its own (it has no external parts).
_PAGE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
]
# The dashboard shows 5 minutes unless asked for more (the timeline keeps 15).
DEFAULT_TIMELINE_SECONDS = 300.0

audit_log = logging.getLogger(AUDIT_LOGGER)
log = logging.getLogger("headway.admin")

Handler = Callable[[Request], Awaitable[Response]]


class AdminAuthError(AuthError):
    """No admin token, or the wrong one (401)."""

    code = "invalid_admin_token"
    reason = "invalid_admin_token"


class AdminTokenNotSet(GatewayError):
    """A write action on a gateway with no ``server.admin_token`` (403)."""

    status = 403
    type = "permission_error"
    code = "admin_token_not_set"
    reason = "admin_token_not_set"


class NoConfigFile(GatewayError):
    """Reload asked of a gateway running the embedded config (409: nothing to re-read)."""

    status = 409
    type = "invalid_request_error"
    code = "no_config_file"
    reason = "no_config_file"


class AdminApi:
    """Answers the admin port's requests from the gateway's live state.

    Routes live in two tables, path -> method -> handler (``_routes``, exact paths) and
    ``/api/endpoints/{pool}/{endpoint}/{action}``; reads are wrapped by :meth:`_read`, writes
    by :meth:`_write`, which is where access is decided.
    """

    def __init__(
        self, gateway: Gateway, *, clock: Clock = REAL_CLOCK, token: str | None = None
    ) -> None:
        """``token`` overrides ``server.admin_token`` (read once, at start, like it)."""
        self._gateway = gateway
        configured = gateway.config.server.admin_token
        if token is None and configured is not None:
            token = configured.get_secret_value()
        self._token: bytes | None = None if token is None else _digest(token.encode())
        #: The config file a reload re-reads; None: the embedded default (nothing to re-read).
        self.config_path: str | None = None
        #: Called after a successful reload through this API (``headway serve`` re-freezes
        #: the heap there, as for SIGHUP).
        self.after_reload: Callable[[], object] | None = None
        #: Config versions, when the gateway runs from a control store (``_control``); None:
        #: it runs from ``config_path`` and the ``/api/config*`` routes answer 409.
        self.control: ControlPlane | None = None
        config = ConfigApi(self)
        self.started_at = time.time()
        self.loaded_at = self.started_at
        self.reloads = 0
        self._fingerprint: tuple[object, str] | None = None
        # Drained endpoints as (pool, endpoint name): re-applied to the runtime a reload builds.
        self._drained: set[tuple[str, str]] = set()
        self.timeline = Timeline(self._totals, inflight=self._inflight, clock=clock)
        self._sampler: asyncio.Task[None] | None = None
        self._routes: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": self._healthz},
            "/readyz": {"GET": self._readyz},
            "/metrics": {"GET": self._metrics},
            "/": {"GET": self._dashboard},
            "/dashboard": {"GET": self._dashboard},
            "/status": {"GET": self._read(self._snapshot)},
            "/api/status": {"GET": self._read(self._status)},
            "/api/timeline": {"GET": self._read(self._timeline)},
            "/api/slos": {"GET": self._read(self._slos)},
            "/api/shadow": {"GET": self._read(self._shadow)},
            "/api/splits": {"GET": self._read(self._splits)},
            "/api/reload": {"POST": self._write("reload", self._reload)},
            "/api/config": {
                "GET": self._read(config.current),
                "POST": self._write("config.apply", config.apply),
            },
            "/api/config/versions": {"GET": self._read(config.history)},
            "/api/config/diff": {"GET": self._read(config.diff)},
            "/api/config/rollback": {"POST": self._write("config.rollback", config.rollback)},
            "/api/config/stage": {
                "GET": self._read(config.stage_status),
                "POST": self._write("config.stage", config.stage),
            },
            "/api/config/stage/promote": {"POST": self._write("config.promote", config.promote)},
            "/api/config/stage/abort": {"POST": self._write("config.abort", config.abort)},
            "/api/flags": {"GET": self._read(config.flags)},
        }
        self._version_route: dict[str, Handler] = {"GET": self._read(config.version)}
        self._endpoint_actions: dict[str, Handler] = {
            "drain": self._write("drain", self._drain),
            "undrain": self._write("undrain", self._undrain),
        }
        # /api/rollouts[/{model}[/{action}]] (_admin_rollouts)
        self._rollouts = RolloutRoutes(lambda: gateway.rollouts, read=self._read, write=self._write)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timeline's sampler (once a second, on the gateway's clock)."""
        if self._sampler is None:
            self._sampler = asyncio.create_task(self.timeline.run())

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    def on_reload(self, runtime: Runtime) -> None:
        """A reload (any way: SIGHUP, file watch, this API) built ``runtime``, about to go
        live: count it, and apply the drains an operator made (a reload must not put a
        drained endpoint back in rotation; drains of endpoints it lacks are forgotten)."""
        self.reloads += 1
        self.loaded_at = time.time()
        for pool_name, name in list(self._drained):
            pool = runtime.pools.get(pool_name)
            if pool is None or not any(s.name == name for s in pool.balancer.endpoints):
                self._drained.discard((pool_name, name))
                continue
            pool.balancer.drain(name)

    # -- dispatch ----------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        methods: dict[str, Handler] | None = None
        try:
            methods = self._routes.get(request.path)
            if methods is None:
                methods = self._endpoint_route(request.path)
            if methods is None:
                methods = self._rollouts.route(request.path)
            if methods is None and request.path.startswith(VERSIONS_PREFIX):
                methods = self._version_route
            if methods is None:
                raise NotFound(f"unknown admin path {request.path}")
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise MethodNotAllowed(f"{request.path} takes {allowed}")
            return await handler(request)
        except Exception as error:
            response = error_response_for(error)
            if response.status == 405 and methods is not None:
                response.headers = [*response.headers, (b"allow", ", ".join(methods).encode())]
            return response

    def _endpoint_route(self, path: str) -> dict[str, Handler] | None:
        """``/api/endpoints/{pool}/{endpoint}/{drain|undrain}`` (the endpoint's name may hold
        slashes, e.g. ``sim://a1``; percent-encoding is accepted)."""
        prefix = "/api/endpoints/"
        if not path.startswith(prefix):
            return None
        _, _, action = path.rpartition("/")
        handler = self._endpoint_actions.get(action)
        return None if handler is None else {"POST": handler}

    # -- access ------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        token = self._token
        if token is None:
            return False
        header = request.headers.get(b"authorization")
        if header is None or header[:7].lower() != _BEARER:
            return False
        return hmac.compare_digest(_digest(header[7:].strip()), token)

    def _read(self, handler: Handler) -> Handler:
        async def read(request: Request) -> Response:
            if self._token is not None and not self._authorized(request):
                raise _unauthorized()
            return await handler(request)

        return read

    def _write(self, action: str, handler: Handler) -> Handler:
        async def write(request: Request) -> Response:
            target = self._target(action, request.path)
            if self._token is None:
                _audit(action, target, "refused_no_token")
                raise AdminTokenNotSet(
                    "write actions need server.admin_token set (e.g. admin_token: "
                    "'${HEADWAY_ADMIN_TOKEN}'); without it the admin API is read-only"
                )
            if not self._authorized(request):
                _audit(action, target, "unauthorized")
                raise _unauthorized()
            try:
                response = await handler(request)
            except Exception as error:
                _audit(action, target, f"failed: {getattr(error, 'reason', 'error')}")
                raise
            _audit(action, target, "ok" if response.status < 400 else _failure(response))
            return response

        return write

    def _target(self, action: str, path: str) -> str:
        if action == "reload":
            return self.config_path or "(embedded)"
        if action.startswith("rollout."):
            return rollout_target(path)
        if action.startswith("config."):
            return "config"
        return unquote(path[len("/api/endpoints/") : path.rfind("/")])

    # -- open ----------------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        runtime = self._gateway.runtime
        if runtime is None:
            return _json(503, {"ready": False, "models": []})
        return self._gateway.ready(runtime)

    async def _metrics(self, request: Request) -> Response:
        gateway = self._gateway
        if not gateway.config.observe.metrics:
            raise NotFound("metrics are off (observe.metrics: false)")
        return Response(200, gateway.metrics.render(), content_type=_METRICS_TYPE)

    async def _dashboard(self, request: Request) -> Response:
        return Response(200, dashboard_page(), headers=_PAGE_HEADERS, content_type=_HTML)

    # -- reads ---------------------------------------------------------------------------------

    def _runtime(self) -> Runtime:
        runtime = self._gateway.runtime
        if runtime is None:
            raise NotFound("the gateway is starting")
        return runtime

    async def _snapshot(self, request: Request) -> Response:
        return _json(200, self._runtime().snapshot())

    async def _status(self, request: Request) -> Response:
        runtime = self._runtime()
        gateway = self._gateway
        metrics = gateway.metrics if gateway.config.observe.metrics else None
        document = status_document(runtime, metrics, self.config_info())
        document["admin"] = {"token_set": self._token is not None}
        return _json(200, document)

    async def _timeline(self, request: Request) -> Response:
        seconds = DEFAULT_TIMELINE_SECONDS
        values = parse_qs(request.query).get("seconds")
        if values:
            try:
                seconds = float(values[-1])
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds > 0):
                raise _bad_param("seconds must be a positive number", "seconds")
        document = self.timeline.to_json(seconds)
        document["metrics"] = self._gateway.config.observe.metrics
        return _json(200, document)

    async def _slos(self, request: Request) -> Response:
        return _json(200, slos_json(self._runtime().slos))

    async def _shadow(self, request: Request) -> Response:
        """Shadow traffic per model: mirrored, skipped, diff rates and the noise floor."""
        shadows = self._runtime().shadows
        return _json(200, {"models": {name: s.snapshot() for name, s in shadows.items()}})

    async def _splits(self, request: Request) -> Response:
        """Canary splits per model: live weight and per-side totals."""
        splits = self._runtime().splits
        return _json(200, {"models": {name: s.snapshot() for name, s in splits.items()}})

    def config_info(self) -> dict[str, Any]:
        """The config version in use: a hash of its content, where it came from, when."""
        config = self._gateway.config
        cached = self._fingerprint
        if cached is None or cached[0] is not config:
            cached = self._fingerprint = (config, config_fingerprint(config))
        control = self.control
        return {
            "hash": cached[1],
            "schema_version": config.version,
            "source": (self.config_path or "(embedded)") if control is None else control.store.url,
            "version": None if control is None else control.served.version,
            "loaded_at": self.loaded_at,
            "started_at": self.started_at,
            "reloads": self.reloads,
        }

    def _totals(self) -> Totals | None:
        gateway = self._gateway
        if not gateway.config.observe.metrics:
            return None
        metrics = gateway.metrics
        return read_totals(metrics.requests, metrics.duration, metrics.ttft)

    def _inflight(self) -> int:
        runtime = self._gateway.runtime
        return 0 if runtime is None else runtime.inflight

    # -- writes --------------------------------------------------------------------------------

    async def _reload(self, request: Request) -> Response:
        """Re-read the file the gateway was started with; apply it only if valid. Running
        from a control store: ask it for a newer version now."""
        if self.control is not None:
            reloaded = await self.control.refresh()
            return _json(200, {"reloaded": reloaded, "changes": [], "config": self.config_info()})
        path = self.config_path
        if path is None:
            raise NoConfigFile(
                "the gateway runs the embedded default config: there is no file to re-read "
                "(start it with 'headway serve CONFIG')"
            )
        gateway = self._gateway
        try:
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as error:
            return _config_errors(error)
        changes = diff_configs(gateway.config, config)
        await gateway.reload(config)
        log.info("config reloaded through the admin API (%d changes)", len(changes))
        if self.after_reload is not None:
            self.after_reload()
        return _json(200, {"reloaded": True, "changes": changes, "config": self.config_info()})

    async def _drain(self, request: Request) -> Response:
        return self._set_drained(request.path, True)

    async def _undrain(self, request: Request) -> Response:
        return self._set_drained(request.path, False)

    def _set_drained(self, path: str, drained: bool) -> Response:
        runtime = self._runtime()
        target = path[len("/api/endpoints/") : path.rfind("/")]
        pool_name, _, wanted = target.partition("/")
        pool_name, wanted = unquote(pool_name), unquote(wanted)
        pool = runtime.pools.get(pool_name)
        if pool is None:
            raise NotFound(f"no pool named {pool_name!r}")
        slot = None
        for index, candidate in enumerate(pool.balancer.endpoints):
            if wanted in (candidate.name, f"ep{index}") or candidate.name == "sim://" + wanted:
                slot = candidate
                break
        if slot is None:
            raise NotFound(f"pool {pool_name!r} has no endpoint {wanted!r}")
        if drained:
            pool.balancer.drain(slot.name)
            self._drained.add((pool_name, slot.name))
        else:
            pool.balancer.undrain(slot.name)
            self._drained.discard((pool_name, slot.name))
        return _json(
            200,
            {
                "pool": pool_name,
                "endpoint": slot.name,
                "drained": drained,
                "inflight": slot.outstanding,
            },
        )


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _unauthorized() -> AdminAuthError:
    return AdminAuthError(
        "the admin API needs 'Authorization: Bearer <token>' with server.admin_token"
    )


def _bad_param(message: str, param: str) -> GatewayError:
    return GatewayError(message, param=param, code="invalid_parameter", reason="invalid_parameter")


def _config_errors(error: ConfigError) -> Response:
    """400 naming every problem in the file (the running config is untouched)."""
    issues = [str(issue) for issue in error.errors]
    response = error_response(
        400,
        f"invalid config {error.source}, nothing changed:\n" + "\n".join(issues),
        type="invalid_request_error",
        code="invalid_config",
    )
    payload = orjson.loads(response.body)
    payload["error"]["errors"] = [
        {"path": issue.path, "message": issue.message, "line": issue.line} for issue in error.errors
    ]
    return _json(400, payload)


def _failure(response: Response) -> str:
    """``failed: <error code>`` of an error answer (a handler's own, e.g. an invalid config)."""
    try:
        code = orjson.loads(response.body)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code = None
    return f"failed: {code or response.status}"


def _audit(action: str, target: str, outcome: str) -> None:
    line = {"time": time.time(), "action": action, "target": target, "outcome": outcome}
    audit_log.info(orjson.dumps(line).decode())


def _json(status: int, payload: Any) -> Response:
    return Response(status, orjson.dumps(payload), content_type=_JSON)
