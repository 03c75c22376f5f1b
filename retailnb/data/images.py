"""Robust image loading shared by the whole project.

Every image the project reads goes through :func:`load_rgb`, so a corrupt file, an odd pixel mode or a
phone photo's EXIF rotation is handled once, the same way, everywhere. :func:`check_image` is the cheap
version the dataset adapters run over a whole collection, and :func:`decode_images` decodes a list of
images once into one uint8 array so that training does not decode JPEGs every epoch. Small JPEGs take a
faster C path there (:func:`load_fitted`, :mod:`retailnb.data.jpeg`) that gives the same pixels.
"""

from __future__ import annotations

import logging
import errno
import os
import stat
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from retailnb.data.jpeg import decode_rgb, read_frame
from retailnb.util.errors import FileProblem
from retailnb.util.parallel import map_chunks

log = logging.getLogger(__name__)

DEFAULT_MIN_SIZE = 8
"""Images whose shorter side is below this many pixels are rejected: they carry no usable content."""

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WHITE = (255, 255, 255)

PathLike = str | os.PathLike[str]


MAX_PIXELS = 100_000_000
"""The most pixels an image may have (a 12,000 x 8,000 photo; phones take 12 to 50 million): a header
claiming more is refused before anything is decoded (a decompression bomb would otherwise take gigabytes)."""


class ImageError(FileProblem):
    """An image file is missing, empty, truncated, not an image, or too small (see :class:`FileProblem`)."""


def _check_file(path: Path) -> None:
    """Reject a path that is missing, not a regular file, or empty (one ``stat`` call)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)") from None
        raise ImageError(path, "file not found") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ImageError(path, "symbolic link loop (following the link leads back to a link)") from None
        raise ImageError(path, f"cannot access file ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(path, "not a regular file")
    if info.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")


def _identify(fh: BinaryIO, path: Path, min_size: int) -> Image.Image:
    """Open an image lazily from ``fh`` (header only), rejecting non-images and too-small images."""
    try:
        im = Image.open(fh)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise ImageError(path, f"cannot read image header ({type(err).__name__}: {err})") from None
    w, h = im.size
    if min(w, h) < min_size:
        raise ImageError(path, f"image is {w}x{h} px, smaller than min_size={min_size} px")
    if w * h > MAX_PIXELS:
        raise ImageError(path, f"image is {w}x{h} px, more than {MAX_PIXELS:,} pixels: not decoded")
    return im


def _decode(im: Image.Image, path: Path) -> None:
    """Decode the pixel data of ``im`` in place, turning every decoder failure into :class:`ImageError`."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some libraries flip this global; a truncated file would then load silently as a grey block.
        raise ImageError(path, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, truncated files cannot be detected")
    try:
        im.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure means the file is unusable
        raise ImageError(path, f"truncated or corrupt image data ({type(err).__name__}: {err})") from None


def _to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Scale ``values`` so that ``full_scale`` maps to 255, rounding and clipping to the uint8 range."""
    return np.clip(np.rint(values.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """8-bit grey version of a 16-bit (``I;16*``), 32-bit integer (``I``) or float (``F``) image.

    Pillow's own ``convert("L")`` clips every value above 255 to white; this scales instead. ``I;16``
    images are 16-bit by definition. ``I`` and ``F`` do not record their bit depth, so their full scale is
    inferred from the data: 1.0 for floats within [0, 1], else 255, 65535 or the maximum, the first that
    bounds the values (``I`` is how some formats deliver 16-bit data).
    """
    values = np.asarray(im)
    if im.mode.startswith("I;16"):
        full_scale = 65535.0
    else:
        top = float(values.max()) if values.size else 0.0
        bounds = (1.0, 255.0, 65535.0) if im.mode == "F" else (255.0, 65535.0)
        full_scale = next((s for s in bounds if top <= s), top)
    return Image.fromarray(_to_uint8(values, full_scale), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB.

    Transparent pixels (alpha channels, or a palette / grey / RGB transparency key) are composited on
    white, the background of a catalogue packshot; Pillow's plain ``convert("RGB")`` would show whatever
    colour the transparent pixels happen to hold. High bit-depth grey is scaled, not clipped.

    Args:
        im: a loaded image in any mode.

    Returns:
        An RGB image of the same size (``im`` itself when it is already RGB without transparency).
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _high_depth_to_l(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _load(path: PathLike, min_size: int, draft: int | None) -> Image.Image:
    """Shared body of :func:`load_rgb` and :func:`check_image`; see :func:`load_rgb`."""
    path = Path(path)
    _check_file(path)
    try:
        fh = path.open("rb")
    except OSError as err:  # a file the user may not read
        raise ImageError(path, f"cannot open file ({err.strerror})") from None
    with fh:  # closed on return: the decoded pixels no longer need the file
        im = _identify(fh, path, min_size)
        if draft is not None and im.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while both sides stay >= draft: many times faster.
            im.draft(None, (draft, draft))
        _decode(im, path)
    try:
        ImageOps.exif_transpose(im, in_place=True)
        return to_rgb(im)
    except Exception as err:  # noqa: BLE001 - malformed EXIF or an exotic mode
        raise ImageError(path, f"cannot convert to RGB ({type(err).__name__}: {err})") from None


def load_rgb(path: PathLike, min_size: int = DEFAULT_MIN_SIZE, *, draft: int | None = None) -> Image.Image:
    """Open an image file as an upright 8-bit RGB image.

    Applies the EXIF orientation (phone photos are often stored sideways) and converts every mode to RGB
    (see :func:`to_rgb`).

    Args:
        path: the image file.
        min_size: smallest accepted shorter side, in pixels (of the stored image, before any draft).
        draft: when given, a JPEG may be decoded at a reduced scale as long as both sides stay at least
            ``draft`` pixels; use it when the image will be shrunk to ``draft`` anyway.

    Returns:
        The decoded RGB image, detached from the file.

    Raises:
        ImageError: the file is missing, empty (0 bytes), not an image, truncated or corrupt, or its
            shorter side is below ``min_size``. The message names the file and the problem.
    """
    return _load(path, min_size, draft)


def check_image(path: PathLike, min_size: int = DEFAULT_MIN_SIZE) -> str | None:
    """Cheaply check that :func:`load_rgb` would succeed on ``path``.

    The whole file is decoded (only full decoding detects a truncated JPEG), but JPEGs at 1/8 scale,
    which makes the check several times cheaper than a full load.

    Args:
        path: the image file.
        min_size: smallest accepted shorter side, in pixels.

    Returns:
        None when the image is usable, otherwise the problem in words (without the path).
    """
    try:
        _load(path, min_size, draft=1)
    except ImageError as err:
        return err.problem
    return None


def fit_square(im: Image.Image, size: int) -> np.ndarray:
    """Resize ``im`` so its shorter side is ``size`` and centre-crop it to ``size`` x ``size``.

    Resizing and cropping happen in one resampling step (Pillow's ``box`` argument), antialiased.

    Returns:
        A uint8 array of shape (size, size, 3).
    """
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    out = im.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


def _fast_jpeg(path: PathLike, size: int, min_size: int) -> np.ndarray | None:
    """The upright RGB pixels of ``path`` by the C decoder of :mod:`retailnb.data.jpeg`, or None.

    None when the file cannot be read, is not a JPEG that decoder reproduces exactly, would be decoded
    by Pillow at reduced scale for ``size`` (draft mode), is too small, or fails to decode: the Pillow
    path then decodes it, or raises the error that names the problem.
    """
    try:
        with open(path, "rb") as fh:
            data = bytearray(fh.read())
    except OSError:
        return None
    frame = read_frame(data)
    if (frame is None or not frame.fast or min(frame.width, frame.height) < min_size
            or frame.width * frame.height > MAX_PIXELS):
        return None
    if min(frame.width // size, frame.height // size) >= 2:
        return None  # Pillow's draft mode would decode at 1/2, 1/4 or 1/8 scale (see PIL's JpegImageFile.draft)
    try:
        return decode_rgb(data)
    except RuntimeError:
        return None


def load_fitted(path: PathLike, size: int, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """One image as :func:`decode_images` gives it: upright RGB, shorter side ``size``, centre-cropped.

    Small JPEG files (under twice ``size``) are decoded in C without holding the GIL (see
    :mod:`retailnb.data.jpeg`) and give exactly the pixels of the Pillow path, which decodes everything
    else.

    Returns:
        A uint8 array of shape (size, size, 3).

    Raises:
        ImageError: as :func:`load_rgb`.
    """
    _check_file(Path(path))  # a FIFO, a device, a socket: named, never opened (a read could hang or never end)
    pixels = _fast_jpeg(path, size, min_size)
    if pixels is None:
        return fit_square(load_rgb(path, min_size, draft=size), size)
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels  # Pillow's resize to the same size with the whole image as box is a plain copy
    return fit_square(Image.fromarray(np.ascontiguousarray(pixels)), size)


def _decode_chunk(paths: Sequence[str], size: int, min_size: int) -> np.ndarray:
    """Decode a chunk of images into an (n, size, size, 3) array (the unit of work of a pool worker)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = load_fitted(p, size, min_size)
    return out


def _check_chunk(paths: Sequence[str], min_size: int) -> list[str | None]:
    """:func:`check_image` over a chunk of paths (the unit of work of a pool worker)."""
    return [check_image(p, min_size) for p in paths]


def check_images(
    paths: Sequence[PathLike], min_size: int = DEFAULT_MIN_SIZE, *, workers: int | None = None
) -> Iterator[str | None]:
    """:func:`check_image` over many files, in parallel; yields each result lazily, in order."""
    work = partial(_check_chunk, min_size=min_size)
    for problems in map_chunks(work, [str(p) for p in paths], workers):
        yield from problems


def decode_images(
    paths: Sequence[PathLike], size: int, *, workers: int | None = None, min_size: int = DEFAULT_MIN_SIZE
) -> np.ndarray:
    """Decode images into one uint8 array, each resized (shorter side ``size``) and centre-cropped.

    Training decodes its data once with this instead of every epoch. Large JPEGs are decoded at reduced
    scale (JPEG draft mode) and many images are spread over a process pool.

    Args:
        paths: image files, in the order wanted.
        size: side of the square output images, in pixels.
        workers: worker processes; None uses every available core, 0 or 1 decodes in this process.
        min_size: smallest accepted shorter side of a stored image, in pixels.

    Returns:
        An array of shape (len(paths), size, size, 3), dtype uint8, in the order of ``paths``.

    Raises:
        ImageError: an image cannot be loaded (see :func:`load_rgb`); the message names it.
        ValueError: ``size`` is not positive.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    started = time.perf_counter()
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    work = partial(_decode_chunk, size=size, min_size=min_size)
    start = 0
    for block in map_chunks(work, [str(p) for p in paths], workers):
        out[start : start + len(block)] = block
        start += len(block)
    seconds = time.perf_counter() - started
    log.info("decoded %d images at %d px in %.1fs (%.0f images/s)", len(paths), size, seconds, len(paths) / seconds)
    return out
