"""The mypyc build of the request path (``headway._native``): what it compiles, when it runs.

mypyc 2.4 (the pinned compiler) gets some Python wrong, silently, and these tests keep the
compiled modules clear of it. Each rule below was found with a minimal reproduction:

- an ``await`` that suspends inside an ``except`` or ``finally`` block re-raises the wrong
  exception (the last one handled, anywhere) or, when a compiled coroutine awaits a compiled
  coroutine and is cancelled, returns None or loops forever;
- ``async with`` is the same thing when ``__aexit__`` suspends (one that returns a finished
  awaitable, as :class:`~headway.core.DeadlineScope`'s does, is fine);
- ``raise error from cause`` drops the cause (``__cause__`` stays None);
- async generators are refused at build time.

So in a compiled module: no ``await``/``async for``/``async with`` inside a handler or a
``finally``; ``async with`` only on a line that says ``# aexit never waits`` (a claim the reader
checks); and ``raise chained(error, cause)`` instead of ``raise error from cause``. The cleanup
that must wait runs after the ``try`` statement, on an exception kept in a variable (see
``Gateway._proxy``).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import headway
from headway import _native

ROOT = Path(headway.__file__).resolve().parent.parent.parent


SAFE_WITH = "# aexit never waits"


def _violations(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    lines = source.splitlines()

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.handler: list[str] = []  # the handler or finally blocks we are inside

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.Lambda) -> None:
            outer, self.handler = self.handler, []  # a nested function runs elsewhere
            self.generic_visit(node)
            self.handler = outer

        visit_Lambda = visit_FunctionDef  # type: ignore[assignment]  # noqa: N815

        def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
            outer, self.handler = self.handler, []
            for child in ast.walk(node):
                if isinstance(child, ast.Yield | ast.YieldFrom):
                    found.append((child.lineno, "async generator"))
            self.generic_visit(node)
            self.handler = outer

        def visit_Try(self, node: ast.Try) -> None:
            for statement in [*node.body, *node.orelse]:
                self.visit(statement)
            for handler in node.handlers:
                self.handler.append("except")
                self.visit(handler)
                self.handler.pop()
            self.handler.append("finally")
            for statement in node.finalbody:
                self.visit(statement)
            self.handler.pop()

        visit_TryStar = visit_Try  # type: ignore[assignment]  # noqa: N815

        def _waits(self, node: ast.AST, what: str) -> None:
            if self.handler:
                found.append((node.lineno, f"{what} in {self.handler[-1]}"))
            self.generic_visit(node)

        def visit_Await(self, node: ast.Await) -> None:
            self._waits(node, "await")

        def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
            self._waits(node, "async for")

        def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
            if self.handler:
                found.append((node.lineno, f"async with in {self.handler[-1]}"))
            elif not lines[node.lineno - 1].rstrip().endswith(SAFE_WITH):
                found.append((node.lineno, "async with"))
            self.generic_visit(node)

        def visit_Raise(self, node: ast.Raise) -> None:
            if node.cause is not None:
                found.append((node.lineno, "raise ... from"))
            self.generic_visit(node)

    Visitor().visit(ast.parse(source))
    return found


def test_the_rule_checker_finds_each_kind_of_violation() -> None:
    source = """
async def f():
    try:
        await a()
    except E:
        await b()
        raise
    finally:
        async for x in c():
            pass
    async with d():
        pass
    raise X from Y
    async with scope:  # aexit never waits
        pass

async def g():
    yield 1

async def fine():
    try:
        await a()
    except E as error:
        kept = error
    def later():
        try:
            pass
        finally:
            return 1
    await b()
"""
    assert _violations(source) == [
        (6, "await in except"),
        (9, "async for in finally"),
        (11, "async with"),
        (13, "raise ... from"),
        (18, "async generator"),
    ]


@pytest.mark.parametrize("module", _native.COMPILED)
def test_compiled_modules_avoid_what_mypyc_gets_wrong(module: str) -> None:
    source = _native.source_path(module).read_text()
    assert _violations(source) == [], f"{module}: see this test module's docstring"


def test_every_compiled_module_exists_and_is_not_a_package() -> None:
    for module in _native.COMPILED:
        assert _native.source_path(module).is_file(), module


def _imported_from(env: dict[str, str], module: str) -> str:
    code = f"import headway, {module} as m, headway._native as n; print(n.NATIVE, m.__file__)"
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


def test_ci_runs_the_compiled_build() -> None:
    if not _native.NATIVE:
        if os.environ.get("CI"):
            pytest.fail("CI builds the mypyc modules (setup.py); none is running")
        pytest.skip("the mypyc build is not installed here (no C compiler or mypyc)")
    env = {k: v for k, v in os.environ.items() if k != _native.PURE_ENV}
    native, path = _imported_from(env, "headway.http._protocol").split()
    assert native == "True"
    assert path.endswith(".so")


def test_pure_python_on_request() -> None:
    env = {**os.environ, _native.PURE_ENV: "1"}
    native, path = _imported_from(env, "headway.http._protocol").split()
    assert native == "False"
    assert path.endswith("_protocol.py")


def test_a_stale_build_is_never_run() -> None:
    """A source edited after the build: the whole build is set aside, with a warning (made an
    error here, to see it), and every compiled module is imported from its source."""
    if not _native.NATIVE:
        pytest.skip("the mypyc build is not installed here")
    manifest = Path(_native.__file__).with_name(_native.MANIFEST)
    saved = manifest.read_text()
    record = json.loads(saved)
    size, mtime, _ = record["sources"]["http/_request.py"]
    record["sources"]["http/_request.py"] = [size + 1, mtime, "0" * 64]  # as if edited since
    try:
        manifest.write_text(json.dumps(record))
        assert _native.stale_sources() == ["http/_request.py"]
        env = {k: v for k, v in os.environ.items() if k != _native.PURE_ENV}
        out = _imported_from(env, "headway.http._protocol")
        assert "older than its sources (http/_request.py)" in out
    finally:
        manifest.write_text(saved)
    assert _native.stale_sources() == []


def test_a_touched_but_unchanged_source_still_counts_as_built() -> None:
    if not _native.NATIVE:
        pytest.skip("the mypyc build is not installed here")
    source = _native.source_path("headway.http._request")
    stat = source.stat()
    try:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert _native.stale_sources() == []  # the time moved, the digest did not
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
