"""Exclusive locks on files that are replaced by load-modify-save: no edit is silently lost.

Two processes that each load a bundle, change it and save it would both succeed, and the later save
would drop the earlier change. :func:`exclusive` serialises such edits: whoever holds the lock of a
file does the whole load-modify-save, and the other waits (up to a timeout) and then loads the result.
The lock is an OS lock (``flock``, via the ``filelock`` library) on a small file beside the target,
``.<name>.lock``: the OS releases it when its holder dies, so a killed process never leaves the file
locked. The lock file is empty; it is usually removed on release, and one left behind (after a kill,
or by a release while another process waited) is harmless and reused. Readers take no lock: the target is always replaced atomically (:mod:`retailnb.util.atomic`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from retailnb.util.atomic import ensure_parent

class BusyError(RuntimeError):
    """Another process kept a file locked for longer than the caller would wait."""


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of ``path``: ``.<name>.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str], timeout: float) -> Iterator[Path]:
    """Hold the exclusive lock of ``path`` for the block (waiting up to ``timeout`` seconds for it).

    Args:
        path: the file about to be loaded, changed and replaced; missing parent folders are created.
        timeout: seconds to wait for another holder; 0 fails at once if the file is locked. No default:
            each caller says how long its kind of edit may wait (a bundle edit, the command line's
            ``--wait``; a build of the image cache, a day).

    Yields:
        ``path`` as a Path.

    Raises:
        BusyError: another process held the lock for ``timeout`` seconds (the message names ``path``).
        NotADirectoryError: a parent of ``path`` is a file.
    """
    path = ensure_parent(path)
    lock = FileLock(lock_path(path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise BusyError(f"{path}: busy, another retailnb command is changing it (waited {timeout:g} s); "
                        "try again when it has finished") from None
    try:
        yield path
    finally:
        lock.release()
