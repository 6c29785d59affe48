"""AIMD: a loss-based concurrency limit (additive increase, multiplicative decrease).

Modelled on Netflix concurrency-limits ``AIMDLimit`` (HEAD 78a74b9). Netflix's README advises
loss-based AIMD on *clients* (a gateway calling upstreams is one), delay-based Gradient2 on
servers. Guarantees: the limit always lies in ``[min_limit, max_limit]``; it only grows while the
limit is actually being used (``inflight >= limit / 2``), so an idle period cannot inflate it.
"""

from __future__ import annotations

from ._listeners import LimitListeners, check_bounds


class AIMDLimit(LimitListeners):
    """Grow by one on each good sample under load; shrink by ``backoff_ratio`` on each drop."""

    def __init__(
        self,
        *,
        # Netflix AIMDLimit.Builder defaults: initialLimit 20, minLimit 20, maxLimit 200
        # (concurrency-limits HEAD 78a74b9). LLM calls are long and few, so callers of a single
        # model endpoint will usually want min_limit=1.
        initial_limit: int = 20,
        min_limit: int = 20,
        max_limit: int = 200,
        # Netflix AIMDLimit.Builder: backoffRatio 0.9, must lie in [0.5, 1.0).
        backoff_ratio: float = 0.9,
        # Netflix AIMDLimit DEFAULT_TIMEOUT: 5 s; a slower sample counts as a drop.
        timeout: float = 5.0,
    ) -> None:
        check_bounds(initial_limit, min_limit, max_limit)
        if not 0.5 <= backoff_ratio < 1.0:
            raise ValueError(f"backoff_ratio must lie in [0.5, 1.0), got {backoff_ratio}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        super().__init__(initial_limit)
        self._min = min_limit
        self._max = max_limit
        self._backoff_ratio = backoff_ratio
        self._timeout = timeout

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> None:
        limit = self._limit
        # Update rule (Netflix AIMDLimit._update):
        #   drop or rtt > timeout      -> limit = floor(limit * backoff_ratio)
        #   else if 2*inflight >= limit -> limit = limit + 1   (only grow a limit in use)
        #   limit = clamp(limit, min_limit, max_limit)
        if dropped or rtt > self._timeout:
            limit = int(limit * self._backoff_ratio)
        elif inflight * 2 >= limit:
            limit += 1
        else:
            return
        self._set_limit(min(self._max, max(self._min, limit)))

    def __repr__(self) -> str:
        return f"AIMDLimit(limit={self._limit})"
