"""The gateway data path: an OpenAI-compatible front door routing to pools of model servers.

``Gateway(config)`` owns the API and admin servers, the in-process simulated upstreams and the
live runtime; ``headway serve`` runs one (see ``_serve``). Balancing lives in
:mod:`headway.gateway.balance`.
"""

from ._app import Gateway

__all__ = ["Gateway"]
