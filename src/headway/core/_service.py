"""Services, layers and stacks: a request is a value, a service an async function, a guard a
function from service to service (Finagle's "your server as a function", tower's Service/Layer).

A :class:`Stack` lists layers in the order a request meets them, top to bottom, so a stack reads
like the path a request takes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar

from mypy_extensions import mypyc_attr

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Req_contra = TypeVar("Req_contra", contravariant=True)
Resp_co = TypeVar("Resp_co", covariant=True)
T = TypeVar("T")
P = ParamSpec("P")


class Service(Protocol[Req_contra, Resp_co]):
    """Anything awaitable-callable with one request: plain ``async def f(req)`` qualifies."""

    def __call__(self, request: Req_contra, /) -> Awaitable[Resp_co]: ...


class Layer(Protocol):
    """Turns a service into a guarded service of the same shape."""

    def wrap(self, inner: Service[Req, Resp]) -> Service[Req, Resp]: ...


# Compiled (headway._native), yet the base of every guard a user writes.
@mypyc_attr(allow_interpreted_subclasses=True)
class Guard:
    """Base of every primitive: one mechanism (``call``) and three ways to use it.

    - as a :class:`Layer`: ``guard.wrap(service)``;
    - as a decorator of any async function: ``@guard``;
    - directly: ``await guard.call(service, request)``.

    Subclasses implement :meth:`call`; those whose logic fits around a block also offer
    ``async with guard:``.
    """

    #: Kind of primitive, used as the ``kind`` of hook events (``"breaker"``, ``"retry"``...).
    kind: str = "guard"

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        raise NotImplementedError

    def wrap(self, inner: Service[Req, Resp]) -> Service[Req, Resp]:
        return _Guarded(self, inner)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        call = self.call
        invoke = _Invocation(fn)

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(invoke, (args, kwargs))

        return guarded


class _Guarded(Service[Req, Resp]):
    """A service wrapped by one guard; kept tiny because it is on every call's path."""

    def __init__(self, guard: Guard, inner: Service[Req, Resp]) -> None:
        self.call = guard.call
        self.inner = inner

    def __call__(self, request: Req) -> Awaitable[Resp]:
        return self.call(self.inner, request)


class _Invocation:
    """Adapts ``fn(*args, **kwargs)`` to the one-argument service shape, for decorators."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn

    def __call__(self, request: tuple[tuple[Any, ...], dict[str, Any]]) -> Awaitable[Any]:
        args, kwargs = request
        return self.fn(*args, **kwargs)


class Stack:
    """Layers composed in the order a request meets them: ``Stack(a, b, c).wrap(s)`` calls
    ``a``, which calls ``b``, which calls ``c``, which calls ``s``."""

    def __init__(self, *layers: Layer) -> None:
        self.layers: tuple[Layer, ...] = layers

    def wrap(self, inner: Service[Req, Resp]) -> Service[Req, Resp]:
        service = inner
        for layer in reversed(self.layers):
            service = layer.wrap(service)
        return service

    def then(self, *layers: Layer) -> Stack:
        """A new stack with ``layers`` added below (closer to the service than) these."""
        return Stack(*self.layers, *layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return "Stack(" + ", ".join(type(layer).__name__ for layer in self.layers) + ")"
