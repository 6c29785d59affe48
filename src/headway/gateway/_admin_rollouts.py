"""The admin API's rollout routes, over the gateway's :class:`RolloutManager`.

::

    GET  /api/rollouts                     every rollout: phase, step, weight, last decisions
    GET  /api/rollouts/{model}             one rollout, with every decision and its evidence
    POST /api/rollouts/{model}             start one; body: a rollout spec as JSON (empty: the
                                           default steps), 400 naming each bad field
    POST /api/rollouts/{model}/{action}    pause | resume | promote | abort; optional body
                                           {"reason": "..."}

Access is the admin API's (reads need the token when one is set, writes always); the caller
wraps these handlers. Who acted is the ``x-headway-actor`` header (the CLI sends the user's
name), recorded with the decision and, when a control store is configured, in its audit log.
A model name with a slash is sent percent-encoded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from headway.config import ConfigError
from headway.http import Request, Response, error_response
from headway.store import ControlStore, StoreError

from ._errors import BadRequest
from ._rollouts import RolloutManager

__all__ = ["ACTIONS", "ACTOR_HEADER", "RolloutRoutes"]

Handler = Callable[[Request], Awaitable[Response]]
Wrap = Callable[[str, Handler], Handler]

PREFIX = "/api/rollouts"
ACTIONS = ("pause", "resume", "promote", "abort")
ACTOR_HEADER = b"x-headway-actor"
_DEFAULT_ACTOR = "admin-api"
_MAX_ACTOR = 100
# The list shows each rollout's last few decisions; one rollout's page shows all of them.
LIST_DECISIONS = 5
_JSON = b"application/json"

log = logging.getLogger("headway.admin")


def rollout_target(path: str) -> str:
    """``rollout/<model>`` of a rollout write's path (for the audit line)."""
    model, _ = _split_path(path)
    return "rollout/" + (model or "?")


def _split_path(path: str) -> tuple[str | None, str | None]:
    """(model, action) of ``/api/rollouts/{model}[/{action}]``; (None, None) for the list."""
    rest = path[len(PREFIX) :].strip("/")
    if not rest:
        return None, None
    head, _, last = rest.rpartition("/")
    if head and last in ACTIONS:
        return unquote(head), last
    return unquote(rest), None


class RolloutRoutes:
    """Route lookup and handlers; ``read``/``write`` are the admin API's access wrappers."""

    def __init__(
        self,
        manager: Callable[[], RolloutManager],
        *,
        read: Callable[[Handler], Handler],
        write: Wrap,
    ) -> None:
        self._manager = manager
        self._list = {"GET": read(self._all)}
        self._one = {"GET": read(self._get), "POST": write("rollout.start", self._start)}
        self._actions = {
            action: {"POST": write(f"rollout.{action}", self._command)} for action in ACTIONS
        }

    def route(self, path: str) -> dict[str, Handler] | None:
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return None
        model, action = _split_path(path)
        if model is None:
            return self._list
        return self._one if action is None else self._actions[action]

    # -- handlers ------------------------------------------------------------------------------

    async def _all(self, request: Request) -> Response:
        manager = self._manager()
        store = manager.store
        return _json(
            200,
            {
                "rollouts": manager.statuses(decisions=LIST_DECISIONS),
                "store": None if store is None else store.url,
            },
        )

    async def _get(self, request: Request) -> Response:
        model, _ = _split_path(request.path)
        assert model is not None
        return _json(200, self._manager().status(model))

    async def _start(self, request: Request) -> Response:
        model, _ = _split_path(request.path)
        assert model is not None
        manager = self._manager()
        body = _body(request)
        if body is not None and not isinstance(body, dict):
            raise BadRequest("the body must be a rollout spec (a JSON object)", code="invalid_body")
        actor = _actor(request)
        try:
            controller = manager.start(model, body, by=actor)
        except ConfigError as error:
            return _spec_errors(error)
        await _audit(manager.store, actor, "rollout.start", model, {"rollout": controller.name})
        return _json(201, manager.status(model))

    async def _command(self, request: Request) -> Response:
        model, action = _split_path(request.path)
        assert model is not None
        assert action is not None
        manager = self._manager()
        body = _body(request)
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        if not isinstance(reason, str):
            raise BadRequest("'reason' must be a string", param="reason", code="invalid_body")
        actor = _actor(request)
        controller = manager.command(model, action, by=actor, reason=reason)
        detail = {
            "rollout": controller.name,
            "reason": reason,
            "weight": controller.current_weight(),
        }
        await _audit(manager.store, actor, f"rollout.{action}", model, detail)
        return _json(200, manager.status(model))


def _body(request: Request) -> Any:
    if not request.body.strip():
        return None
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {error}", code="invalid_json") from None


def _actor(request: Request) -> str:
    raw = request.headers.get(ACTOR_HEADER)
    if not raw:
        return _DEFAULT_ACTOR
    actor = raw.decode("latin-1").strip()[:_MAX_ACTOR]
    return actor if actor.isprintable() and actor else _DEFAULT_ACTOR


async def _audit(
    store: ControlStore | None, actor: str, action: str, model: str, detail: Mapping[str, Any]
) -> None:
    """The control store's audit entry; the command already took effect, so a failing store is
    logged, not turned into an error (the ``headway.audit`` line is written either way)."""
    if store is None:
        return
    try:
        await store.audit(actor, action, "rollout/" + model, detail)
    except StoreError as error:
        log.error("audit entry %s rollout/%s not stored: %s", action, model, error)


def _spec_errors(error: ConfigError) -> Response:
    """400 naming every bad field of the spec (nothing started)."""
    issues = "\n".join(str(issue) for issue in error.errors)
    response = error_response(
        400,
        f"invalid {error.source}, nothing started:\n{issues}",
        type="invalid_request_error",
        code="invalid_rollout_spec",
    )
    payload = orjson.loads(response.body)
    payload["error"]["errors"] = [
        {"path": issue.path, "message": issue.message} for issue in error.errors
    ]
    return _json(400, payload)


def _json(status: int, payload: Any) -> Response:
    return Response(status, orjson.dumps(payload), content_type=_JSON)
