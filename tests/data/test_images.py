"""Tests of robust image loading: bad files, every pixel mode, EXIF rotation, batch decoding."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from retailnb.util import parallel
from retailnb.data.images import (
    ImageError,
    check_image,
    check_images,
    decode_images,
    fit_square,
    load_rgb,
    to_rgb,
)

BAD_KINDS = ("empty", "truncated", "text", "tiny")


def pixel(path: Path, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    return load_rgb(path).getpixel(xy)


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_raises_naming_file_and_problem(tmp_path, files, kind):
    path = files.bad(kind, tmp_path / f"{kind}.jpg")
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)
    assert files.PROBLEMS[kind] in str(info.value)
    assert info.value.path == path
    assert check_image(path, 8) == info.value.problem


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ImageError, match="missing.jpg: file not found"):
        load_rgb(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        load_rgb(tmp_path)


def test_truncated_png_is_detected(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    assert "truncated" in (check_image(path, 8) or "")


def test_truncated_jpeg_is_detected_even_at_draft_scale(tmp_path, files):
    path = files.truncated(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="truncated"):
        load_rgb(path, draft=8)


def test_min_size_is_a_parameter(tmp_path, files):
    path = files.tiny(tmp_path / "tiny.png")
    assert check_image(path, 4) is None
    assert "4x4 px, smaller than min_size=5" in (check_image(path, 5) or "")
    assert load_rgb(path, min_size=2).size == (4, 4)


def test_good_image_checks_clean(tmp_path, files):
    assert check_image(files.rgb(tmp_path / "ok.jpg"), 8) is None


def test_load_truncated_images_flag_is_refused(tmp_path, files, monkeypatch):
    # With Pillow's global LOAD_TRUNCATED_IMAGES a truncated file would load silently as grey.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="LOAD_TRUNCATED_IMAGES"):
        load_rgb(files.truncated(tmp_path / "cut.jpg"))


def test_image_error_survives_pickling(tmp_path):
    # Errors raised in decode workers are pickled back to the caller.
    err = pickle.loads(pickle.dumps(ImageError(tmp_path / "x.jpg", "empty file (0 bytes)")))
    assert isinstance(err, ImageError) and err.path == tmp_path / "x.jpg" and str(err).endswith("empty file (0 bytes)")


# --- modes ------------------------------------------------------------------------------------------


def test_rgb_pixel_survives_exactly(tmp_path, files):
    assert pixel(files.rgb(tmp_path / "a.png", color=(12, 34, 56))) == (12, 34, 56)


def test_grey_becomes_equal_channels(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "g.png")
    assert pixel(tmp_path / "g.png") == (77, 77, 77)


def test_grey_alpha_is_composited_on_white(tmp_path):
    im = Image.new("LA", (10, 10), (0, 255))  # opaque black
    im.putpixel((1, 1), (0, 0))  # transparent black -> white
    im.putpixel((2, 2), (0, 128))  # half-transparent black -> mid grey
    im.save(tmp_path / "la.png")
    assert pixel(tmp_path / "la.png", (0, 0)) == (0, 0, 0)
    assert pixel(tmp_path / "la.png", (1, 1)) == (255, 255, 255)
    assert pixel(tmp_path / "la.png", (2, 2)) == pytest.approx((127, 127, 127), abs=1)


def test_rgba_transparent_pixels_become_white_not_their_hidden_colour(tmp_path):
    im = Image.new("RGBA", (10, 10), (10, 200, 10, 0))  # fully transparent green
    im.putpixel((1, 1), (10, 200, 10, 255))
    im.putpixel((2, 2), (0, 0, 200, 128))
    im.save(tmp_path / "rgba.png")
    assert pixel(tmp_path / "rgba.png", (0, 0)) == (255, 255, 255)
    assert pixel(tmp_path / "rgba.png", (1, 1)) == (10, 200, 10)
    assert pixel(tmp_path / "rgba.png", (2, 2)) == pytest.approx((127, 127, 227), abs=1)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparent_index(tmp_path, suffix):
    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)  # index 0 black (transparent), 1 green
    im.putpixel((1, 1), 1)
    im.save(tmp_path / f"p{suffix}", transparency=0)
    assert pixel(tmp_path / f"p{suffix}", (0, 0)) == (255, 255, 255)
    assert pixel(tmp_path / f"p{suffix}", (1, 1)) == (10, 200, 30)


def test_palette_without_transparency(tmp_path):
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.save(tmp_path / "p.png")
    assert pixel(tmp_path / "p.png") == (10, 200, 30)


def test_grey_png_with_transparent_value(tmp_path):
    im = Image.new("L", (10, 10), 40)
    im.putpixel((1, 1), 90)
    im.save(tmp_path / "g.png", transparency=40)
    assert pixel(tmp_path / "g.png", (0, 0)) == (255, 255, 255)
    assert pixel(tmp_path / "g.png", (1, 1)) == (90, 90, 90)


def test_cmyk_converts_to_rgb(tmp_path):
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    cyan.save(tmp_path / "c.tif")
    cyan.save(tmp_path / "c.jpg", quality=95)
    assert pixel(tmp_path / "c.tif") == (0, 255, 255)
    assert pixel(tmp_path / "c.jpg") == pytest.approx((0, 255, 255), abs=6)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, suffix):
    values = np.array([[0, 257 * 77, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).resize((4, 8), Image.Resampling.NEAREST).save(tmp_path / f"deep{suffix}")
    assert Image.open(tmp_path / f"deep{suffix}").mode.startswith("I;16")
    rgb = np.asarray(load_rgb(tmp_path / f"deep{suffix}", min_size=4))
    assert rgb[0, :, 0].tolist() == [0, 77, 128, 255]  # Pillow's own convert would give [0, 255, 255, 255]
    assert (rgb == rgb[..., :1]).all()


def test_32_bit_integer_and_float_modes_are_scaled():
    sixteen = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32))
    assert sixteen.mode == "I"
    assert np.asarray(to_rgb(sixteen))[0, :, 0].tolist() == [0, 128, 255]
    eight = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32))
    assert np.asarray(to_rgb(eight))[0, :, 0].tolist() == [0, 100, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]


def test_every_odd_mode_loads_as_rgb(tmp_path, files):
    for path in files.odd_modes(tmp_path):
        im = load_rgb(path)
        assert im.mode == "RGB", path
        assert check_image(path, 8) is None, path


# --- EXIF orientation -------------------------------------------------------------------------------


def _rotated_jpeg(path: Path, orientation: int) -> Path:
    """A 40x20 JPEG, black with a red top-left corner block, tagged with an EXIF orientation."""
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, exif=exif, quality=95)
    return path


def test_exif_rotation_swaps_width_and_height(tmp_path):
    im = load_rgb(_rotated_jpeg(tmp_path / "r.jpg", 6))  # 6: rotate 90 degrees clockwise to display
    assert im.size == (20, 40)
    a = np.asarray(im)
    assert a[:8, -8:, 0].mean() > 200  # the stored top-left corner is now top-right
    assert a[:8, :8, 0].mean() < 50


def test_exif_orientation_one_is_left_alone(tmp_path):
    assert load_rgb(_rotated_jpeg(tmp_path / "r.jpg", 1)).size == (40, 20)


def test_exif_rotation_is_applied_by_decode_images(tmp_path):
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:8] = (255, 0, 0)  # stored: red top band; displayed (rotated clockwise): red right band
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = decode_images([tmp_path / "r.jpg"], 10, workers=0)[0, ..., 0]
    assert out[:, -3:].mean() > 200 and out[:, :3].mean() < 50 and out[:3, 4:6].mean() < 50


# --- fit_square and decode_images -------------------------------------------------------------------


def _stripes(size: tuple[int, int], vertical: bool) -> Image.Image:
    """Three equal red / green / blue bands across the longer side."""
    w, h = size
    a = np.zeros((h, w, 3), dtype=np.uint8)
    third = (w if vertical else h) // 3
    for i in range(3):
        band = slice(i * third, (i + 1) * third)
        if vertical:
            a[:, band, i] = 255
        else:
            a[band, :, i] = 255
    return Image.fromarray(a)


@pytest.mark.parametrize("size", [(60, 20), (20, 60)])
def test_fit_square_keeps_the_centre(size):
    out = fit_square(_stripes(size, vertical=size[0] > size[1]), 8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[2:6, 2:6] == (0, 255, 0)).all()  # only the green middle band survives the centre crop
    assert out[..., 1].mean() > 240


def test_fit_square_upsamples_small_images():
    out = fit_square(Image.new("RGB", (10, 12), (1, 2, 3)), 32)
    assert out.shape == (32, 32, 3) and (out == (1, 2, 3)).all()


def test_jpeg_draft_decodes_at_reduced_scale_but_not_below_size(tmp_path, files):
    path = files.rgb(tmp_path / "big.jpg", size=(800, 600))
    assert load_rgb(path, draft=64).size == (100, 75)  # 1/8 scale: both sides still >= 64
    assert load_rgb(path, draft=200).size == (400, 300)  # 1/2 scale
    assert load_rgb(path).size == (800, 600)


def test_draft_decoding_matches_full_decoding(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((100, 100, 1))).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    fast = decode_images([tmp_path / "big.jpg"], 48, workers=0)[0].astype(int)
    full = fit_square(load_rgb(tmp_path / "big.jpg"), 48).astype(int)
    assert np.abs(fast - full).mean() < 3


def _palette_of_files(folder: Path, files, n: int) -> tuple[list[Path], np.ndarray]:
    colours = np.random.default_rng(3).integers(0, 256, (n, 3))
    paths = [
        files.rgb(folder / f"{i:03d}.png", size=(12 + i % 5, 10), color=tuple(map(int, c)))
        for i, c in enumerate(colours)
    ]
    return paths, colours


def test_decode_images_shape_dtype_and_order(tmp_path, files):
    paths, colours = _palette_of_files(tmp_path, files, 20)
    out = decode_images(paths, 6, workers=0)
    assert out.shape == (20, 6, 6, 3) and out.dtype == np.uint8
    assert (out == colours[:, None, None, :]).all()


def test_decode_images_pool_matches_serial_and_keeps_order(tmp_path, files, monkeypatch):
    monkeypatch.setattr(parallel, "POOL_MIN_ITEMS", 1)
    paths, colours = _palette_of_files(tmp_path, files, 80)  # 3 chunks of 32
    pooled = decode_images(paths, 6, workers=2)
    assert (pooled == colours[:, None, None, :]).all()
    assert np.array_equal(pooled, decode_images(paths, 6, workers=0))


@pytest.mark.parametrize("workers", [0, 2])
def test_decode_images_raises_naming_the_bad_file(tmp_path, files, monkeypatch, workers):
    monkeypatch.setattr(parallel, "POOL_MIN_ITEMS", 1)
    paths, _ = _palette_of_files(tmp_path, files, 40)
    paths[35] = files.truncated(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="cut.jpg: truncated"):
        decode_images(paths, 6, workers=workers)


def test_decode_images_empty_list_and_bad_size(tmp_path):
    assert decode_images([], 8).shape == (0, 8, 8, 3)
    with pytest.raises(ValueError, match="size"):
        decode_images([tmp_path / "x.jpg"], 0)


def test_check_images_in_a_pool_reports_each_file_in_order(tmp_path, files, monkeypatch):
    monkeypatch.setattr(parallel, "POOL_MIN_ITEMS", 1)
    paths, _ = _palette_of_files(tmp_path, files, 40)
    for i, kind in zip((3, 33, 39), ("empty", "text", "tiny"), strict=True):
        paths[i] = files.bad(kind, tmp_path / f"bad{i}.jpg")
    problems = list(check_images(paths, 8, workers=2))
    assert [i for i, p in enumerate(problems) if p] == [3, 33, 39]
    assert "not an image" in problems[33]
