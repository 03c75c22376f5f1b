"""Atomic file writes: readers, and a DVC stage interrupted halfway, see the old file or the new one.

Every artefact the project writes (manifests, pseudolabel tables, feature caches, checkpoints, bundles)
goes through :func:`atomic_write`: the content is written to a temporary file in the destination's
folder, flushed to disk, and renamed over the destination (``os.replace`` is atomic within one file
system).

A process killed mid-write (SIGKILL, power loss) cannot remove its temporary file, so temporaries are
named to be recognised later: ``.<name>.<pid>.<random>.tmp`` beside the file ``<name>`` (and
``.<name>.tmp-<pid>-<random>`` for a folder built whole, see :func:`temporary_folder`). The next write
of the same destination removes those whose process is no longer running
(:func:`remove_stale_temporaries`). A process id is only meaningful on the machine that wrote it: on a
folder shared between machines, a temporary of a live process elsewhere looks stale.

Errors about the destination name the destination, never the temporary file, and a parent that is a
file is a :class:`NotADirectoryError` naming the parent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (ours always does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def _stale_pattern(name: str) -> re.Pattern[str]:
    """Names of the temporaries of ``name``: ``.<name>.<pid>.<random>.tmp`` and ``.<name>.tmp-<pid>-<random>``."""
    return re.compile(rf"^\.{re.escape(name)}\.(?:(\d+)\.[^/]+\.tmp|tmp-(\d+)-[^/]+)$")


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that killed writers of ``path`` left beside it; return what was removed.

    A temporary is stale when the process whose id is in its name no longer runs. Temporaries of
    running processes (a concurrent writer) are left alone.
    """
    path = Path(path)
    pattern = _stale_pattern(path.name)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or _pid_alive(int(match.group(1) or match.group(2))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _blocking_parent(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists but is not a folder, if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def ensure_parent(path: str | os.PathLike[str]) -> Path:
    """Create the missing parent folders of ``path``; return ``path`` as a Path.

    Raises:
        NotADirectoryError: a parent of ``path`` is a file (the message names it and ``path``).
        OSError: another reason the folders cannot be made; the error names ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = _blocking_parent(path) or path.parent
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write here: {blocking} is a file, not a folder",
                                 str(path)) from None
    except OSError as err:
        raise type(err)(err.errno, f"cannot create its folder {path.parent} ({err.strerror})", str(path)) from None
    return path


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` restated about ``path`` (the user's destination) rather than a temporary file."""
    if isinstance(err, IsADirectoryError) or (path.is_dir() and not path.is_symlink()):
        return IsADirectoryError(errno.EISDIR, "is a folder, expected a file name", str(path))
    strerror = err.strerror or str(err)
    return type(err)(err.errno, f"cannot write ({strerror})", str(path))


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail now, not after an hour of work, if :func:`atomic_write` could not write ``path``.

    Creates the missing parent folders and a temporary file beside ``path`` (removed at once), so the
    check is the real one, including for root, whom ``os.access`` does not stop.

    Raises:
        NotADirectoryError, IsADirectoryError, OSError: as :func:`atomic_write`, naming ``path``.
    """
    path = ensure_parent(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file name", str(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    os.close(fd)
    os.unlink(tmp)
    return path


def temporary_folder(path: str | os.PathLike[str]) -> Path:
    """A new empty folder beside ``path``, named so that :func:`remove_stale_temporaries` recognises it.

    Build a folder there and rename it over ``path`` when complete; stale ones are removed first.
    """
    path = ensure_parent(path)
    remove_stale_temporaries(path)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-"))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kw: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success it replaces ``path``, on error it is removed.

    Stale temporaries of ``path`` left by killed writers are removed first.

    Args:
        path: the destination; missing parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        open_kw: passed to ``open`` (for example ``newline=""`` for CSV).

    Yields:
        The open temporary file.

    Raises:
        NotADirectoryError: a parent of ``path`` is a file.
        IsADirectoryError: ``path`` is a folder.
        OSError: ``path`` cannot be written (permissions, full disk); the error names ``path``.
    """
    path = ensure_parent(path)
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    try:
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; an artefact should be readable
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _naming(err, path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); return the path."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)
