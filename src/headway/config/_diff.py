"""What changed between two configs, in words an operator reads in a reload log.

Entries of a named list (``pools``, ``models``, ``tenants``, ``sims``) are matched by name, so
reordering is not a change and an edit inside one shows as ``pools['small'].timeouts.ttft``.
Secrets never appear: a changed ``api_key`` shows as ``(secret changed)``, keys as counts.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import SecretStr

from ._root import GatewayConfig

__all__ = ["diff_configs"]


def diff_configs(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """One line per changed leaf, ``path: old -> new``, plus ``path: added``/``removed``.

    Lists of scalars (fallbacks, allowed models) and lists whose length changed are shown
    whole; secrets are masked.
    """
    changes: list[str] = []
    _diff(old.model_dump(), new.model_dump(), "", changes)
    return changes


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in new:
            child = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{child}: added")
            else:
                _diff(old[key], new[key], child, out)
        out.extend(
            f"{path}.{key}: removed" if path else f"{key}: removed" for key in old if key not in new
        )
    elif _named_lists(old, new):
        before = {item["name"]: item for item in old}
        after = {item["name"]: item for item in new}
        for name, item in after.items():
            child = f"{path}[{name!r}]"
            if name in before:
                _diff(before[name], item, child, out)
            else:
                out.append(f"{child}: added")
        out.extend(f"{path}[{name!r}]: removed" for name in before if name not in after)
    elif _same_shape_records(old, new):
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            _diff(before, after, f"{path}[{index}]", out)
    elif old != new:
        if path.endswith(".keys"):
            out.append(f"{path}: changed ({len(old)} -> {len(new)} keys)")
        elif isinstance(old, SecretStr) or isinstance(new, SecretStr):
            out.append(f"{path}: (secret changed)")
        else:
            out.append(f"{path}: {_show(old)} -> {_show(new)}")


def _named_lists(old: Any, new: Any) -> bool:
    if not (isinstance(old, tuple | list) and isinstance(new, tuple | list)) or not (old or new):
        return False
    return all(isinstance(item, dict) and "name" in item for item in (*old, *new))


def _same_shape_records(old: Any, new: Any) -> bool:
    """Unnamed lists of mappings (endpoints) of equal length are compared entry by entry."""
    if not (isinstance(old, tuple | list) and isinstance(new, tuple | list)):
        return False
    return len(old) == len(new) and all(isinstance(item, dict) for item in (*old, *new))


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return str(value)
