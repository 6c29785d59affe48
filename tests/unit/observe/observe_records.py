"""A finished request as a plain record, for the tests of what reads outcomes in batches (the
metrics tally, the access log): the fields the gateway's Observation carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Done:
    """An Outcome as the gateway's Observation carries it."""

    route: str
    model: str | None
    tenant: str | None
    status: int
    reason: str
    latency: float
    prompt: int | None = None
    completion: int | None = None
    generation: float = 0.0
    endpoint: str | None = None
    ttft: float | None = None
    stream: bool = False
    request_id: str | None = None
    attributes: Mapping[str, object] | None = field(default_factory=dict)
    trace_id: str | None = None
    stamps: list[float] | None = None
