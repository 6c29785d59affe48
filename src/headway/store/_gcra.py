"""GCRA, the generic cell rate algorithm (ITU-T I.371 virtual scheduling), as one pure step.

What it is for: the one rate-limit rule every :class:`~headway.store.LimitStore` applies
atomically, in Python for the memory store and transliterated to Lua for Redis
(``_redis_script.py``); both must agree with :func:`gcra_step`, which the tests hold them to.

State is one float per key, the *theoretical arrival time* (TAT): when the key would be back to
a full burst if nothing more arrived. With emission interval ``T = period / rate`` (seconds per
cell) and tolerance ``tau = burst * T``, a call of ``cost`` cells at time ``now`` is::

    tat     = max(stored_tat, now)        # a TAT in the past is a fresh key
    new_tat = tat + cost * T
    admit iff new_tat - tau <= now        # else retry_after = new_tat - tau - now
    on admit: stored_tat = new_tat

Token-bucket equivalence: a bucket of capacity ``burst`` refilled at ``1/T`` tokens per second
holds ``burst - (tat - now) / T`` tokens at ``now``; "enough tokens for ``cost``" is exactly
``new_tat - tau <= now``. So GCRA *is* a token bucket, stored as one timestamp instead of a
(level, last refill) pair, with no refill task and no per-call division. Over any window of
``w`` seconds it admits at most ``burst + w / T`` cells.

Guarantees: a ``cost`` larger than ``burst`` can never be admitted (no wait would help): it is
rejected with ``retry_after = inf`` and the state is unchanged. A forced step (``force=True``,
for charging actual usage after the fact or refunding an over-estimate) always applies: a
charge may push the key into debt (later calls wait it off), a refund never makes a key better
than fresh.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple


class Decision(NamedTuple):
    """The outcome of one GCRA step for one key."""

    #: Whether the cost was admitted (and charged).
    allowed: bool
    #: Seconds until this cost would be admitted; 0 when admitted, ``inf`` when it never can
    #: (cost > burst).
    retry_after: float
    #: Cells that could be admitted right now after this decision (0 when in debt).
    remaining: float
    #: Seconds until the key is back to a full burst (0 means it is fresh).
    reset_after: float


def gcra_step(
    tat: float | None,
    now: float,
    emission_interval: float,
    tolerance: float,
    cost: float,
    force: bool = False,
) -> tuple[float, Decision]:
    """Apply one call of ``cost`` cells at ``now`` to a key whose stored TAT is ``tat``.

    Returns the TAT to store (unchanged on rejection; ``<= now`` means the key may be dropped)
    and the decision. ``force`` applies the cost unconditionally (negative cost refunds).
    """
    if tat is None or tat < now:
        tat = now
    increment = cost * emission_interval
    new_tat = tat + increment
    if force:
        if new_tat < now:
            new_tat = now
        return new_tat, _admitted(new_tat, now, emission_interval, tolerance)
    allow_at = new_tat - tolerance
    if allow_at > now:
        retry_after = math.inf if increment > tolerance else allow_at - now
        remaining = (tolerance - (tat - now)) / emission_interval
        return tat, _new(Decision, (False, retry_after, max(remaining, 0.0), tat - now))
    return new_tat, _admitted(new_tat, now, emission_interval, tolerance)


def _admitted(new_tat: float, now: float, emission_interval: float, tolerance: float) -> Decision:
    reset_after = new_tat - now
    remaining = (tolerance - reset_after) / emission_interval
    return _new(Decision, (True, 0.0, remaining if remaining > 0.0 else 0.0, reset_after))


# Building the tuple directly skips NamedTuple's Python-level __new__ (about 2x cheaper).
_new: Final = tuple.__new__
