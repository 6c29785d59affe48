"""The last known good config on local disk, so a gateway starts and serves while the
control-plane store is unreachable.

The file is the version's YAML text verbatim under one comment line naming the version and the
text's SHA-256, so it is itself a valid config (``headway serve FILE`` works) and a torn or
hand-edited copy is detected instead of served. Writes are atomic: a temporary file in the same
directory, fsync, rename over the old one, fsync the directory (the rename is what makes a crash
leave either the old file or the new one, never half of each).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from headway.store import ConfigVersion, sha256_text

__all__ = ["DEFAULT_LAST_GOOD", "LastKnownGood", "SavedConfig"]

#: The last known good file, relative to the working directory, where ``headway config apply``
#: writes it and ``headway serve --store`` reads it unless told otherwise.
DEFAULT_LAST_GOOD = "headway-last-good.yaml"

_HEADER = "# headway last-known-good: version={number} sha256={sha256}\n"
_HEADER_RE = re.compile(r"# headway last-known-good: version=(\d+) sha256=([0-9a-f]{64})\n")


@dataclass(frozen=True, slots=True)
class SavedConfig:
    """What the file holds: which version, and its text."""

    number: int
    sha256: str
    yaml_text: str


class LastKnownGood:
    """One file path holding the latest config known to be valid."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def write(self, version: ConfigVersion) -> None:
        """Replace the file with ``version`` atomically (``OSError`` if the disk refuses)."""
        text = _HEADER.format(number=version.number, sha256=version.sha256) + version.yaml_text
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self) -> SavedConfig | None:
        """The saved config, ``None`` if there is no file; ``ValueError`` if it is not one this
        class wrote or its text no longer matches its checksum."""
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return None
        header, _, body = text.partition("\n")
        match = _HEADER_RE.fullmatch(header + "\n")
        if match is None:
            raise ValueError(f"{self.path} is not a Headway last-known-good file (bad first line)")
        number, sha256 = int(match.group(1)), match.group(2)
        if sha256_text(body) != sha256:
            raise ValueError(f"{self.path} was modified or truncated (checksum mismatch)")
        return SavedConfig(number, sha256, body)
