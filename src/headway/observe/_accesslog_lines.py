"""The access log's reference formatter: one JSON line per request, a dict serialised by orjson.

What ``_speedups.format_lines`` writes in C, byte for byte, and what formats a batch the C
formatter refuses (a value of an unexpected type). Kept apart from ``_accesslog.py``, which is
compiled (``headway._native``): compiled code checks the declared types of what it reads, and
this one must take whatever a record holds.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import orjson

from ._labels import OTHER
from ._outcome import Logged
from ._trail import decision_reasons

# Our choice: long enough for any real model id (``org/name:tag@rev``); no spaces, no prose.
MAX_MODEL_CHARS = 100
_MODEL_ID = re.compile(rf"[A-Za-z0-9._:/@+\-]{{1,{MAX_MODEL_CHARS}}}")
_dumps = orjson.dumps
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE


def _lines(ts: dt.datetime, outcomes: Sequence[Logged], models: frozenset[str] | None) -> bytes:
    """The reference formatting: a dict per line, serialised by orjson (measured faster than a
    bytes template or orjson's dataclass path)."""
    lines = []
    for o in outcomes:
        model = o.model
        if model is not None:
            if models is not None:
                if model not in models:
                    model = OTHER
            elif _MODEL_ID.fullmatch(model) is None:
                model = "invalid"
        ttft = o.ttft
        attributes = o.attributes
        line = {
            "ts": ts,
            "request_id": o.request_id,
            "tenant": o.tenant,
            "route": o.route,
            "model": model,
            "endpoint": o.endpoint,
            "status": o.status,
            "reason": o.reason,
            # round(x) / 1000: the same milliseconds as round(ms, 3), at a third of the cost.
            "latency_ms": round(o.latency * 1e6) / 1000.0,
            "ttft_ms": None if ttft is None else round(ttft * 1e6) / 1000.0,
            "prompt_tokens": o.prompt,
            "completion_tokens": o.completion,
            "stream": o.stream,
            "decisions": decision_reasons(attributes) if attributes else [],
        }
        trace_id = o.trace_id
        if trace_id is not None:
            line["trace_id"] = trace_id
        lines.append(_dumps(line, option=_OPTIONS))
    return lines[0] if len(lines) == 1 else b"".join(lines)
