"""Features of images under a bundle's backbone and preprocessing: decoded arrays, image files, product folders.

:func:`embed` runs the backbone on decoded images. :func:`embed_files` takes image files and folders,
as :func:`retailnb.bundle.predict.predict_files` and the command line do, decodes them at the bundle's
image size and embeds them in several threads, batch by batch, so decoding overlaps the backbone's work;
:func:`folder_features` embeds a ``FOLDER/<product>/<image>`` folder for the commands that fit a bundle
or enrol products into it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retailnb.bundle.choices import ON_ERROR
from retailnb.bundle.model import Bundle, EmbeddedFiles, PathLike
from retailnb.data.images import ImageError, decode_images, load_fitted
from retailnb.data.inputs import image_files, product_folders
from retailnb.models.inference import (
    autocast_dtype,
    borrowed_for_inference,
    extract_features,
    forward_batch,
    model_device,
)
from retailnb.util.hashing import files_sha256
from retailnb.util.parallel import chunks, default_workers


def embed(
    bundle: Bundle,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Features of uint8 images under the bundle's backbone and preprocessing.

    Args:
        bundle: the bundle.
        images: uint8 (N, S, S, 3) array, as :func:`retailnb.data.images.decode_images` returns at the
            bundle's image size S, or a (N, 3, S, S) tensor.
        batch_size: images per forward pass.
        device: where to run the backbone; defaults to where it is.
        precision: see :func:`retailnb.models.inference.extract_features`. fp32 by default: features
            computed now are fitted together with features stored earlier, so they should come from the
            same arithmetic.

    Returns:
        (N, D) float32 features.

    Raises:
        ValueError: the images are not uint8 RGB at the bundle's image size.
    """
    size = bundle.preprocessing.image_size
    spatial = tuple(images.shape[2:4]) if isinstance(images, torch.Tensor) else tuple(images.shape[1:3])
    if spatial != (size, size):
        raise ValueError(f"images must be {size}x{size} pixels (this bundle's image size), got {spatial}")
    if images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"images must be uint8 (0-255), got {images.dtype}")
    return extract_features(bundle.backbone, images, batch_size=batch_size, device=device,
                            transform=bundle.preprocessing.normalize, precision=precision)


def default_embed_workers(model: nn.Module) -> int:
    """Threads :func:`embed_files` runs by default: one per torch intra-op thread on CPU, else one per core.

    On CPU the cores torch may use are shared out as single-threaded forward passes (see
    :func:`embed_files`). On an accelerator the threads decode images while the device computes.
    """
    return torch.get_num_threads() if model_device(model).type == "cpu" else default_workers()


@contextlib.contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (unchanged when None), restoring the count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def embed_files(
    bundle: Bundle,
    images: Sequence[PathLike],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_error: str = "raise",
    precision: str = "fp32",
) -> EmbeddedFiles:
    """Features of image files and folders of images, decoded at the bundle's image size, batch by batch.

    Example::

        features, paths, failures = embed_files(bundle, ["shelf_crops/", "extra.jpg"])
        # features[i] is the (D,) feature of paths[i]

    Each of ``workers`` threads takes a batch of files, decodes it and runs the backbone on it, so
    decoding overlaps the backbone's work, and only ``workers`` batches of pixels are in memory at a
    time. Decoding small JPEGs holds the GIL for a small part of the time (see
    :mod:`retailnb.data.jpeg`) and torch releases it during every operation, so the threads run in
    parallel. On CPU, torch runs one intra-op thread per worker while this runs (the process-wide
    setting is restored afterwards): a small backbone uses two cores better as two single-threaded
    forward passes than as one two-threaded pass, which spends much of its time waiting at the end of
    each operation. On 2 cores, with ``mobilenetv3_small_100`` at 64 px, prediction from JPEG files
    then ran at about the speed of the bare two-threaded forward pass on decoded images, against half
    of it when decoding and the forward pass took turns (``benchmarks/bench_new_products.py``).

    Args:
        bundle: the bundle; its backbone runs where it is (see :func:`~retailnb.bundle.io.load_bundle`).
        images: image files (taken as they are) and folders (every image file below them, sorted), as
            :func:`~retailnb.bundle.predict.predict_files` and ``retailnb embed`` take them.
        batch_size: images per forward pass; every worker holds one batch of pixels and activations.
        workers: threads; None: :func:`default_embed_workers`. 1 decodes and embeds in turn, in this
            thread, with torch's threads left as they are.
        progress: called with the number of images of each finished batch (a progress bar's ``update``).
        on_error: what to do with an image that cannot be read (:data:`~retailnb.bundle.choices.ON_ERROR`):
            ``"raise"`` (the default) stops at the first, naming it (batches not yet started are
            cancelled); ``"skip"`` embeds the others and returns the errors in ``failures``. A batch with a
            bad file is then decoded again file by file, the others as fast as with ``"raise"``.
        precision: see :func:`embed`.

    Returns:
        ``(features, paths, failures)`` (:class:`~retailnb.bundle.model.EmbeddedFiles`): (N, D) float32
        features, the file of each row in the order given (a file named twice, under any spelling, once),
        and the files skipped.

    Raises:
        FileNotFoundError: an image file or folder does not exist.
        DatasetError: no images are given, or a folder holds no image file.
        ImageError: with ``"raise"``, an image cannot be read; the message names the file.
        ValueError: an unknown ``on_error``; ``batch_size`` or ``workers`` is not positive; with ``"skip"``,
            no image could be read (the message names the first).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    paths = once_each(image_files(images))
    done = _embed_files(bundle, paths, batch_size=batch_size, workers=workers, progress=progress,
                        precision=precision, skip=on_error == "skip")
    if not done.paths:
        raise ValueError(f"none of the {len(paths)} images could be read; the first: {done.failures[0]}")
    return done


def once_each(paths: Sequence[PathLike]) -> list[Path]:
    """``paths`` without repeats of one file under other spellings (``imgs/f``, ``imgs/./f``,
    ``imgs/../imgs/f``, a link to it), each kept where it first appears, as first spelled."""
    seen: set[Path] = set()
    kept = []
    for path in paths:
        key = Path(os.path.realpath(path))  # a link loop stays itself (Path.resolve raises on one)
        if key not in seen:
            seen.add(key)
            kept.append(Path(path))
    return kept


def _decode_readable(piece: Sequence[PathLike], size: int) -> tuple[np.ndarray, list[Path], list[ImageError]]:
    """Decode a batch; when a file of it is bad, decode file by file and return the good ones and the errors."""
    try:
        return decode_images(piece, size, workers=0), [Path(p) for p in piece], []
    except ImageError:
        pass
    pixels, good, bad = [], [], []
    for path in piece:
        try:
            pixels.append(load_fitted(path, size))
            good.append(Path(path))
        except ImageError as err:
            bad.append(err)
    stacked = np.stack(pixels) if pixels else np.empty((0, size, size, 3), dtype=np.uint8)
    return stacked, good, bad


def _embed_files(
    bundle: Bundle,
    paths: Sequence[PathLike],
    *,
    batch_size: int,
    workers: int | None,
    progress: Callable[[int], None] | None,
    precision: str,
    skip: bool,
) -> EmbeddedFiles:
    """:func:`embed_files` of listed files: ``skip`` False raises at the first bad image, True goes past it."""
    if not paths:
        raise ValueError("no images to embed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images, got {batch_size}")
    model = bundle.backbone
    workers = default_embed_workers(model) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be a positive number of threads, got {workers}")
    device = model_device(model)
    amp_dtype = autocast_dtype(precision, device)
    size = bundle.preprocessing.image_size
    pieces = chunks(list(paths), batch_size)
    workers = min(workers, len(pieces))

    def features(piece: Sequence[PathLike]) -> tuple[np.ndarray, list[Path], list[ImageError]]:
        if skip:
            pixels, good, bad = _decode_readable(piece, size)
        else:
            pixels, good, bad = decode_images(piece, size, workers=0), [Path(p) for p in piece], []
        if not good:
            return np.empty((0, bundle.feature_dim), dtype=np.float32), good, bad
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        return forward_batch(model, images, device, bundle.preprocessing.normalize, amp_dtype), good, bad

    rows: list[np.ndarray] = []
    kept: list[Path] = []
    failures: list[ImageError] = []
    one_thread_each = 1 if device.type == "cpu" and workers > 1 else None
    with borrowed_for_inference(model, device), _intra_op_threads(one_thread_each):
        executor = ThreadPoolExecutor(workers) if workers > 1 else None
        try:
            results = executor.map(features, pieces) if executor is not None else map(features, pieces)
            for piece, (feats, good, bad) in zip(pieces, results):
                rows.append(feats)
                kept.extend(good)
                failures.extend(bad)
                if progress is not None:
                    progress(len(piece))
        finally:
            if executor is not None:  # after an error: start no further batch, let running ones finish
                executor.shutdown(wait=True, cancel_futures=True)
    out = np.concatenate(rows).astype(np.float32, copy=False)
    return EmbeddedFiles(out, tuple(kept), tuple(failures))


def folder_features(
    bundle: Bundle,
    root: PathLike,
    *,
    products: Mapping[str, Sequence[Path]] | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Features of every image of a ``root/<product>/<image>`` folder, with each image's product name.

    Args:
        bundle: the bundle whose backbone embeds the images.
        root: one sub-folder of images per product.
        products: :func:`retailnb.data.inputs.product_folders` of ``root``, when the caller has
            already listed it (the folder is then not read again).
        progress: called with the number of images of each embedded batch.
        batch_size: images decoded and embedded together.

    Returns:
        (N, D) features, the N product names, and a provenance record of the data (folder, number of
        images per product, SHA-256 of the image files).

    Raises:
        DatasetError: ``root`` is not such a folder (see :func:`retailnb.data.inputs.product_folders`).
        ImageError: an image cannot be read; the message names it.
    """
    products = product_folders(root) if products is None else products
    paths = [p for files in products.values() for p in files]
    names = [name for name, files in products.items() for _ in files]
    features = embed_files(bundle, paths, progress=progress, batch_size=batch_size).features
    source = {
        "folder": str(Path(root).resolve()),
        "images_per_product": {name: len(files) for name, files in products.items()},
        "files_sha256": files_sha256(paths),
    }
    return features, names, source
