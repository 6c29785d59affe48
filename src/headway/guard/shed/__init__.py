"""Priority admission and load shedding: a bounded, fair, delay-aware waiting room in front of a
concurrency limit (fixed or adaptive)."""

from ._codel import QueueDelayDetector
from ._queue import FairQueue, QueuedRequest
from ._shedder import REASONS, LoadShedder

__all__ = ["REASONS", "FairQueue", "LoadShedder", "QueueDelayDetector", "QueuedRequest"]
