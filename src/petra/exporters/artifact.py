"""An artifact is a file plus the content hash that the stage cache keys on.

An OpenVINO IR is two files, the graph (``.xml``) and its weights (``.bin``): its artifact
points at the ``.xml`` and its hash and size cover both, so that a size ratio never forgets
the weights and two IRs with the same graph but other weights never share a hash.
"""

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


def artifact_files(path: Path) -> list[Path]:
    """Every file the model at ``path`` consists of: itself, and a weights file of the same name
    beside it (an OpenVINO IR's .bin beside its .xml)."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    return [path, weights] if weights != path and weights.is_file() else [path]


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size_bytes: int

    @classmethod
    def of(cls, path: Path) -> Artifact:
        files = artifact_files(path)
        digest = sha256_file(files[0]) if len(files) == 1 else hashlib.sha256(
            "".join(sha256_file(f) for f in files).encode()).hexdigest()
        return cls(path=Path(path), sha256=digest, size_bytes=sum(f.stat().st_size for f in files))

    @property
    def files(self) -> list[Path]:
        return artifact_files(self.path)
