"""Reliability primitives for any asyncio service: each usable alone and as a layer in a Stack."""
