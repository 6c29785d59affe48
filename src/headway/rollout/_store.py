"""Where a rollout's state document lives between restarts: the smallest interface that works.

``RolloutStateStore`` needs only ``load`` and ``save`` of a JSON object by rollout name; the
control-plane stores in ``headway.store`` (SQLite, PostgreSQL: ``StateStore``) satisfy it as
they are. A save must replace the whole document atomically (a reader sees the old or the new
one, never a mix) and be durable when it returns: the controller saves after every decision,
so a restart resumes from the last decision. ``MemoryRolloutStateStore`` is for tests and
single-process use; it copies documents in and out as JSON, so nothing can alias the
controller's live state and anything that would not survive a real store fails here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["MemoryRolloutStateStore", "RolloutStateStore"]


class RolloutStateStore(Protocol):
    """JSON documents by rollout name."""

    async def load(self, name: str) -> dict[str, Any] | None:
        """The last document saved under ``name``, or ``None``."""
        ...

    async def save(self, name: str, doc: Mapping[str, Any]) -> None:
        """Replace the document under ``name`` atomically and durably."""
        ...


class MemoryRolloutStateStore:
    """In-process documents, serialised through JSON like a real store would."""

    def __init__(self) -> None:
        self._docs: dict[str, str] = {}
        self.saves = 0

    async def load(self, name: str) -> dict[str, Any] | None:
        text = self._docs.get(name)
        if text is None:
            return None
        doc: dict[str, Any] = json.loads(text)
        return doc

    async def save(self, name: str, doc: Mapping[str, Any]) -> None:
        # allow_nan=False: a real JSON column (PostgreSQL jsonb) rejects NaN and Infinity too.
        self._docs[name] = json.dumps(doc, allow_nan=False)
        self.saves += 1
