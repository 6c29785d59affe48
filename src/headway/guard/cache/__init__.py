"""Response caching: TTL with stale-while-revalidate, LRU bounds, coalesced misses."""

from ._cache import DEFAULT_MAX_ENTRIES, Cache

__all__ = ["DEFAULT_MAX_ENTRIES", "Cache"]
