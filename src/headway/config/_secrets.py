"""Secrets in config: ``${NAME}`` references to the environment, and API keys kept only hashed.

Guarantees:

- Every string value in the file (not mapping keys) may reference environment variables as
  ``${NAME}``, alone or inside a longer string; ``$${`` is a literal ``${``. Every missing
  variable is reported with the field path and the variable's name, all at once.
- A tenant key is turned into its SHA-256 hex digest the moment it is validated, so a loaded
  config never holds a plaintext key; ``hash_key`` is the one function that maps a presented key
  to what the config holds, for the constant-time comparison at request time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigIssue, format_path

__all__ = ["HASH_PREFIX", "expand_env", "hash_key", "normalize_key"]

#: How a key already hashed is written in the file: ``sha256:<64 hex digits>``.
HASH_PREFIX = "sha256:"

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# A YAML file with aliases may describe a tree far larger than the text; refuse absurd ones.
_MAX_NODES = 1_000_000


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key (what a loaded config holds in ``keys``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def normalize_key(entry: str) -> str:
    """A ``keys`` entry as stored: plaintext is hashed; ``sha256:<hex>`` is taken as is.

    Raises ``ValueError`` (without echoing the entry: it may be a secret) when malformed.
    """
    if entry.startswith(HASH_PREFIX):
        digest = entry[len(HASH_PREFIX) :]
        if not _HEX64.fullmatch(digest):
            raise ValueError("a hashed key must be 'sha256:' followed by 64 hex digits")
        return digest.lower()
    if not entry:
        raise ValueError("an API key must not be empty")
    return hash_key(entry)


def expand_env(data: Any, env: Mapping[str, str], issues: list[ConfigIssue]) -> Any:
    """A copy of ``data`` with ``${NAME}`` replaced in every string; misses go to ``issues``."""
    budget = [_MAX_NODES]
    return _expand(data, env, issues, [], budget)


def _expand(
    value: Any,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
    path: list[str | int],
    budget: list[int],
) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:
            issues.append(ConfigIssue("", "config too large (more than 1,000,000 values)"))
        return value
    if isinstance(value, str):
        return _substitute(value, env, issues, path) if "$" in value else value
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            path.append(key if isinstance(key, str) else str(key))
            out[key] = _expand(item, env, issues, path, budget)
            path.pop()
        return out
    if isinstance(value, list):
        items: list[Any] = []
        for index, item in enumerate(value):
            path.append(index)
            items.append(_expand(item, env, issues, path, budget))
            path.pop()
        return items
    return value


def _substitute(
    text: str, env: Mapping[str, str], issues: list[ConfigIssue], path: list[str | int]
) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:  # "$${" escapes a literal "${"
            return "${"
        found = env.get(name)
        if found is None:
            issues.append(
                ConfigIssue(format_path(path), f"environment variable '{name}' is not set")
            )
            return match.group(0)  # left as written; the issue says why
        return found

    return _REF.sub(replace, text)
