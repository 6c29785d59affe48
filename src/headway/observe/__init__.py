"""Observability: Prometheus metrics, latency sketches, the structured access log, the
per-second traffic timeline and the admin dashboard page.

Everything hangs off objects the gateway owns (a private metrics registry, hooks, a log), never
process-global state, so two gateways in one process never mix numbers.
"""

from ._accesslog import AccessLog
from ._accesslog_lines import MAX_MODEL_CHARS
from ._buckets import INTER_TOKEN_BUCKETS, LLM_BUCKETS, TOKENS_PER_SECOND_BUCKETS
from ._collector import SnapshotCollector
from ._dashboard import dashboard_page
from ._duration import format_duration, parse_duration
from ._guard_hooks import MetricsHooks
from ._labels import OTHER, AllowList
from ._metrics import ROUTES, GatewayMetrics, StreamTimer
from ._multiproc import WorkerExposition, merge_expositions
from ._outcome import Counted, Logged
from ._sketch import DDSketch
from ._slo import (
    WORKBOOK_ALERTS,
    AlertState,
    BurnAlert,
    SloBook,
    SloSpec,
    SloStatus,
    WindowBurn,
    burn_rate,
    slos_json,
)
from ._slo_metrics import SloCollector
from ._slo_rules import prometheus_rules, rule_caveats
from ._timeline import REFUSAL_REASONS, Sample, Timeline, Totals, bucket_quantile, read_totals
from ._tracing import AttemptSpan, GatewayTracer, RequestTrace, TracingHooks, TracingUnavailable
from ._trail import DECISIONS, TrailHooks, decision_for, decision_reasons
from ._window import SlidingSketch

__all__ = [
    "DECISIONS",
    "INTER_TOKEN_BUCKETS",
    "LLM_BUCKETS",
    "MAX_MODEL_CHARS",
    "OTHER",
    "REFUSAL_REASONS",
    "ROUTES",
    "TOKENS_PER_SECOND_BUCKETS",
    "WORKBOOK_ALERTS",
    "AccessLog",
    "AlertState",
    "AllowList",
    "AttemptSpan",
    "BurnAlert",
    "Counted",
    "DDSketch",
    "GatewayMetrics",
    "GatewayTracer",
    "Logged",
    "MetricsHooks",
    "RequestTrace",
    "Sample",
    "SlidingSketch",
    "SloBook",
    "SloCollector",
    "SloSpec",
    "SloStatus",
    "SnapshotCollector",
    "StreamTimer",
    "Timeline",
    "Totals",
    "TracingHooks",
    "TracingUnavailable",
    "TrailHooks",
    "WindowBurn",
    "WorkerExposition",
    "bucket_quantile",
    "burn_rate",
    "dashboard_page",
    "decision_for",
    "decision_reasons",
    "format_duration",
    "merge_expositions",
    "parse_duration",
    "prometheus_rules",
    "read_totals",
    "rule_caveats",
    "slos_json",
]
