"""Tenants: who may call, how much, at what priority. Keys are hashed as they are validated,
so a loaded config (and anything that logs or diffs it) never holds a plaintext key."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_serializer,
)

from headway.core import Priority

from ._base import Section
from ._secrets import HASH_PREFIX, normalize_key

__all__ = ["PriorityName", "TenantConfig"]


def _parse_priority(value: Any) -> Priority:
    if isinstance(value, bool) or not isinstance(value, str | int | Priority):
        raise ValueError("expected one of sheddable, default, critical")
    return Priority.parse(value)


#: A ``Priority`` written by name in the file ('sheddable' | 'default' | 'critical').
PriorityName = Annotated[
    Priority,
    BeforeValidator(_parse_priority),
    PlainSerializer(lambda p: p.name.lower(), return_type=str),
    WithJsonSchema({"type": "string", "enum": [p.name.lower() for p in Priority]}),
]


class TenantConfig(Section):
    """A caller identified by API key, with its priority, quotas and allowed models."""

    name: str = Field(min_length=1)
    """Tenant name, shown in logs and metrics."""
    keys: tuple[Annotated[str, AfterValidator(normalize_key)], ...] = Field(min_length=1)
    """API keys: plaintext (hashed at load, never kept) or 'sha256:<hex>'; '${ENV}' works.
    Once loaded these are SHA-256 hex digests (see headway.config.hash_key)."""
    priority: PriorityName = Field(default="default", validate_default=True)
    """Admission priority under overload: 'sheddable' goes first, 'critical' last."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute (null: unlimited)."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens per minute, prompt plus completion (null: unlimited)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once (null: unlimited)."""
    models: tuple[str, ...] = Field(default=("*",), min_length=1)
    """Public model names this tenant may use; ['*'] allows all."""

    @field_serializer("keys")
    def _dump_keys(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        # Written back in the file's hashed form, so a dump re-validates to the same digests.
        return tuple(HASH_PREFIX + k for k in keys)

    def allows(self, model: str) -> bool:
        """Whether this tenant may use the public model ``model``."""
        return "*" in self.models or model in self.models
