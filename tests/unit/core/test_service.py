from __future__ import annotations

from typing import Any

from headway.core import Guard, Service, Stack


class Tag(Guard):
    """Records the order in which requests meet guards."""

    def __init__(self, name: str, trail: list[str]) -> None:
        self.name = name
        self.trail = trail

    async def call(self, inner: Service[Any, Any], request: Any) -> Any:
        self.trail.append(f"{self.name}>")
        result = await inner(request)
        self.trail.append(f"<{self.name}")
        return result


async def test_stack_reads_in_the_order_requests_meet_layers() -> None:
    trail: list[str] = []

    async def service(x: int) -> int:
        trail.append("service")
        return x + 1

    stack = Stack(Tag("a", trail), Tag("b", trail)).then(Tag("c", trail))
    assert len(stack) == 3
    assert repr(stack) == "Stack(Tag, Tag, Tag)"
    assert await stack.wrap(service)(1) == 2
    assert trail == ["a>", "b>", "c>", "service", "<c", "<b", "<a"]


async def test_guard_decorates_any_async_function() -> None:
    trail: list[str] = []

    @Tag("d", trail)
    async def add(x: int, *, y: int) -> int:
        return x + y

    assert await add(1, y=2) == 3
    assert add.__name__ == "add"
    assert trail == ["d>", "<d"]
