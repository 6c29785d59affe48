"""Headway: one front door for LLM traffic, and the reliability primitives behind it.

Import the primitives from :mod:`headway.guard` and the contracts from :mod:`headway.core`.
"""

__version__ = "0.1.0"
