"""A fast path for decoding small JPEG files, pixel for pixel the same as the Pillow path.

Pillow parses a JPEG's header in Python: for a 64 px image that parsing took longer than decoding the
pixels (about 90 against 60 µs), and it holds the GIL, so decoding in threads alongside the backbone
barely overlaps. torchvision decodes with the same libjpeg-turbo in C, without the GIL.

Both libraries call libjpeg with the same settings (full-scale DCT, fancy upsampling, RGB output),
so a full-scale decode gives the same pixels; the tests check this on fixtures of every kind the
fast path accepts (colour and grey, chroma subsampling, progressive, restart markers, EXIF
orientations). The fast path takes only what it can decode exactly that way: 8-bit baseline,
extended or progressive frames with one or three components. CMYK, 12-bit and lossless files, and
images Pillow would decode at reduced scale (JPEG draft mode, see
:func:`retailnb.data.images.load_rgb`) stay with Pillow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

_SOI = b"\xff\xd8"
# Start-of-frame markers (SOF0-SOF15 without DHT 0xC4, JPG 0xC8 and DAC 0xCC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_FAST_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended sequential and progressive Huffman
# Markers that stand alone, without a length field: TEM, RST0-RST7, SOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})
_SOS, _EOI = 0xDA, 0xD9


class JpegFrame(NamedTuple):
    """The frame header (SOFn segment) of a JPEG file.

    Attributes:
        marker: the SOF marker byte (0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...).
        precision: bits per sample.
        width: stored width in pixels (before any EXIF rotation).
        height: stored height in pixels.
        components: colour components (1 grey, 3 YCbCr or RGB, 4 CMYK or YCCK).
    """

    marker: int
    precision: int
    width: int
    height: int
    components: int

    @property
    def fast(self) -> bool:
        """Whether :func:`decode_rgb` decodes this frame exactly as Pillow does."""
        return (self.marker in _FAST_SOF and self.precision == 8 and self.components in (1, 3)
                and self.width > 0 and self.height > 0)


def read_frame(data: bytes | bytearray) -> JpegFrame | None:
    """The frame header of the JPEG file ``data``, found by walking its marker segments.

    Only the segments before the frame header are visited (a few hundred bytes in a typical file).

    Returns:
        The frame, or None when ``data`` is not a JPEG file or ends or breaks before its frame header.
    """
    if data[:2] != _SOI:
        return None
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return None  # every segment starts with a marker: the file is malformed
        marker = data[i + 1]
        i += 2
        if marker == 0xFF:  # fill byte before a marker
            i -= 1
            continue
        if marker in _STANDALONE:
            continue
        if marker in (_SOS, _EOI) or i + 2 > n:
            return None  # scan data or the end before any frame header
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            return None
        if marker in _SOF:
            if i + 8 > n:
                return None
            return JpegFrame(marker, data[i + 2], (data[i + 5] << 8) | data[i + 6], (data[i + 3] << 8) | data[i + 4],
                             data[i + 7])
        i += length
    return None


def _load_decoder() -> Callable[[torch.Tensor, int, bool], torch.Tensor] | None:
    """torchvision's JPEG decoding operator, or None where this torchvision has none.

    The operator behind ``torchvision.io.decode_jpeg``, called directly: the Python wrapper added a fifth
    to a third to the time of decoding a 64 px image (argument checks and, since torchvision 0.29, a
    deprecation warning in favour of TorchCodec), and all of it holds the GIL. Without the operator every image
    takes the Pillow path, which gives the same pixels, only slower.
    """
    try:
        import torchvision.io  # noqa: F401, PLC0415 - loads torchvision's image extension, which registers the operator

        return torch.ops.image.decode_jpeg
    except (ImportError, AttributeError, RuntimeError):
        return None


_decoder: Callable[[torch.Tensor, int, bool], torch.Tensor] | None = _load_decoder()
_RGB = 3  # torchvision.io.ImageReadMode.RGB


def decode_rgb(data: bytearray) -> np.ndarray | None:
    """Decode a JPEG file's bytes to an upright (H, W, 3) uint8 RGB array (EXIF orientation applied).

    Pixel for pixel what :func:`retailnb.data.images.load_rgb` gives for a file whose
    :func:`read_frame` is :attr:`JpegFrame.fast` and that Pillow decodes at full scale. The decoding
    runs in C and releases the GIL, so threads decode in parallel.

    Returns:
        The pixels, or None where torchvision has no JPEG decoder.

    Raises:
        RuntimeError: libjpeg cannot decode the data (truncated or corrupt); the Pillow path then gives
            the error its proper message.
    """
    if _decoder is None:
        return None
    return _decoder(torch.frombuffer(data, dtype=torch.uint8), _RGB, True).permute(1, 2, 0).numpy()
