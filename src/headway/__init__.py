"""Headway: one front door for LLM traffic, and the reliability primitives behind it.

Import the primitives from :mod:`headway.guard` and the contracts from :mod:`headway.core`.
"""

__version__ = "0.1.0"

from headway._native import guard as _guard

_guard()  # before any compiled module is imported: never run a build older than its source
