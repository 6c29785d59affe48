"""Observability: Prometheus metrics, latency sketches and the structured access log.

Everything hangs off objects the gateway owns (a private metrics registry, hooks, a log), never
process-global state, so two gateways in one process never mix numbers.
"""

from ._accesslog import MAX_MODEL_CHARS, AccessLog
from ._buckets import INTER_TOKEN_BUCKETS, LLM_BUCKETS, TOKENS_PER_SECOND_BUCKETS
from ._collector import SnapshotCollector
from ._guard_hooks import MetricsHooks
from ._labels import OTHER, AllowList
from ._metrics import ROUTES, GatewayMetrics, StreamTimer
from ._multiproc import WorkerExposition, merge_expositions
from ._sketch import DDSketch
from ._trail import DECISIONS, TrailHooks, decision_for, decision_reasons
from ._window import SlidingSketch

__all__ = [
    "DECISIONS",
    "INTER_TOKEN_BUCKETS",
    "LLM_BUCKETS",
    "MAX_MODEL_CHARS",
    "OTHER",
    "ROUTES",
    "TOKENS_PER_SECOND_BUCKETS",
    "AccessLog",
    "AllowList",
    "DDSketch",
    "GatewayMetrics",
    "MetricsHooks",
    "SlidingSketch",
    "SnapshotCollector",
    "StreamTimer",
    "TrailHooks",
    "WorkerExposition",
    "decision_for",
    "decision_reasons",
    "merge_expositions",
]
