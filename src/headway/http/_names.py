"""Lower-cased header names, from a bounded cache: a dict lookup per header, not a copy.

Every header of every request and answer is looked up by its lower-cased name. ``bytes.lower``
is a method call that allocates a new object, and the dict the header then goes into hashes
that new object again. The names a server meets are few (the same dozen on every request), so
they are lowered once and the cached object, its hash already computed, is handed out again.
The cache holds at most :data:`MAX_NAMES` names of at most :data:`MAX_NAME_BYTES` bytes each:
a client that sends endless new names only stops being cached, it never grows memory.
"""

from __future__ import annotations

from typing import Final

__all__ = ["lowered"]

#: Our choice: far more distinct names than any real traffic has, and at most 64 KiB held.
MAX_NAMES: Final = 1024
MAX_NAME_BYTES: Final = 64

_LOWERED: Final[dict[bytes, bytes]] = {}


def lowered(name: bytes) -> bytes:
    """``name.lower()``."""
    cached = _LOWERED.get(name)
    if cached is not None:
        return cached
    low = name.lower()
    if len(_LOWERED) < MAX_NAMES and len(name) <= MAX_NAME_BYTES:
        _LOWERED[bytes(name)] = low  # bytes(): a subclass instance must not be kept as a key
    return low
