"""Request keys a config may name: a fixed source ("user", "tenant", ...) or ``header:<name>``.

Shared by every section that picks a request attribute to hash on (prefix affinity, canary
stickiness), so they accept and normalise header names the same way.
"""

from __future__ import annotations

import re

__all__ = ["check_header_name", "check_key_source"]

# An HTTP field name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def check_header_name(name: str) -> str:
    """``name`` lower-cased (headers arrive lower-cased), or ``ValueError`` if not a token."""
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    return name.lower()


def check_key_source(value: str, plain: tuple[str, ...]) -> str:
    """``value`` if one of ``plain``, ``header:<lower-cased name>`` for a header, else an error
    listing what is accepted."""
    if value in plain:
        return value
    if value.startswith("header:"):
        return "header:" + check_header_name(value[len("header:") :])
    choices = ", ".join(repr(choice) for choice in plain)
    raise ValueError(f"expected {choices} or 'header:<name>', got {value!r}")
