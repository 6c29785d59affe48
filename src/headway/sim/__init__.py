"""A simulated OpenAI-compatible model server with runtime fault injection.

Serves ``/v1/chat/completions`` (stream and not), ``/v1/completions``, ``/v1/embeddings`` and
``/v1/models`` like a real endpoint: time to first token grows with the prompt, tokens arrive
at a set rate, and a fixed capacity with a FIFO queue makes latency rise with load. Faults
(errors, latency spikes, hangs, resets, stalls mid-stream, malformed chunks) are drawn from a
seeded RNG and switched at runtime with ``GET/POST/DELETE /sim/faults`` or ``SimServer.faults``.
"""

from ._app import SimApp
from ._config import FaultConfig, SimConfig
from ._faults import FaultPlan, Faults
from ._server import SimServer

__all__ = ["FaultConfig", "FaultPlan", "Faults", "SimApp", "SimConfig", "SimServer"]
