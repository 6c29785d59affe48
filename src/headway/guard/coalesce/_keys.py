"""Default keys for decorated functions: a call is identified by the function and its arguments.

Guarantees: two calls get equal keys only if they call the same decorated function with equal
positional arguments and equal keyword arguments (in any order); a call whose arguments are not
hashable gets ``None`` (not coalesced, not cached) instead of an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class Invoke:
    """Adapts ``fn(*args, **kwargs)`` to the one-request service shape ``(args, kwargs)``.

    Its identity also tags keys, so one guard decorating two functions never mixes their calls.
    """

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn

    def __call__(self, request: tuple[tuple[Any, ...], dict[str, Any]]) -> Awaitable[Any]:
        args, kwargs = request
        return self.fn(*args, **kwargs)


def call_key(tag: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable | None:
    """The key of ``fn(*args, **kwargs)``, or ``None`` when an argument is unhashable."""
    key: Hashable = (tag, args, frozenset(kwargs.items())) if kwargs else (tag, args)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def missing_key(request: object) -> Hashable:
    """Stands in for ``key`` when none was given: only the decorator can derive one."""
    raise TypeError(
        "this guard was built without key=; pass key=lambda request: ... to use it as a layer "
        "or with call(), or use it as a decorator (which keys on the arguments)"
    )
