"""The request context: deadline, priority and tenant, carried implicitly through contextvars.

Guarantees: a request has exactly one absolute deadline at any point; nesting a deadline can only
make it earlier; leaving a scope restores the outer context exactly. The context travels with
asyncio tasks (contextvars are copied into child tasks), so hedges and background work see it.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Final

from ._clock import REAL_CLOCK, Clock


class Priority(IntEnum):
    """How much a request matters when capacity is short; higher is more important.

    Named after Google SRE's criticality classes (SRE book ch. 21): ``SHEDDABLE`` is batch or
    prefetch traffic that can always be retried later, ``DEFAULT`` is ordinary interactive
    traffic, ``CRITICAL`` is traffic whose failure a user sees at once.
    """

    SHEDDABLE = 0
    DEFAULT = 1
    CRITICAL = 2

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        """Accept a member, its int value or its (case-insensitive) name."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        member = cls.__members__.get(value.strip().upper())
        if member is None:
            names = ", ".join(m.name.lower() for m in cls)
            raise ValueError(f"unknown priority {value!r}; expected one of {names}")
        return member


# init=False: a written-out __init__ is compiled (headway._native) and called natively, where
# the one dataclass writes at run time is Python (a request makes one Context).
@dataclass(init=False)
class Context:
    """What every guard may want to know about the request in flight."""

    #: Absolute deadline on the clock's scale (``clock.now()``); ``inf`` means none.
    deadline: float = math.inf
    priority: Priority = Priority.DEFAULT
    tenant: str | None = None
    request_id: str | None = None
    #: Free-form request attributes (routing keys, decisions taken) shared along the request.
    attributes: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        deadline: float = math.inf,
        priority: Priority = Priority.DEFAULT,
        tenant: str | None = None,
        request_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.deadline = deadline
        self.priority = priority
        self.tenant = tenant
        self.request_id = request_id
        self.attributes = {} if attributes is None else attributes

    def remaining(self, clock: Clock = REAL_CLOCK) -> float:
        """Seconds left before the deadline (may be negative; ``inf`` when there is none)."""
        return self.deadline - clock.now()

    def evolve(self, **changes: Any) -> Context:
        """A copy with ``changes``; ``attributes`` stays shared because it is the same request."""
        return replace(self, **changes)


class _NoRequestAttributes(dict[str, Any]):
    """The attributes of "no request in flight": refuses writes, so nothing recorded outside a
    request can leak into every later one."""

    def __setitem__(self, key: str, value: Any) -> None:
        raise RuntimeError(
            "no request in flight: enter request_context() before recording attributes"
        )

    def setdefault(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("no request in flight")


_EMPTY: Final = Context(attributes=_NoRequestAttributes())
_current: Final[contextvars.ContextVar[Context]] = contextvars.ContextVar("headway_context")


def current_context() -> Context:
    """The context of the request in flight, or an empty one (no deadline, default priority)."""
    return _current.get(_EMPTY)


def annotate(key: str, value: Any) -> None:
    """Append ``value`` to the current request's ``attributes[key]`` list: the decision trail
    (``fallback``, ``retried``, ``shed``...) that access logs and traces report. Outside a
    request it does nothing."""
    attributes = _current.get(_EMPTY).attributes
    if attributes.__class__ is _NoRequestAttributes:
        return
    trail = attributes.get(key)
    if isinstance(trail, list):
        trail.append(value)
    else:
        attributes[key] = [value]


def set_context(ctx: Context) -> contextvars.Token[Context]:
    """Make ``ctx`` current; pass the token to :func:`reset_context` to restore the previous one."""
    return _current.set(ctx)


def reset_context(token: contextvars.Token[Context]) -> None:
    _current.reset(token)


@contextmanager
def request_context(
    *,
    deadline: float | None = None,
    timeout: float | None = None,
    priority: Priority | str | int | None = None,
    tenant: str | None = None,
    request_id: str | None = None,
    clock: Clock = REAL_CLOCK,
    **attributes: Any,
) -> Iterator[Context]:
    """Enter a request scope derived from the current one.

    A nested deadline (absolute ``deadline`` or relative ``timeout``) only ever moves the
    deadline earlier: an inner scope cannot grant itself more time than its caller has.
    """
    outer = _current.get(_EMPTY)
    new_deadline = outer.deadline
    if deadline is not None:
        new_deadline = min(new_deadline, deadline)
    if timeout is not None:
        new_deadline = min(new_deadline, clock.now() + timeout)
    # A new top-level request gets its own attributes; a nested scope shares its request's.
    shared = outer.attributes
    own = attributes or shared.__class__ is _NoRequestAttributes
    ctx = Context(
        deadline=new_deadline,
        priority=outer.priority if priority is None else Priority.parse(priority),
        tenant=outer.tenant if tenant is None else tenant,
        request_id=outer.request_id if request_id is None else request_id,
        attributes={**shared, **attributes} if own else shared,
    )
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
