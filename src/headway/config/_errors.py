"""What a config problem looks like: one ``ConfigIssue`` per mistake, all raised together.

Guarantee: loading never stops at the first mistake it can recover from. Every problem found in
one pass (syntax aside: a YAML file that does not parse has nothing further to check) is a
``ConfigIssue`` with the dotted field path an operator can find in the file
(``pools[0].endpoints[1].url``), and ``ConfigError`` carries them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigIssue", "format_path"]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake: where (``path``, and the YAML line/column when known) and what."""

    #: Dotted path with ``[i]`` indices, e.g. ``models[1].pool``; ``""`` for the whole file.
    path: str
    message: str
    #: 1-based position in the YAML source, when the path could be traced back to it.
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None and self.path else ""
        return f"{self.path}: {self.message}{where}" if self.path else self.message


class ConfigError(Exception):
    """A config was rejected; ``errors`` lists every issue, ``str()`` shows one per line."""

    def __init__(self, errors: Sequence[ConfigIssue], *, source: str = "<string>") -> None:
        self.errors: list[ConfigIssue] = list(errors)
        self.source = source
        super().__init__("\n".join(str(issue) for issue in self.errors))


def format_path(parts: Iterable[str | int]) -> str:
    """``("pools", 0, "endpoints", 1, "url")`` -> ``pools[0].endpoints[1].url``."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out:
            out.append(f".{part}")
        else:
            out.append(part)
    return "".join(out)
