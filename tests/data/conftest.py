"""Fixtures of the data tests: tiny image files, good and bad, written into ``tmp_path``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RED = (220, 30, 40)


class ImageFiles:
    """Writes small image files, one per call, creating parent folders; each returns the path written."""

    BAD_KINDS = ("empty", "truncated", "text", "tiny")
    PROBLEMS = {  # bad kind -> words its problem message must contain
        "empty": "empty file",
        "truncated": "truncated",
        "text": "not an image",
        "tiny": "smaller than min_size",
    }

    def rgb(self, path: Path, size: tuple[int, int] = (24, 16), color: tuple[int, int, int] = RED) -> Path:
        """A solid-colour image; the format follows the suffix (JPEG, PNG...)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(path)
        return path

    def empty(self, path: Path) -> Path:
        """A zero-byte file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return path

    def truncated(self, path: Path) -> Path:
        """A JPEG cut in the middle of its compressed data (as an interrupted download leaves it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)  # noise compresses badly, so the data segment is long
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return path

    def text(self, path: Path) -> Path:
        """A text file wearing an image's name."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("this is not an image\n")
        return path

    def tiny(self, path: Path) -> Path:
        """A valid 4x4 image, below the default minimum size."""
        return self.rgb(path, size=(4, 4))

    def odd_modes(self, folder: Path) -> list[Path]:
        """Valid images in every awkward mode (L, LA, P with transparency, RGBA, CMYK, 16-bit, rotated)."""
        folder.mkdir(parents=True, exist_ok=True)
        size = (20, 12)
        palette = Image.new("P", size, 1)
        palette.putpalette([0, 0, 0, *RED] + [0] * 762)
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        images = {
            "grey.png": (Image.new("L", size, 90), {}),
            "grey_alpha.png": (Image.new("LA", size, (90, 128)), {}),
            "palette.png": (palette, {"transparency": 0}),
            "rgba.png": (Image.new("RGBA", size, (*RED, 200)), {}),
            "cmyk.jpg": (Image.new("CMYK", size, (0, 200, 200, 20)), {}),
            "deep.png": (Image.fromarray(np.full(size[::-1], 40000, dtype=np.uint16)), {}),
            "rotated.jpg": (Image.new("RGB", size, RED), {"exif": exif}),
        }
        for name, (im, options) in images.items():
            im.save(folder / name, **options)
        return [folder / name for name in images]

    def bad(self, kind: str, path: Path) -> Path:
        """One of the bad kinds of :data:`BAD_KINDS`."""
        return {"empty": self.empty, "truncated": self.truncated, "text": self.text, "tiny": self.tiny}[kind](path)


@pytest.fixture
def files() -> ImageFiles:
    """Writer of small good and bad image files."""
    return ImageFiles()
