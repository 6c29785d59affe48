"""Fallback to an alternative service (another model, another provider) on chosen errors."""

from ._fallback import Fallback

__all__ = ["Fallback"]
