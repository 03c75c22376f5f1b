"""Reads that cannot hang or exhaust memory: only regular files are opened, and a header's pixel count is
checked before anything is decoded."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from retailnb.data.images import MAX_PIXELS, ImageError, load_fitted


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` pixels (no pixel data follows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    side = int(MAX_PIXELS ** 0.5) + 100
    # Pillow warns above its own default limit (about 89 million pixels) and raises only above twice that
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageError, match=f"{side}x{side} px, more than"):
        load_fitted(png_header(tmp_path / "bomb.png", side, side), 32)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_named_as_an_image_is_named_not_opened(tmp_path: Path, kind: str) -> None:
    """Opening a FIFO blocks forever and /dev/zero never ends: each is refused at once (in a subprocess, so
    that a regression fails the test instead of hanging it)."""
    path = tmp_path / f"{kind}.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    code = ("from retailnb.data.images import ImageError, load_fitted\n"
            f"try:\n    load_fitted({str(path)!r}, 32)\nexcept ImageError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == f"{path}: not a regular file", run.stdout + run.stderr
