"""Request coalescing (singleflight): a burst of identical in-flight calls costs one call."""

from ._coalesce import Coalesce, SharedCallCancelled

__all__ = ["Coalesce", "SharedCallCancelled"]
