"""Hedged requests (send a second attempt when the first is slow; the first answer wins), bounded
by a retry budget, with a rotating-window latency percentile for the delay."""

from ._hedge import Hedge
from ._latency import RotatingPercentile

__all__ = ["Hedge", "RotatingPercentile"]
