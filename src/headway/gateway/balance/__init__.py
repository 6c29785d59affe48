"""Load balancing and endpoint health for the gateway's upstream pools.

An :class:`EndpointSet` (alias :class:`Balancer`) holds a pool's :class:`Endpoint` objects,
ejects outliers (:class:`OutlierPolicy`, Envoy-style), enters panic mode when too few are
healthy, and asks a strategy to pick one per request:

- :class:`LeastOutstandingP2C` (default): power of two choices on requests in flight;
- :class:`PeakEwma`: power of two choices on peak-EWMA latency x (outstanding + 1);
- :class:`PrefixAffinity`: consistent hashing with bounded loads on a conversation/user key or
  :func:`prompt_prefix_key`, so a model server's KV cache is reused.

Pure logic: no I/O, an injectable clock and random generator, so every decision is testable.
"""

from ._affinity import DEFAULT_LOAD_FACTOR, DEFAULT_VNODES_PER_WEIGHT, PrefixAffinity
from ._endpoint import DEFAULT_DECAY_SECONDS, DEFAULT_RTT_SECONDS, Endpoint
from ._key import DEFAULT_PREFIX_CHARS, prompt_prefix_key
from ._outlier import OutlierPolicy
from ._p2c import LeastOutstandingP2C, PeakEwma
from ._ring import HashRing, hash64
from ._set import DEFAULT_PANIC_THRESHOLD, Balancer, EndpointSet
from ._strategy import Strategy

__all__ = [
    "DEFAULT_DECAY_SECONDS",
    "DEFAULT_LOAD_FACTOR",
    "DEFAULT_PANIC_THRESHOLD",
    "DEFAULT_PREFIX_CHARS",
    "DEFAULT_RTT_SECONDS",
    "DEFAULT_VNODES_PER_WEIGHT",
    "Balancer",
    "Endpoint",
    "EndpointSet",
    "HashRing",
    "LeastOutstandingP2C",
    "OutlierPolicy",
    "PeakEwma",
    "PrefixAffinity",
    "Strategy",
    "hash64",
    "prompt_prefix_key",
]
