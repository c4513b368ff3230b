"""An artifact is a file plus the content hash that the stage cache keys on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size_bytes: int

    @classmethod
    def of(cls, path: Path) -> Artifact:
        path = Path(path)
        return cls(path=path, sha256=sha256_file(path), size_bytes=path.stat().st_size)
