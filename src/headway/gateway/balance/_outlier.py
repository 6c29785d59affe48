"""Outlier ejection policy: when to take an endpoint out of rotation, for how long, how many.

Envoy-style consecutive-failure ejection (Envoy ``outlier_detection.proto`` and
``arch_overview/upstream/outlier``; Headway's reference
/work/shared/reference/overload-and-resilience.md, §1.9 "Outlier detection" and §4.2 "A bad
endpoint (1 of 3)"). The rules, all pure functions of the policy and the counts given:

- an endpoint is ejected inline when its ``consecutive_failures``-th failure in a row arrives
  (a success resets the run); the caller classifies failures (5xx, connect errors, timeouts);
- it stays out ``base_ejection_seconds * times_ejected`` (capped at ``max_ejection_seconds``)
  plus an optional uniform jitter in ``[0, max_ejection_jitter)``, and is readmitted at exactly
  that time;
- ``times_ejected`` decays by one for every full ``decay_interval`` the endpoint has spent
  admitted since its last ejection ended (Envoy decrements the multiplier once per healthy
  sweep ``interval``), so a host that stays good long enough starts again from the base time;
- at most ``max_ejection_percent`` of the pool's endpoints are ejected at once, but a pool of
  two or more endpoints may always eject one (Envoy always allows one host).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutlierPolicy:
    """How an endpoint set ejects failing endpoints; plain numbers the lead maps from config."""

    # Envoy consecutive_5xx default: 5, enforced at 100% (outlier_detection.proto; ref §1.9).
    consecutive_failures: int = 5
    # Envoy base_ejection_time default: 30 s, multiplied by the times ejected (ref §1.9, §4.2).
    base_ejection_seconds: float = 30.0
    # Envoy max_ejection_time default: 300 s (outlier_detection.proto; ref §1.9).
    max_ejection_seconds: float = 300.0
    # Headway's brief: 50%. Envoy's max_ejection_percent default is 10%, but it always ejects at
    # least one host, which for a 2-3 endpoint LLM pool gives the same answer (ref §4.2 "Caps").
    max_ejection_percent: float = 50.0
    # Envoy max_ejection_time_jitter default: 0 s; the reference (§4.2) recommends adding some.
    max_ejection_jitter: float = 0.0
    # Envoy outlier sweep interval default: 10 s; the multiplier decays by one per healthy one.
    decay_interval: float = 10.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be >= 1")
        if self.base_ejection_seconds <= 0 or self.max_ejection_seconds <= 0:
            raise ValueError("ejection times must be > 0")
        if not 0.0 <= self.max_ejection_percent <= 100.0:
            raise ValueError("max_ejection_percent must be within [0, 100]")
        if self.max_ejection_jitter < 0 or self.decay_interval <= 0:
            raise ValueError("max_ejection_jitter must be >= 0 and decay_interval > 0")

    def ejection_seconds(self, times_ejected: int) -> float:
        """How long the ``times_ejected``-th ejection lasts, before jitter."""
        return min(self.base_ejection_seconds * times_ejected, self.max_ejection_seconds)

    def decayed_times(self, times_ejected: int, admitted_for: float) -> int:
        """``times_ejected`` after ``admitted_for`` seconds back in rotation."""
        if times_ejected <= 0 or admitted_for < self.decay_interval:
            return max(times_ejected, 0)
        return max(0, times_ejected - int(admitted_for // self.decay_interval))

    def may_eject(self, ejected_now: int, pool_size: int) -> bool:
        """Whether one more ejection keeps within ``max_ejection_percent`` of ``pool_size``."""
        if pool_size < 2:
            return False
        if ejected_now == 0:
            return True
        return (ejected_now + 1) * 100.0 <= self.max_ejection_percent * pool_size
