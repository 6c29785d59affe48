"""The gateway's HTTP surface as an OpenAPI 3.1 document, served at ``/openapi.json``.

It describes what Headway itself guarantees: the routes, the API-key security scheme, the
fields the gateway reads (everything else in a body is passed through to the upstream
unchanged, hence ``additionalProperties: true``), and every error status with its
OpenAI-format body and ``Retry-After`` where it applies. Built once at import.
"""

from __future__ import annotations

from typing import Any

import orjson

from headway import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (whole seconds, at least 1).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "retry-after-ms": {
        "description": "The same wait in milliseconds (read first by the OpenAI SDKs).",
        "schema": {"type": "integer", "minimum": 1},
    },
}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR}},
    }
    if retry_after:
        response["headers"] = _RETRY_AFTER
    return response


_PROXY_ERRORS = {
    "400": _error("Invalid request body; `error.param` names the field."),
    "401": _error("Missing, malformed or unknown API key."),
    "403": _error("The API key may not use this model."),
    "404": _error("Unknown model (`error.code` = `model_not_found`)."),
    "413": _error("Request body over `server.limits.max_body_bytes`."),
    "429": _error("A tenant quota (requests, tokens or concurrency).", retry_after=True),
    "502": _error("The upstream failed (after retries and fallbacks)."),
    "503": _error("Shed, overloaded or circuit open.", retry_after=True),
    "504": _error("The request deadline passed."),
}


def _proxy(summary: str, schema: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"apiKey": []}],
            "parameters": [
                {
                    "name": "x-headway-timeout",
                    "in": "header",
                    "required": False,
                    "description": "Request deadline in seconds (capped by server.max_timeout); "
                    "x-stainless-timeout, sent by the OpenAI SDKs, is read too.",
                    "schema": {"type": "number", "exclusiveMinimum": 0},
                },
                {
                    "name": "x-headway-priority",
                    "in": "header",
                    "required": False,
                    "description": "Lower this request's priority below the tenant's.",
                    "schema": {"enum": ["sheddable", "default", "critical"]},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                },
            },
            "responses": {
                "200": {
                    "description": "The upstream's answer, relayed unchanged (JSON, or an SSE "
                    "stream when `stream` is true).",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_PROXY_ERRORS,
            },
        }
    }


def _probe(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "503": {"description": "Not ready"},
            },
        }
    }


_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"type": "string"}, "content": {}},
    "additionalProperties": True,
}
_COMMON = {
    "model": {"type": "string", "description": "A public model name of this gateway."},
    "stream": {"type": "boolean"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "user": {"type": "string"},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Headway gateway",
        "version": __version__,
        "description": "An OpenAI-compatible front door for LLM traffic.",
    },
    "paths": {
        "/v1/chat/completions": _proxy("Chat completion (stream or not)", "ChatRequest"),
        "/v1/completions": _proxy("Text completion (stream or not)", "CompletionRequest"),
        "/v1/embeddings": _proxy("Embeddings", "EmbeddingRequest"),
        "/v1/models": {
            "get": {
                "summary": "The models this API key may use",
                "security": [{"apiKey": []}],
                "responses": {
                    "200": {
                        "description": "OpenAI-format model list",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": _PROXY_ERRORS["401"],
                },
            }
        },
        "/healthz": _probe("Liveness"),
        "/readyz": _probe("Readiness: config loaded, upstreams known"),
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document"}},
            }
        },
    },
    "components": {
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "code": {"type": ["string", "null"]},
                            "param": {"type": ["string", "null"]},
                        },
                    }
                },
            },
            "ChatRequest": {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    **_COMMON,
                    "messages": {"type": "array", "items": _MESSAGE},
                },
                "additionalProperties": True,
            },
            "CompletionRequest": {
                "type": "object",
                "required": ["model", "prompt"],
                "properties": {**_COMMON, "prompt": {}},
                "additionalProperties": True,
            },
            "EmbeddingRequest": {
                "type": "object",
                "required": ["model", "input"],
                "properties": {**_COMMON, "input": {}},
                "additionalProperties": True,
            },
        },
    },
}

DOCUMENT_JSON = orjson.dumps(DOCUMENT)
