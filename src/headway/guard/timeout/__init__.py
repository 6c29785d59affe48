"""Timeouts that respect the request deadline: ``Timeout(seconds)`` as a guard or ``async with``."""

from ._timeout import Timeout

__all__ = ["Timeout"]
