"""The base every config section derives from: immutable, strict about unknown fields.

Frozen so a loaded config can be shared by every worker task and swapped atomically on reload;
``extra="forbid"`` so a misspelt field is an error naming it instead of a silently ignored
setting; docstrings become JSON Schema descriptions that editors show on hover.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A config section."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
        str_strip_whitespace=False,
    )
