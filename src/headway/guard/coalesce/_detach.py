"""Contexts for work that outlives the caller who started it (shared calls, background refresh).

Guarantees: the returned context carries the caller's request context (priority, tenant,
request id, attributes) but *no deadline*, so one caller's deadline can never cancel work that
other callers (or nobody in particular) are waiting for. Whoever waits bounds its own wait; the
work is bounded by being cancelled when nobody waits any more (or by a timeout layer below).
"""

from __future__ import annotations

import contextvars
import math

from headway.core import current_context, set_context


def detached_context() -> contextvars.Context:
    """A copy of the current contextvars context with the request deadline removed."""
    ctx = contextvars.copy_context()
    request = current_context()
    if request.deadline != math.inf:
        ctx.run(set_context, request.evolve(deadline=math.inf))
    return ctx
