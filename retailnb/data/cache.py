"""An on-disk image cache: decode once into a file, then read batches, so memory does not grow with the data.

:func:`retailnb.data.images.decode_images` holds a whole collection in memory, which is what a small set
wants and what a retail collection of a few hundred thousand images cannot afford. :func:`cached_images`
decodes the same pixels, in bounded chunks, into one file of fixed-size uint8 records and returns a
:class:`DiskImages`, which indexes like the in-memory (N, 3, S, S) tensor (an image, a slice or a list of
rows gives a tensor) but reads only the rows asked for.

The file is a plain ``.npy`` array of shape (N, 3, S, S), so ``np.load(path, mmap_mode="r")`` maps it for
any other reader. :class:`DiskImages` itself reads rows with positional reads (``os.preadv``) rather than
through a memory map: every mapped page a process touches counts in its resident memory until unmapped,
so a mapped epoch over the whole file would grow the process to the file's size, which is exactly what
the cache exists to avoid. Read pages stay in the kernel's page cache, shared and reclaimable.

The file is named by :func:`cache_key`, a hash of the images' bytes and the size: a changed image or
another size is another file, so a stale cache is never read. It is written atomically
(:func:`retailnb.util.atomic.atomic_write`), so an interrupted write leaves only a temporary that the next
write removes. It lives outside every DVC output (``.cache/images`` in the folder the stage runs in,
ignored by git and DVC): it is a speed-up that can be deleted at any time, not an artefact. Processes
that ask for the same file at once (the ranks of a ``torchrun`` stage, two stages) build it once: the
others wait on its lock and read it.

:class:`DiskArray` shows the same file as the (N, S, S, 3) numpy array ``decode_images`` returns, for
readers of that layout (the probe data of :mod:`retailnb.evaluation.quickprobe`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retailnb.util.atomic import atomic_write
from retailnb.data.images import DEFAULT_MIN_SIZE, PathLike, decode_images
from retailnb.util.locks import exclusive, lock_path

log = logging.getLogger(__name__)

CACHE_DIR = Path(".cache") / "images"
"""Where :func:`cached_images` keeps its files, relative to the folder the stage runs in."""

CHUNK_BYTES = 64 * 2**20
"""Decoded bytes held in memory at once while a cache is built: the bound on its resident memory."""

BUILD_WAIT_S = 24 * 3600.0
"""How long :func:`cached_images` waits for another process building the same file (seconds)."""

_FORMAT = "retailnb-image-cache-1"  # part of every key: a change of layout invalidates old files

Index = int | slice | Sequence[int] | np.ndarray | torch.Tensor


def cache_key(paths: Sequence[PathLike], size: int, min_size: int = DEFAULT_MIN_SIZE) -> str:
    """A hash of the images' bytes (in order), the output size and the format, naming a cache file.

    Content rather than paths and times: DVC restores files with new times, and the synthetic generator
    renders other pixels under the same names when its parameters change.
    """
    digest = hashlib.blake2b(f"{_FORMAT}:{size}:{min_size}:{len(paths)}".encode(), digest_size=16)
    for p in paths:
        with open(p, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "blake2b").digest())
    return digest.hexdigest()


def chunk_length(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Images decoded at once: as many as fit ``chunk_bytes`` of (size, size, 3) uint8, at least one."""
    return max(1, chunk_bytes // (3 * size * size))


def build_cache(
    paths: Sequence[PathLike],
    size: int,
    destination: PathLike,
    *,
    workers: int | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    chunk_bytes: int = CHUNK_BYTES,
) -> Path:
    """Decode ``paths`` in chunks into the ``.npy`` file ``destination``, (N, 3, size, size) uint8, atomically.

    Memory holds one chunk of ``chunk_bytes`` at a time, whatever the number of images; the rows are
    written with plain writes, not through a map, so they do not stay resident either.

    Raises:
        ImageError: an image cannot be loaded; nothing is left at ``destination``.
    """
    started = time.perf_counter()
    step = chunk_length(size, chunk_bytes)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(paths), 3, size, size)}
    with atomic_write(destination, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for start in range(0, len(paths), step):
            block = decode_images(paths[start : start + step], size, workers=workers, min_size=min_size)
            fh.write(np.ascontiguousarray(block.transpose(0, 3, 1, 2)).data)
    seconds = time.perf_counter() - started
    log.info("cached %d images at %d px in %s (%.1fs)", len(paths), size, destination, seconds)
    return Path(destination)


def cached_images(
    paths: Sequence[PathLike],
    size: int,
    *,
    folder: PathLike = CACHE_DIR,
    workers: int | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    chunk_bytes: int = CHUNK_BYTES,
) -> DiskImages:
    """The images of ``paths`` at ``size`` from the cache in ``folder``, building it first if missing.

    One process builds a given file: the build holds the file's lock (:func:`retailnb.util.locks.exclusive`),
    and a process that finds it missing takes the lock, looks again and reads what the holder wrote (the lock
    file is removed with the lock held, so the folder keeps only caches and dead writers' temporaries). So the
    processes of a ``torchrun`` stage (``compute.devices > 1``), or two stages started at once, decode the
    images once, whether or not a process group exists; the lock is released when its holder dies.
    """
    path = Path(folder) / f"{cache_key(paths, size, min_size)}.npy"
    if not path.is_file():
        with exclusive(path, timeout=BUILD_WAIT_S):
            try:
                if not path.is_file():  # another process may have built it while this one waited
                    build_cache(paths, size, path, workers=workers, min_size=min_size, chunk_bytes=chunk_bytes)
            finally:
                # removed while held, so only the cache is left: a waiter holds the old lock and then finds
                # the file; a newcomer finds the file before it locks (after a failed build, a waiter and a
                # newcomer may both build: wasted work, not a wrong file, each writes its own temporary)
                with contextlib.suppress(OSError):
                    lock_path(path).unlink()
    return DiskImages(path)


class DiskImages:
    """uint8 (N, 3, S, S) images in a cache file, indexed like the tensor they would be in memory.

    ``images[i]`` is a (3, S, S) tensor, ``images[a:b]`` and ``images[rows]`` a (B, 3, S, S) tensor, read
    from the file when asked; :meth:`select` and :func:`concat_rows` make views over other rows of the same
    file without reading. Picklable (DataLoader workers reopen the file), and positional reads share no
    file offset, so forked workers may read at once.

    Args:
        path: a file written by :func:`build_cache`.
        rows: the file's rows this view shows, in order; None for all of them.
    """

    def __init__(self, path: PathLike, rows: np.ndarray | None = None) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            np.lib.format.read_magic(fh)  # build_cache writes format 1.0
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            self._offset = fh.tell()
        if dtype != np.uint8 or len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.path}: not an image cache (dtype {dtype}, shape {shape})")
        self._stored = int(shape[0])
        self._image_shape: tuple[int, int, int] = (3, int(shape[2]), int(shape[3]))
        self._record = 3 * int(shape[2]) * int(shape[3])
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._fd: int | None = None
        self._pid = -1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self._image_shape)

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return self._stored if self.rows is None else len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _file(self) -> int:
        """This process's descriptor of the file (a forked child opens its own)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _stored_rows(self, index: Index) -> np.ndarray:
        """The file rows of ``index`` (a slice or a list of this view's rows)."""
        if isinstance(index, slice):
            mine = np.arange(len(self))[index]
        else:
            mine = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
            if mine.size and (mine.min() < -len(self) or mine.max() >= len(self)):
                raise IndexError(f"row out of range for {len(self)} images")
            mine = mine % max(len(self), 1)
        return mine if self.rows is None else self.rows[mine]

    def read(self, stored: np.ndarray) -> np.ndarray:
        """File rows ``stored`` as a (B, 3, S, S) array; consecutive rows are read in one call."""
        out = np.empty((len(stored), *self._image_shape), dtype=np.uint8)
        fd, i = self._file(), 0
        while i < len(stored):
            j = i + 1
            while j < len(stored) and stored[j] == stored[j - 1] + 1:
                j += 1
            want = (j - i) * self._record
            got = os.preadv(fd, [out[i:j].reshape(-1).data], self._offset + int(stored[i]) * self._record)
            if got != want:
                raise OSError(f"{self.path}: truncated image cache (read {got} of {want} bytes)")
            i = j
        return out

    def __getitem__(self, index: Index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0):
            return torch.from_numpy(self.read(self._stored_rows([int(index)])))[0]
        return torch.from_numpy(self.read(self._stored_rows(index)))

    def select(self, index: Index) -> DiskImages:
        """A view of rows ``index`` of this view, reading nothing."""
        return DiskImages(self.path, self._stored_rows(index))

    def fingerprint(self) -> str:
        """Identifies the images of this view: the file (named by content) and its rows."""
        rows = np.arange(self._stored) if self.rows is None else self.rows
        return f"{self.path.name}:{hashlib.blake2b(rows.tobytes(), digest_size=16).hexdigest()}"


def concat_rows(first: DiskImages, second: DiskImages) -> DiskImages:
    """The rows of ``first`` then those of ``second``, two views of one cache file.

    Raises:
        ValueError: they are views of different files.
    """
    if first.path != second.path:
        raise ValueError(f"cannot join views of two cache files: {first.path} and {second.path}")
    return DiskImages(first.path, np.concatenate([first._stored_rows(slice(None)), second._stored_rows(slice(None))]))


class DiskArray:
    """The images of a :class:`DiskImages` as the (N, S, S, 3) uint8 numpy array that
    :func:`retailnb.data.images.decode_images` returns, read from the cache file when indexed.

    ``images[i]`` is an (S, S, 3) array and ``images[a:b]``, ``images[rows]`` and ``images[mask]`` (a boolean
    array of length N) a (B, S, S, 3) array, the same bytes as the in-memory array; :meth:`select` makes a
    view of other rows without reading, and :attr:`chw` is the underlying (N, 3, S, S) :class:`DiskImages`
    for readers that take it (batched feature extraction, training datasets).
    """

    def __init__(self, chw: DiskImages) -> None:
        self.chw = chw

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n, c, h, w = self.chw.shape
        return (n, h, w, c)

    @property
    def dtype(self) -> np.dtype[np.uint8]:
        return np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.chw)

    def _rows(self, index: Index) -> Index:
        """``index`` with a boolean mask turned into the rows where it holds."""
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.cpu().numpy()
        elif isinstance(index, (list, tuple)) and index and all(isinstance(v, (bool, np.bool_)) for v in index):
            index = np.asarray(index, dtype=bool)
        if isinstance(index, np.ndarray) and index.dtype == np.bool_:
            if index.shape != (len(self),):
                raise IndexError(f"boolean index of shape {index.shape} for {len(self)} images")
            return np.flatnonzero(index)
        return index

    def __getitem__(self, index: Index) -> np.ndarray:
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0):
            return np.ascontiguousarray(self.chw[int(index)].numpy().transpose(1, 2, 0))
        return np.ascontiguousarray(self.chw[self._rows(index)].numpy().transpose(0, 2, 3, 1))

    def select(self, index: Index) -> DiskArray:
        """A view of rows ``index`` (or of a boolean mask) of this view, reading nothing."""
        return DiskArray(self.chw.select(self._rows(index)))


def take_rows(images: np.ndarray | DiskArray, rows: Index) -> np.ndarray | DiskArray:
    """Rows ``rows`` (or a boolean mask) of decoded images: a copy of an in-memory array, a view of the
    on-disk cache (nothing read), so that callers need not ask which one they hold."""
    return images.select(rows) if isinstance(images, DiskArray) else images[rows]
