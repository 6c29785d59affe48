"""The config's JSON Schema, for editors (e.g. yaml-language-server) and external checks."""

from __future__ import annotations

from typing import Any

from ._root import GatewayConfig

__all__ = ["config_json_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the YAML file ``GatewayConfig`` reads."""
    schema = GatewayConfig.model_json_schema(mode="validation")
    return {"$schema": _DIALECT, **schema}
