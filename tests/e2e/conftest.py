"""The gateway fixtures of the integration tests, for end-to-end tests too."""

from __future__ import annotations

from integration.gateway.conftest import BASE_CONFIG, Running, make_config, start_gateway

__all__ = ["BASE_CONFIG", "Running", "make_config", "start_gateway"]
