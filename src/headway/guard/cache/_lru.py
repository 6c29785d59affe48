"""Cache entries and the bounded LRU map that holds them (policy only: no tasks, no I/O).

Guarantees: an entry is *fresh* while ``now < fresh_until`` and *stale but servable* while
``now < stale_until`` (both instants themselves are past the window); the map never holds more
than ``max_entries`` entries, the least recently used one leaving first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class Entry:
    """A stored response and the two instants (clock seconds) at which it ages."""

    def __init__(self, value: Any, fresh_until: float, stale_until: float) -> None:
        self.value = value
        self.fresh_until = fresh_until
        self.stale_until = stale_until


def insert(entries: OrderedDict[Hashable, Entry], key: Hashable, entry: Entry, limit: int) -> int:
    """Store ``entry`` as the most recently used and evict down to ``limit``; returns evictions."""
    entries[key] = entry
    entries.move_to_end(key)
    evicted = 0
    while len(entries) > limit:
        entries.popitem(last=False)
        evicted += 1
    return evicted
