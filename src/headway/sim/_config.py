"""What the simulated model server is like: speed, capacity, and which faults it injects.

``SimConfig`` is fixed for a server's life; ``FaultConfig`` is the part tests and chaos
scenarios flip at runtime (``/sim/faults``). Timing defaults are plausible for a mid-size model
on one GPU, chosen so a quick manual run feels like a real endpoint; tests override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["FaultConfig", "SimConfig"]


@dataclass(slots=True)
class FaultConfig:
    """Per-request fault probabilities (0..1), drawn in a fixed order from a seeded RNG."""

    error_rate: float = 0.0
    error_status: int = 500
    # Sent as Retry-After on 429/503 error answers.
    error_retry_after: float | None = None
    spike_rate: float = 0.0
    spike_seconds: float = 0.0
    hang_rate: float = 0.0
    reset_rate: float = 0.0
    stall_rate: float = 0.0
    stall_after_chunks: int = 1
    stall_seconds: float = 0.0
    malformed_rate: float = 0.0
    malformed_after_chunks: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def updated(self, changes: dict[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied; raises ``ValueError`` naming a bad field."""
        current = self.to_dict()
        for name, value in changes.items():
            if name not in current:
                raise ValueError(f"unknown fault field: {name}")
            expected = type(current[name]) if current[name] is not None else float
            if isinstance(value, bool) or not isinstance(value, int | float):
                if not (value is None and name == "error_retry_after"):
                    raise ValueError(f"{name} must be a number")
            elif expected is int and not isinstance(value, int):
                raise ValueError(f"{name} must be an integer")
            if name.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"{name} must not be negative")
            current[name] = float(value) if expected is float and value is not None else value
        return FaultConfig(**current)


@dataclass(frozen=True, slots=True)
class SimConfig:
    # Models listed by GET /v1/models; any other name is served too unless strict_models.
    models: tuple[str, ...] = ("sim-small", "sim-large")
    strict_models: bool = False
    # Time to first token = ttft_base + ttft_per_prompt_token * prompt tokens (prefill).
    ttft_base: float = 0.05
    ttft_per_prompt_token: float = 0.0001
    # Decode speed of one sequence, tokens per second.
    tokens_per_second: float = 50.0
    # Sequences decoded at once; later requests wait in a FIFO queue, so latency grows with
    # load as on a real server. max_queue (None = unbounded, like vLLM) answers 429 beyond it.
    capacity: int = 8
    max_queue: int | None = None
    # Output length when the request sets no max_tokens.
    default_output_tokens: int = 16
    embedding_dims: int = 64
    # Seed of the fault RNG, so a test's fault sequence is reproducible.
    seed: int = 0
    faults: FaultConfig = field(default_factory=FaultConfig)
