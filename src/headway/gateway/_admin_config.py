"""The admin API's config-version and flag routes (``/api/config*``, ``/api/flags``).

Reads: ``GET /api/config`` (the served version and where it came from), ``/api/config/versions``
(history, newest first; ``?limit=N``), ``/api/config/versions/{n}`` (the version's YAML text
exactly as applied), ``/api/config/diff?from=N&to=M`` (no parameter: previous -> current; one:
the other defaults to current), ``/api/flags``.

Writes (token required, audit-logged by ``AdminApi._write``): ``POST /api/config`` applies a
config (a YAML body with ``x-headway-message`` and optional ``x-headway-author`` headers, or JSON
``{"yaml", "message", "author"}``); an invalid one is answered 400 with every error's field path
and nothing changes. ``POST /api/config/rollback`` (``?version=N`` or JSON ``{"version",
"message", "author"}``; default: the version before the latest). Both serve the new version on
this gateway before answering; other instances follow within their poll interval. Rejected
applies are also written to the store's audit table (accepted ones are, with their version).

Staged rollout (``_stage``): ``GET /api/config/stage``; ``POST /api/config/stage`` serves a
candidate config to a sticky ``weight`` percent of tenants on this gateway (a YAML body with
``x-headway-weight`` and ``x-headway-message`` headers, or JSON ``{"yaml" | "version", "weight",
"message"}``; posting the same candidate again changes its weight); ``POST
/api/config/stage/promote`` applies it as the next version; ``POST /api/config/stage/abort``
drops it.

A version's text holds secrets as written: ``${ENV}`` references stay references, but an API
key written in plain text is readable by anyone who may read the admin API (with no
``server.admin_token``, anyone who can reach the admin port, loopback by default).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from headway.config import ConfigError
from headway.http import Request, Response
from headway.rollout import ConcurrentChange, VersionNotFound, diff_texts
from headway.store import MAX_VERSION_NUMBER, ConfigVersion, StoreError, parse_version_number

from ._control import StageError
from ._errors import GatewayError, NotFound

if TYPE_CHECKING:
    from ._admin import AdminApi
    from ._control import ControlPlane

__all__ = ["VERSIONS_PREFIX", "ConfigApi"]

VERSIONS_PREFIX = "/api/config/versions/"
_JSON = b"application/json"
_YAML = b"application/yaml; charset=utf-8"
#: Who made a change through the API when the caller does not say (the token is shared).
DEFAULT_AUTHOR = "admin-api"
#: The largest version number a store holds (a signed 64-bit integer column).


class NoControlStore(GatewayError):
    """Config versions asked of a gateway started from a file, without a store (409)."""

    status = 409
    code = "no_control_store"
    reason = "no_control_store"


class StoreDown(GatewayError):
    """The control-plane store did not answer (503)."""

    status = 503
    type = "server_error"
    code = "store_unavailable"
    reason = "store_unavailable"


class Conflict(GatewayError):
    """Another apply landed meanwhile (409)."""

    status = 409
    code = "concurrent_change"
    reason = "concurrent_change"


class ConfigApi:
    """Handlers for the routes above; ``AdminApi`` wraps them with its access rules."""

    def __init__(self, admin: AdminApi) -> None:
        self._admin = admin

    def _control(self) -> ControlPlane:
        control = self._admin.control
        if control is None:
            raise NoControlStore(
                "this gateway runs from a config file, not from config versions: start it "
                "with 'headway serve --store URL' (or state.control_url) to use them"
            )
        return control

    # -- reads -----------------------------------------------------------------------------

    async def current(self, request: Request) -> Response:
        admin = self._admin
        info = admin.config_info()
        control = admin.control
        if control is None:
            path = admin.config_path
            document: dict[str, Any] = {
                "version": None,
                "author": None,
                "created": None,
                "message": None,
                "sha256": None,
                "source": "file" if path else "embedded",
                "path": path,
            }
        else:
            document = control.to_json()
        document["hash"] = info["hash"]
        return _json(200, document)

    async def history(self, request: Request) -> Response:
        control = self._control()
        limit = _positive(request, "limit")
        with _store_errors():
            versions = await control.versions.history(limit)
        return _json(200, {"versions": [_version_json(v) for v in versions]})

    async def version(self, request: Request) -> Response:
        control = self._control()
        raw = request.path[len(VERSIONS_PREFIX) :]
        number = parse_version_number(raw)
        if number is None:
            raise NotFound(f"no config version {raw!r}: versions are numbered from 1")
        with _store_errors():
            version = await control.versions.get(number)
        return Response(
            200,
            version.yaml_text.encode(),
            content_type=_YAML,
            headers=[
                (b"x-headway-config-version", str(version.number).encode()),
                (b"x-headway-config-sha256", version.sha256.encode()),
                (b"cache-control", b"no-store"),
            ],
        )

    async def diff(self, request: Request) -> Response:
        control = self._control()
        old, new = _positive(request, "from"), _positive(request, "to")
        with _store_errors():
            if old is None or new is None:
                current = await control.versions.current()
                if current is None:
                    raise VersionNotFound("no config versions yet")
                if old is None and new is None:
                    if current.number < 2:
                        raise VersionNotFound("only one version exists: nothing to compare")
                    old = current.number - 1
                new = current.number if new is None else new
                old = current.number if old is None else old
            before, after = await control.versions.get(old), await control.versions.get(new)
        result = diff_texts(before.yaml_text, after.yaml_text, f"version {old}", f"version {new}")
        return _json(
            200,
            {"from": old, "to": new, "changes": list(result.changes), "text": list(result.text)},
        )

    async def flags(self, request: Request) -> Response:
        """The config's flags and what the flag routes served."""
        runtime = self._admin._runtime()
        flags = [
            {
                "name": flag.name,
                "type": flag.type,
                "default": flag.default,
                "variants": flag.variants,
                "rules": len(flag.rules),
                "description": flag.description,
            }
            for flag in runtime.config.flags
        ]
        routes = {name: route.snapshot() for name, route in runtime.flag_routes.items()}
        return _json(200, {"flags": flags, "routes": routes})

    # -- writes ----------------------------------------------------------------------------

    async def apply(self, request: Request) -> Response:
        control = self._control()
        body = _json_body(request) if _is_json(request) else None
        if body is not None:
            text = body.get("yaml")
            if not isinstance(text, str):
                raise _bad("a JSON apply needs 'yaml': the config text", "yaml")
        else:
            text = _text_body(request)
        message, author = _why_and_who(request, body, "")
        try:
            with _store_errors():
                result = await control.apply(text, author=author, message=message)
        except ConfigError as error:
            with contextlib.suppress(StoreError):  # the refusal is in the audit logger anyway
                await control.store.audit(
                    author,
                    "config.apply.rejected",
                    "config",
                    {"errors": len(error.errors), "message": message, "via": "admin-api"},
                )
            return _config_errors(error)
        return self._result(control, result.version, result.changed, result.warnings)

    async def rollback(self, request: Request) -> Response:
        control = self._control()
        body = _json_body(request) if request.body else None
        version = _positive(request, "version")
        if body is not None and body.get("version") is not None:
            raw = body["version"]
            if not _is_version(raw):
                raise _bad("version must be a positive integer", "version")
            version = raw
        author = _field(request, body, "author") or DEFAULT_AUTHOR
        message = _field(request, body, "message")
        try:
            with _store_errors():
                result = await control.rollback(version, author=author, message=message)
        except ConfigError as error:
            return _config_errors(error)
        return self._result(control, result.version, result.changed, result.warnings)

    async def stage_status(self, request: Request) -> Response:
        self._control()
        staged = self._admin._gateway.staged
        return _json(200, {"staged": None if staged is None else staged.snapshot()})

    async def stage(self, request: Request) -> Response:
        control = self._control()
        body = _json_body(request) if _is_json(request) else None
        if body is not None and body.get("version") is not None:
            number = body["version"]
            if not _is_version(number):
                raise _bad("version must be a positive integer", "version")
            with _store_errors():
                text = (await control.versions.get(number)).yaml_text
            default_message = f"stage version {number}"
        elif body is not None:
            given = body.get("yaml")
            if not isinstance(given, str):
                raise _bad("staging needs 'yaml' (a config text) or 'version'", "yaml")
            text, default_message = given, ""
        else:
            text, default_message = _text_body(request), ""
        weight = _weight(request, body)
        message, author = _why_and_who(request, body, default_message)
        try:
            with _store_errors():
                staged = await control.stage(text, weight=weight, author=author, message=message)
        except ConfigError as error:
            return _config_errors(error)
        return _json(200, {"staged": staged.snapshot()})

    async def promote(self, request: Request) -> Response:
        control = self._control()
        author = _field(request, None, "author") or DEFAULT_AUTHOR
        try:
            with _store_errors():
                result = await control.promote(author=author)
        except ConfigError as error:
            return _config_errors(error)
        return self._result(control, result.version, result.changed, result.warnings)

    async def abort(self, request: Request) -> Response:
        control = self._control()
        with _store_errors():
            staged = await control.abort()
        return _json(200, {"aborted": staged.snapshot()})

    def _result(
        self,
        control: ControlPlane,
        version: ConfigVersion,
        changed: bool,
        warnings: tuple[str, ...],
    ) -> Response:
        live = control.served.version == version.number
        notes = list(warnings)
        if not live and control.rejected is not None and control.rejected[0] == version.number:
            notes.append(f"stored, but not served here: {control.rejected[1]}")
        payload = {
            "version": _version_json(version),
            "changed": changed,
            "live": live,
            "warnings": notes,
        }
        return _json(200, payload)


def _config_errors(error: ConfigError) -> Response:
    from ._admin import _config_errors as answer  # one definition, shared with /api/reload

    return answer(error)


@contextlib.contextmanager
def _store_errors() -> Any:
    """Store and version lookup failures as HTTP errors."""
    try:
        yield
    except VersionNotFound as exc:
        raise NotFound(str(exc), code="version_not_found", reason="version_not_found") from None
    except ConcurrentChange as exc:
        raise Conflict(str(exc)) from None
    except StageError as exc:
        raise Conflict(str(exc), code="stage_conflict", reason="stage_conflict") from None
    except StoreError as exc:
        raise StoreDown(f"the control store did not answer: {exc}") from None


def _version_json(version: ConfigVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "author": version.author,
        "created": version.created,
        "message": version.message,
        "sha256": version.sha256,
        "changes": list(version.diff),
    }


def _positive(request: Request, name: str) -> int | None:
    values = parse_qs(request.query).get(name)
    if not values:
        return None
    number = parse_version_number(values[-1])
    if number is None:
        raise _bad(f"{name} must be a positive integer", name)
    return number


def _is_version(value: Any) -> bool:
    """A JSON ``version`` a store can hold (not a bool, not past BIGINT)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return 1 <= value <= MAX_VERSION_NUMBER


def _weight(request: Request, body: dict[str, Any] | None) -> float:
    """The staged share of tenants, 0..100 (JSON ``weight`` or ``x-headway-weight``)."""
    raw: Any = None
    if body is not None and "weight" in body:
        raw = body["weight"]
    else:
        header = request.headers.get(b"x-headway-weight")
        raw = None if header is None else header.decode("latin-1")
    try:
        weight = float(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):  # e.g. a JSON list, or a header that is no number
        weight = None
    if weight is None or not 0.0 <= weight <= 100.0:
        raise _bad("weight (percent of tenants, 0..100) is required", "weight")
    return weight


def _is_json(request: Request) -> bool:
    content_type = request.headers.get(b"content-type", b"")
    return content_type.split(b";")[0].strip().lower() == _JSON


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise _bad("the body is not valid JSON", "body") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", "body")
    return body


def _field(request: Request, body: dict[str, Any] | None, name: str) -> str | None:
    """``name`` from the JSON body, else the ``x-headway-<name>`` header."""
    if body is not None and name in body:
        value = body[name]
        if value is not None and not isinstance(value, str):
            raise _bad(f"{name} must be a string", name)
        return None if value is None else value.strip()  # as the header: blank is no reason
    header = request.headers.get(b"x-headway-" + name.encode())
    return None if header is None else header.decode("utf-8", "replace").strip()


def _text_body(request: Request) -> str:
    """A config sent as the raw request body."""
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the config must be UTF-8 text", "body") from None


def _why_and_who(request: Request, body: dict[str, Any] | None, default: str) -> tuple[str, str]:
    """A write's message (required, or ``default``) and author, from headers or JSON."""
    message = _field(request, body, "message") or default
    if not message:
        raise _bad(
            "say why: an 'x-headway-message' header (or 'message' in JSON) is required",
            "message",
        )
    return message, _field(request, body, "author") or DEFAULT_AUTHOR


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(message, param=param, code="invalid_parameter", reason="invalid_parameter")


def _json(status: int, payload: Any) -> Response:
    return Response(status, orjson.dumps(payload), content_type=_JSON)
