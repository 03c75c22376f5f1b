"""Tests of the C path for small JPEGs: it must give exactly the Pillow path's pixels, or step aside."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retailnb.data import images, jpeg
from retailnb.data.images import ImageError, fit_square, load_fitted, load_rgb
from retailnb.data.jpeg import read_frame

SIZE = 32


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: detail in every 8x8 block, so that every decoder setting matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)


def write(path: Path, width: int, height: int, mode: str = "RGB", orientation: int | None = None,
          **save: object) -> Path:
    im = Image.fromarray(texture(width, height)).convert(mode)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    im.save(path, "JPEG", quality=90, **save)
    return path


def pillow_path(path: Path, size: int) -> np.ndarray:
    """What every image got before the C path existed."""
    return fit_square(load_rgb(path, draft=size), size)


# Each case: (width, height, mode, orientation, save options); all must take the C path.
FAST_CASES = {
    "rgb 4:2:0": (SIZE, SIZE, "RGB", None, {}),
    "rgb 4:4:4": (SIZE, SIZE, "RGB", None, {"subsampling": 0}),
    "rgb 4:2:2": (SIZE, SIZE, "RGB", None, {"subsampling": 1}),
    "progressive": (SIZE, SIZE, "RGB", None, {"progressive": True}),
    "optimised huffman": (SIZE, SIZE, "RGB", None, {"optimize": True}),
    "restart markers": (SIZE, SIZE, "RGB", None, {"restart_marker_rows": 1}),
    "grey": (SIZE, SIZE, "L", None, {}),
    "wide, resized": (50, 37, "RGB", None, {}),
    "tall, odd sizes": (33, 61, "RGB", None, {}),
    "smaller than the model size": (20, 24, "RGB", None, {}),
    **{f"exif orientation {k}": (40, 34, "RGB", k, {}) for k in range(1, 9)},
}


@pytest.mark.parametrize("case", FAST_CASES)
def test_c_path_gives_exactly_the_pillow_pixels(tmp_path: Path, case: str) -> None:
    width, height, mode, orientation, save = FAST_CASES[case]
    path = write(tmp_path / "a.jpg", width, height, mode, orientation, **save)
    assert images._fast_jpeg(path, SIZE, 8) is not None  # the case really takes the C path
    fitted = load_fitted(path, SIZE)
    assert fitted.shape == (SIZE, SIZE, 3) and fitted.dtype == np.uint8
    np.testing.assert_array_equal(fitted, pillow_path(path, SIZE))


def test_rotated_images_come_out_upright(tmp_path: Path) -> None:
    upright = load_fitted(write(tmp_path / "up.jpg", 40, 34), 34)
    turned = load_fitted(write(tmp_path / "turned.jpg", 40, 34, orientation=3), 34)  # same pixels, "rotate 180"
    assert np.abs(upright.astype(int) - upright[::-1, ::-1]).mean() > 20  # the texture is not symmetric
    np.testing.assert_array_equal(turned, upright[::-1, ::-1])


def cmyk(path: Path) -> Path:
    Image.fromarray(texture(SIZE, SIZE)).convert("CMYK").save(path, "JPEG")
    return path


def png(path: Path) -> Path:
    path = path.with_suffix(".png")
    Image.fromarray(texture(SIZE, SIZE)).save(path)
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(cmyk, id="cmyk"),
        pytest.param(lambda p: write(p, 4 * SIZE, 2 * SIZE), id="two or more times the size: Pillow's draft mode"),
        pytest.param(png, id="png"),
    ],
)
def test_other_images_take_the_pillow_path_with_the_same_result(tmp_path: Path, make) -> None:
    path = make(tmp_path / "a.jpg")
    assert images._fast_jpeg(path, SIZE, 8) is None
    np.testing.assert_array_equal(load_fitted(path, SIZE), pillow_path(path, SIZE))


def test_without_torchvisions_decoder_every_image_takes_the_pillow_path(tmp_path, monkeypatch) -> None:
    path = write(tmp_path / "a.jpg", 50, 37)
    monkeypatch.setattr(jpeg, "_decoder", None)
    assert images._fast_jpeg(path, SIZE, 8) is None
    np.testing.assert_array_equal(load_fitted(path, SIZE), pillow_path(path, SIZE))


@pytest.mark.parametrize(
    ("kind", "words"),
    [("truncated", "truncated"), ("tiny", "smaller than min_size"), ("missing", "not found"), ("empty", "empty file")],
)
def test_bad_jpegs_get_the_pillow_paths_message(tmp_path: Path, kind: str, words: str) -> None:
    path = write(tmp_path / "a.jpg", SIZE, SIZE)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[:-40])  # the header is whole, the scan is cut
    elif kind == "tiny":
        write(path, 6, 12)
    elif kind == "missing":
        path.unlink()
    else:
        path.write_bytes(b"")
    with pytest.raises(ImageError, match=words) as info:
        load_fitted(path, SIZE)
    with pytest.raises(ImageError) as pillow:
        load_rgb(path, draft=SIZE)
    assert str(info.value) == str(pillow.value) and str(path) in str(info.value)


def test_garbled_scan_data_decodes_to_the_same_pixels_as_with_pillow(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jpg", SIZE, SIZE)
    data = path.read_bytes()
    path.write_bytes(data[:300] + bytes(40) + data[340:])  # libjpeg warns ("bad Huffman code") and goes on
    assert images._fast_jpeg(path, SIZE, 8) is not None
    np.testing.assert_array_equal(load_fitted(path, SIZE), pillow_path(path, SIZE))


def test_read_frame_finds_the_frame_header() -> None:
    buffer = io.BytesIO()
    Image.fromarray(texture(50, 37)).save(buffer, "JPEG", progressive=True)
    frame = read_frame(buffer.getvalue())
    assert frame == (0xC2, 8, 50, 37, 3) and frame.fast
    buffer = io.BytesIO()
    Image.fromarray(texture(20, 10)).convert("L").save(buffer, "JPEG")
    assert read_frame(buffer.getvalue())[1:] == (8, 20, 10, 1)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"\xff\xd8\xff\xda\x00\x08",
     b"\xff\xd8\xff\xe0\x00\x01", b"\xff\xd8\x00\x00"],
    ids=["empty", "only SOI", "png", "cut in a length", "scan before frame", "bad length", "no marker"],
)
def test_read_frame_gives_none_for_anything_else(data: bytes) -> None:
    assert read_frame(data) is None


def test_frames_the_c_path_cannot_reproduce_are_not_fast() -> None:
    assert not jpeg.JpegFrame(0xC0, 8, 10, 10, 4).fast  # CMYK
    assert not jpeg.JpegFrame(0xC0, 12, 10, 10, 3).fast  # 12-bit
    assert not jpeg.JpegFrame(0xC3, 8, 10, 10, 3).fast  # lossless
    assert not jpeg.JpegFrame(0xC0, 8, 10, 0, 3).fast  # height in a later DNL segment
    assert jpeg.JpegFrame(0xC1, 8, 10, 10, 1).fast
