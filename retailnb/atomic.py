"""Atomic file writes: readers, and a DVC stage interrupted halfway, see the old file or the new one.

Every artefact the project writes (manifests, pseudolabel tables, feature caches, checkpoints) goes
through :func:`atomic_write`: the content is written to a temporary file in the destination's folder,
flushed to disk, and renamed over the destination (``os.replace`` is atomic within one file system).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kw: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success it replaces ``path``, on error it is removed.

    Args:
        path: the destination; missing parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        open_kw: passed to ``open`` (for example ``newline=""`` for CSV).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; an artefact should be readable
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); return the path."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)
