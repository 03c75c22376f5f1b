"""SHA-256 of files: the version of the data or weights they hold (provenance, caches, checks on load)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

PathLike = str | os.PathLike[str]


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: Sequence[PathLike]) -> str:
    """One hex SHA-256 over the bytes of several files, in the order given: the version of a data set."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
