"""The embedded default dataset: procedurally generated retail products, as packshots and shelf crops.

The real problem this repository studies is recognising a product (SKU) in an in-store photo when the
training data is mostly clean catalogue packshots plus many unlabelled shelf photos. This module makes
a small dataset with the same structure so that every stage of the pipeline can run without downloads:

* **Products.** Each SKU is a drawn package (``box``, ``bottle``, ``can`` or ``pouch``). SKUs come in
  brand families that share a shape, a palette, a logo and a layout; members differ only in a variant
  colour band, a variant word (``LITE``, ``ZERO``, ...), their size and a small mark, so siblings are
  fine-grained neighbours, as flavours of one brand are on a real shelf.
* **Domains.** A ``catalogue`` image is the package centred on a light background with a tiny jitter. A
  ``shelf`` image is a crop of a drawn shelf: neighbouring products, a price tag, perspective, rotation,
  scale and crop jitter, lighting and colour cast, blur, occlusion, sensor noise and JPEG artefacts,
  all scaled by one ``difficulty`` knob.
* **Catalogues.** Brand families are split into a *source* catalogue (pretraining: labelled SKUs,
  unlabelled-only SKUs and held-out monitor families) and a disjoint *target* catalogue (downstream
  few-shot probe), and every image is written as a row of the manifest format of
  :mod:`retailnb.data.manifest`.

Everything is seeded: the catalogue design comes from ``SeedSequence([seed, 0])`` and every image from
its own ``SeedSequence([seed, 1, sku, domain, index, role])``, so the same config gives byte-identical
files whatever the number of worker processes.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from retailnb.util.atomic import temporary_folder
from retailnb.config.data import MAX_SKUS_PER_FAMILY, SyntheticSpec
from retailnb.data.manifest import ManifestRow, write_manifest
from retailnb.util.parallel import chunks, default_workers, pool_context

SHAPES: tuple[str, ...] = ("box", "bottle", "can", "pouch")
LOGOS: tuple[str, ...] = (
    "circle",
    "ring",
    "star",
    "triangle",
    "diamond",
    "square",
    "hexagon",
    "stripes",
    "cross",
    "chevron",
    "crescent",
    "wave",
)
PATTERNS: tuple[str, ...] = ("plain", "split", "diagonal", "frame", "dots", "wave")
LAYOUTS: tuple[tuple[str, str, str], ...] = (
    ("brand", "logo", "band"),
    ("logo", "brand", "band"),
    ("band", "logo", "brand"),
    ("brand", "band", "logo"),
    ("logo", "band", "brand"),
)
MARKS: tuple[str, ...] = ("none", "dot", "dots", "badge", "corner")
VARIANT_WORDS: tuple[str, ...] = (
    "LITE",
    "ZERO",
    "BIO",
    "CLASSIC",
    "EXTRA",
    "MINI",
    "MAX",
    "FRESH",
    "GOLD",
    "PLUS",
    "PURE",
    "DARK",
    "MILD",
    "SPICY",
    "BERRY",
    "LEMON",
    "MINT",
    "COCOA",
    "HONEY",
    "NATURE",
)
assert len(VARIANT_WORDS) == MAX_SKUS_PER_FAMILY, "one variant word per SKU of a family"
VARIANT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (214, 40, 40),  # red
    (247, 127, 0),  # orange
    (252, 196, 60),  # yellow
    (56, 166, 30),  # green
    (0, 150, 136),  # teal
    (33, 100, 220),  # blue
    (20, 33, 61),  # navy
    (123, 44, 191),  # purple
    (240, 98, 146),  # pink
    (25, 25, 25),  # black
    (245, 245, 245),  # white
    (176, 182, 188),  # silver
    (121, 85, 61),  # brown
    (170, 215, 50),  # lime
)
SIZE_FACTORS: tuple[float, ...] = (0.8, 0.9, 1.0)
ASPECTS: dict[str, float] = {"box": 0.70, "bottle": 0.40, "can": 0.55, "pouch": 0.74}

_ONSETS = ("b", "br", "c", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p", "pr",
           "r", "s", "st", "sh", "t", "tr", "v", "z")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "o", "e", "ea", "ai", "ou")
_CODAS = ("", "", "", "", "n", "l", "r", "s", "x", "m", "k")
_ROLE_CODE = {"labelled": 0, "unlabelled": 1, "monitor_train": 2, "monitor_test": 3, "probe_train": 4, "probe_test": 5}
_DOMAIN_CODE = {"catalogue": 0, "shelf": 1}
_TEST_ROLES = ("monitor_test", "probe_test")
_WHITE = (255, 255, 255)
Colour = tuple[int, int, int]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Catalogue design: brand families and their SKUs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyDesign:
    """A brand family: what its SKUs share.

    Attributes:
        index: position of the family in :func:`design_catalogue`'s order.
        name: pronounceable brand name, unique in the dataset (also the manifest's ``group``).
        kind: ``source`` (labelled/unlabelled SKUs), ``monitor`` (held-out source) or ``target``.
        shape: package shape, one of :data:`SHAPES`.
        body: main package colour.
        secondary: second colour of the printed pattern.
        accent: logo, cap and trim colour.
        text: colour of the brand name.
        logo: logo shape, one of :data:`LOGOS`.
        pattern: printed background pattern, one of :data:`PATTERNS`.
        layout: vertical order of the brand name, logo and variant band on the package face.
    """

    index: int
    name: str
    kind: str
    shape: str
    body: Colour
    secondary: Colour
    accent: Colour
    text: Colour
    logo: str
    pattern: str
    layout: tuple[str, str, str]

    @property
    def catalogue(self) -> str:
        """``source`` for source and monitor families, ``target`` otherwise."""
        return "target" if self.kind == "target" else "source"


@dataclass(frozen=True)
class SkuDesign:
    """One product: its family plus what sets it apart from its siblings.

    Attributes:
        index: position of the SKU in :func:`design_catalogue`'s order (part of every image seed).
        name: class name, ``"<Brand> <Variant>"``, unique in the dataset.
        slug: ``name`` made safe for a folder name (lower case, dashes).
        label: global integer id (position of ``name`` among the sorted class names).
        kind: ``labelled``, ``unlabelled`` (unlabelled-only), ``monitor`` or ``target``.
        family: the brand family.
        variant: the printed variant word.
        band: colour of the variant band.
        size_factor: package height relative to the family's tallest size.
        mark: small extra mark, one of :data:`MARKS`.
    """

    index: int
    name: str
    slug: str
    label: int
    kind: str
    family: FamilyDesign
    variant: str
    band: Colour
    size_factor: float
    mark: str

    @property
    def size_text(self) -> str:
        """The printed net content, e.g. ``"330 ML"``; it follows ``size_factor``."""
        unit = "ML" if self.family.shape in ("bottle", "can") else "G"
        base = {"box": 500, "bottle": 750, "can": 500, "pouch": 250}[self.family.shape]
        return f"{int(round(base * self.size_factor / 10.0)) * 10} {unit}"


def slugify(name: str) -> str:
    """Lower-case ``name`` with every run of non-alphanumerics replaced by one dash."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def brand_name(rng: np.random.Generator) -> str:
    """A pronounceable made-up brand name of two or three syllables, e.g. ``"Norla"``."""
    n_syllables = 2 if rng.random() < 0.75 else 3
    parts = [str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(n_syllables)]
    return ("".join(parts) + str(rng.choice(_CODAS))).capitalize()


def _hsv(h: float, s: float, v: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _luminance(c: Colour) -> float:
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255.0


def _contrast(c: Colour) -> Colour:
    """Near-black or white, whichever reads better on ``c``."""
    return (28, 28, 32) if _luminance(c) > 0.58 else (250, 250, 250)


def _design_family(index: int, name: str, kind: str, shape: str, rng: np.random.Generator) -> FamilyDesign:
    hue = float(rng.random())
    if rng.random() < 0.2:  # white or cream packages with a coloured trim, like dairy or pharmacy
        body = _hsv(hue, float(rng.uniform(0.0, 0.08)), float(rng.uniform(0.92, 0.99)))
        secondary = _hsv(hue, float(rng.uniform(0.4, 0.8)), float(rng.uniform(0.6, 0.9)))
    else:
        body = _hsv(hue, float(rng.uniform(0.45, 0.95)), float(rng.uniform(0.3, 0.95)))
        secondary = _hsv(
            hue + float(rng.uniform(-0.06, 0.06)), float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.25, 1.0))
        )
    accent_hue = (
        hue + (0.5 if rng.random() < 0.5 else float(rng.choice([-0.15, 0.15]))) + float(rng.uniform(-0.05, 0.05))
    )
    accent = _hsv(accent_hue, float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.55, 1.0)))
    return FamilyDesign(
        index=index,
        name=name,
        kind=kind,
        shape=shape,
        body=body,
        secondary=secondary,
        accent=accent,
        text=_contrast(body) if rng.random() < 0.7 else accent,
        logo=str(rng.choice(LOGOS)),
        pattern=str(rng.choice(PATTERNS)),
        layout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
    )


def design_catalogue(config: SyntheticSpec) -> list[SkuDesign]:
    """The SKUs of the dataset, family by family: source, then monitor, then target families.

    Deterministic in ``config``. Brand names are unique over the whole dataset, so the source and
    target catalogues share no family and no class name. Labels number the sorted class names.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
    kinds = (
        ["source"] * config.n_source_families
        + ["monitor"] * config.n_monitor_families
        + ["target"] * config.n_target_families
    )
    names: list[str] = []
    while len(names) < len(kinds):
        name = brand_name(rng)
        if name not in names and 4 <= len(name) <= 8:
            names.append(name)
    # every shape in turn (shuffled), so that each catalogue has a mix of boxes, bottles, cans, pouches
    shapes = [SHAPES[int(k)] for _ in range(0, len(kinds), len(SHAPES)) for k in rng.permutation(len(SHAPES))]
    families = [
        _design_family(i, name, kind, shapes[i], rng) for i, (name, kind) in enumerate(zip(names, kinds, strict=True))
    ]

    n_source_skus = config.n_source_families * config.skus_per_family
    n_labelled = round(config.labelled_fraction * n_source_skus)
    if 0.0 < config.labelled_fraction < 1.0 and n_source_skus >= 2:
        n_labelled = min(max(n_labelled, 1), n_source_skus - 1)  # keep both kinds of source SKU
    labelled = set(rng.permutation(n_source_skus)[:n_labelled].tolist())

    drafts: list[tuple[FamilyDesign, str, Colour, float, str, str]] = []
    for family in families:
        words = rng.choice(len(VARIANT_WORDS), size=config.skus_per_family, replace=False)
        bands = rng.choice(len(VARIANT_COLOURS), size=config.skus_per_family, replace=True)  # repeats: finer
        for k in range(config.skus_per_family):
            if family.kind == "source":
                kind = "labelled" if len(drafts) in labelled else "unlabelled"
            else:
                kind = family.kind
            drafts.append(
                (
                    family,
                    VARIANT_WORDS[int(words[k])],
                    VARIANT_COLOURS[int(bands[k])],
                    float(rng.choice(SIZE_FACTORS)),
                    str(rng.choice(MARKS)),
                    kind,
                )
            )
    class_names = [f"{fam.name} {word.capitalize()}" for fam, word, *_ in drafts]
    label_of = {name: i for i, name in enumerate(sorted(class_names))}
    return [
        SkuDesign(
            index=i,
            name=name,
            slug=slugify(name),
            label=label_of[name],
            kind=kind,
            family=fam,
            variant=word,
            band=band,
            size_factor=size_factor,
            mark=mark,
        )
        for i, (name, (fam, word, band, size_factor, mark, kind)) in enumerate(zip(class_names, drafts, strict=True))
    ]


# --------------------------------------------------------------------------------------------------
# Drawing a package
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, size))


def _draw_text(draw: ImageDraw.ImageDraw, text: str, box: tuple[float, float, float, float], fill: Colour) -> None:
    """Draw ``text`` centred in ``box``, as large as fits."""
    x0, y0, x1, y1 = box
    size = int((y1 - y0) / 0.78)
    font = _font(size)
    width = font.getlength(text)
    if width > 0.92 * (x1 - x0):
        font = _font(int(size * 0.92 * (x1 - x0) / width))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((x0 + x1 - left - right) / 2, (y0 + y1 - top - bottom) / 2), text, fill=fill, font=font)


def _draw_logo(
    draw: ImageDraw.ImageDraw, logo: str, cx: float, cy: float, r: float, colour: Colour, bg: Colour
) -> None:
    """Draw a logo shape of radius ``r`` centred on ``(cx, cy)``."""
    if logo == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif logo == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(2, int(r * 0.32)))
    elif logo == "star":
        pts = [
            (cx + (r if k % 2 == 0 else 0.45 * r) * math.cos(math.pi * (k / 5 - 0.5)),
             cy + (r if k % 2 == 0 else 0.45 * r) * math.sin(math.pi * (k / 5 - 0.5)))
            for k in range(10)
        ]  # fmt: skip
        draw.polygon(pts, fill=colour)
    elif logo == "triangle":
        draw.regular_polygon((cx, cy + 0.15 * r, r), 3, fill=colour)
    elif logo == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=colour)
    elif logo == "square":
        draw.rectangle((cx - 0.78 * r, cy - 0.78 * r, cx + 0.78 * r, cy + 0.78 * r), fill=colour)
    elif logo == "hexagon":
        draw.regular_polygon((cx, cy, r), 6, fill=colour)
    elif logo == "stripes":
        for k in (-1, 0, 1):
            y = cy + k * 0.6 * r
            draw.polygon([(cx - r, y + 0.2 * r), (cx - 0.6 * r, y - 0.2 * r), (cx + r, y - 0.2 * r),
                          (cx + 0.6 * r, y + 0.2 * r)], fill=colour)  # fmt: skip
    elif logo == "cross":
        draw.rectangle((cx - 0.3 * r, cy - r, cx + 0.3 * r, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - 0.3 * r, cx + r, cy + 0.3 * r), fill=colour)
    elif logo == "chevron":
        for dy in (-0.45 * r, 0.35 * r):
            draw.polygon([(cx - r, cy + dy - 0.3 * r), (cx, cy + dy + 0.3 * r), (cx + r, cy + dy - 0.3 * r),
                          (cx + r, cy + dy + 0.1 * r), (cx, cy + dy + 0.7 * r), (cx - r, cy + dy + 0.1 * r)],
                         fill=colour)  # fmt: skip
    elif logo == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        draw.ellipse((cx - 0.55 * r, cy - 1.0 * r, cx + 1.25 * r, cy + 0.8 * r), fill=bg)
    elif logo == "wave":
        xs = np.linspace(cx - r, cx + r, 16)
        for dy in (-0.35 * r, 0.35 * r):
            pts = [(float(x), float(cy + dy + 0.3 * r * math.sin((x - cx) / r * math.pi * 1.5))) for x in xs]
            draw.line(pts, fill=colour, width=max(2, int(0.28 * r)))
    else:
        raise ValueError(f"unknown logo {logo!r}; expected one of {LOGOS}")


def _draw_pattern(draw: ImageDraw.ImageDraw, family: FamilyDesign, w: int, h: int) -> None:
    """Draw the family's printed background pattern over a ``w`` x ``h`` face."""
    c = family.secondary
    if family.pattern == "split":
        draw.rectangle((0, int(h * 0.62), w, h), fill=c)
    elif family.pattern == "diagonal":
        draw.polygon([(0, h * 0.55), (w, h * 0.25), (w, h * 0.5), (0, h * 0.8)], fill=c)
    elif family.pattern == "frame":
        t = max(2, int(0.06 * w))
        draw.rectangle((0, 0, w - 1, h - 1), outline=family.accent, width=t)
    elif family.pattern == "dots":
        step = max(4, w // 6)
        for y in range(step // 2, h, step):
            for x in range(step // 2 + (y // step % 2) * step // 2, w, step):
                draw.ellipse((x - step * 0.15, y - step * 0.15, x + step * 0.15, y + step * 0.15), fill=c)
    elif family.pattern == "wave":
        xs = np.linspace(0, w, 24)
        top = [(float(x), float(h * 0.7 + h * 0.05 * math.sin(x / w * 2 * math.pi))) for x in xs]
        draw.polygon(top + [(w, h), (0, h)], fill=c)


def _pixel(image: Image.Image, x: int, y: int) -> Colour:
    """The RGB colour of one pixel of an RGB image."""
    value = image.getpixel((min(max(x, 0), image.width - 1), min(max(y, 0), image.height - 1)))
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


def _render_face(sku: SkuDesign, w: int, h: int) -> Image.Image:
    """The printed front of a package: pattern, brand name, logo, variant band, size and mark."""
    fam = sku.family
    face = Image.new("RGB", (w, h), fam.body)
    draw = ImageDraw.Draw(face)
    _draw_pattern(draw, fam, w, h)
    heights = {"brand": 0.17, "logo": 0.36, "band": 0.19}
    gap = (0.88 - sum(heights.values())) / 4  # the bottom 12 % holds the size text
    y = gap
    rows: dict[str, tuple[float, float]] = {}
    for item in fam.layout:
        rows[item] = (y * h, (y + heights[item]) * h)
        y += heights[item] + gap
    y0, y1 = rows["brand"]
    _draw_text(draw, fam.name.upper(), (0, y0, w, y1), fam.text)
    y0, y1 = rows["logo"]
    r = min((y1 - y0) / 2, 0.38 * w)
    bg = _pixel(face, int(w * 0.5), int((y0 + y1) / 2 - r * 0.9))  # what a crescent's cut-out shows
    _draw_logo(draw, fam.logo, w / 2, (y0 + y1) / 2, r, fam.accent, bg)
    y0, y1 = rows["band"]
    draw.rectangle((0, y0, w, y1), fill=sku.band)
    _draw_text(draw, sku.variant, (0, y0 + 0.1 * (y1 - y0), w, y1 - 0.1 * (y1 - y0)), _contrast(sku.band))
    _draw_text(draw, sku.size_text, (0.25 * w, 0.895 * h, 0.75 * w, 0.975 * h), _contrast(_pixel(face, 1, h - 2)))
    s = 0.07 * w
    if sku.mark == "dot":
        draw.ellipse((w - 3.2 * s, y0 - 2.6 * s, w - 1.2 * s, y0 - 0.6 * s), fill=fam.accent)
    elif sku.mark == "dots":
        for k in range(3):
            draw.ellipse(
                (1.0 * s + 2.2 * k * s, y1 + 0.4 * s, 2.6 * s + 2.2 * k * s, y1 + 2.0 * s), fill=_contrast(sku.band)
            )
    elif sku.mark == "badge":
        _draw_logo(draw, "star", w - 2.6 * s, 2.6 * s, 2.4 * s, (250, 210, 30), fam.body)
        draw.ellipse((w - 4.0 * s, 1.2 * s, w - 1.2 * s, 4.0 * s), fill=(220, 30, 40))
    elif sku.mark == "corner":
        draw.polygon([(0, 0), (5 * s, 0), (0, 5 * s)], fill=sku.band)
    return face


def _shade(rgb: np.ndarray, shape: str) -> np.ndarray:
    """Lighting that makes a flat drawing read as a 3-D package (cylinders get a specular band)."""
    h, w, _ = rgb.shape
    u = (np.arange(w, dtype=np.float32) + 0.5) / w
    if shape in ("can", "bottle"):
        mult = 0.55 + 0.45 * np.sqrt(np.sin(np.pi * u))
        add = 120.0 * np.exp(-(((u - 0.3) / 0.06) ** 2))
    elif shape == "pouch":
        mult = 0.8 + 0.2 * np.sqrt(np.sin(np.pi * u))
        add = 50.0 * np.exp(-(((u - 0.35) / 0.12) ** 2))
    else:
        mult = np.full(w, 1.0, dtype=np.float32)
        add = np.zeros(w, dtype=np.float32)
    v = (np.arange(h, dtype=np.float32) + 0.5) / h
    vertical = 1.04 - 0.1 * v
    out = rgb * (vertical[:, None, None] * mult[None, :, None]) + add[None, :, None]
    return np.clip(out, 0, 255)


def _darker(c: Colour, f: float) -> Colour:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


@lru_cache(maxsize=1024)
def package_sprite(sku: SkuDesign, height: int) -> Image.Image:
    """The package of ``sku`` on a transparent background, in premultiplied ``RGBa`` mode.

    ``height`` is the height of the family's tallest size; this SKU's sprite is ``size_factor`` times
    that. Cached, because every image of an SKU starts from the same drawing.
    """
    fam = sku.family
    w = max(8, int(round(height * ASPECTS[fam.shape])))
    h = max(8, int(round(height * sku.size_factor)))
    sprite = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    body = fam.body + (255,)
    if fam.shape == "box":
        side, top = int(0.1 * w), int(0.05 * w)
        draw.rectangle((0, top, w - side, h - 1), fill=body)
        draw.polygon(
            [(0, top), (side, 0), (w - 1, 0), (w - side, top)],
            fill=_darker(fam.body, 1.15 if _luminance(fam.body) < 0.8 else 0.95),
        )
        draw.polygon(
            [(w - side, top), (w - 1, 0), (w - 1, h - 1 - top), (w - side, h - 1)], fill=_darker(fam.body, 0.7)
        )
        face_box = (int(0.04 * w), top + int(0.03 * h), w - side - int(0.04 * w), h - int(0.03 * h))
    elif fam.shape == "can":
        e = int(0.18 * w)
        draw.rectangle((0, e // 2, w - 1, h - 1 - e // 2), fill=body)
        draw.ellipse((0, h - 1 - e, w - 1, h - 1), fill=_darker(fam.body, 0.8))
        draw.ellipse((0, 0, w - 1, e), fill=(200, 203, 208))
        draw.ellipse((int(0.12 * w), int(0.15 * e), int(0.88 * w), int(0.85 * e)), fill=(165, 168, 175))
        face_box = (0, e, w, h - e)
    elif fam.shape == "bottle":
        glass = _darker(fam.body, 0.6) + (255,)
        draw.rectangle((int(0.3 * w), 0, int(0.7 * w), int(0.08 * h)), fill=fam.accent)
        draw.rectangle((int(0.36 * w), int(0.08 * h), int(0.64 * w), int(0.2 * h)), fill=glass)
        draw.polygon(
            [(int(0.36 * w), int(0.2 * h)), (int(0.64 * w), int(0.2 * h)), (w - 1, int(0.34 * h)), (0, int(0.34 * h))],
            fill=glass,
        )
        draw.rounded_rectangle((0, int(0.32 * h), w - 1, h - 1), radius=int(0.12 * w), fill=glass)
        face_box = (0, int(0.4 * h), w, int(0.93 * h))
    else:  # pouch
        crimp = int(0.09 * h)
        draw.polygon([(int(0.05 * w), 0), (int(0.95 * w), 0), (w - 1, int(0.88 * h)), (int(0.9 * w), h - 1),
                      (int(0.1 * w), h - 1), (0, int(0.88 * h))], fill=body)  # fmt: skip
        draw.rectangle((int(0.05 * w), 0, int(0.95 * w), crimp), fill=_darker(fam.body, 0.8))
        teeth = 12
        for k in range(teeth):
            x = int(0.05 * w) + (k + 0.5) * 0.9 * w / teeth
            draw.polygon([(x - 0.45 * w / teeth, 0), (x + 0.45 * w / teeth, 0), (x, int(0.025 * h))], fill=(0, 0, 0, 0))
        face_box = (int(0.07 * w), int(1.2 * crimp), int(0.93 * w), int(0.9 * h))
    fx0, fy0, fx1, fy1 = face_box
    if fx1 - fx0 >= 4 and fy1 - fy0 >= 4:
        sprite.paste(_render_face(sku, fx1 - fx0, fy1 - fy0), (fx0, fy0))
    arr = np.asarray(sprite, dtype=np.float32)
    rgb = _shade(arr[..., :3], fam.shape)
    rgba = np.concatenate([rgb, arr[..., 3:]], axis=2).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA").convert("RGBa")


@lru_cache(maxsize=4096)
def _scaled_sprite(sku: SkuDesign, height: int, size: int) -> Image.Image:
    """The sprite of ``sku`` resized so that its family's tallest size is ``height`` px, as ``RGBA``.

    Cached: heights are whole pixels, so an SKU is seen at a few dozen heights per image size.
    """
    base = package_sprite(sku, _sprite_height(size))
    scale = height / _sprite_height(size)
    w, h = max(1, int(round(base.width * scale))), max(1, int(round(base.height * scale)))
    return base.resize((w, h), Image.Resampling.BILINEAR).convert("RGBA")


def _sprite_height(size: int) -> int:
    """Drawing resolution: about twice the output so that downscaling anti-aliases edges and text."""
    return int(min(512, max(128, 2 * size)))


# --------------------------------------------------------------------------------------------------
# Catalogue packshots and shelf crops
# --------------------------------------------------------------------------------------------------


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """``image`` as JPEG bytes (deterministic: fixed quality and subsampling, no optimisation pass)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality), subsampling=2 if quality < 90 else 0)
    return buf.getvalue()


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def render_catalogue(design: SkuDesign, rng: np.random.Generator, size: int) -> Image.Image:
    """A clean packshot: the package centred on a white or light grey background, tiny jitter.

    Args:
        design: the SKU to draw.
        rng: the image's random generator (background tone, position and scale jitter).
        size: side of the square output image in pixels.

    Returns:
        An RGB image of ``size`` x ``size`` pixels.
    """
    tone = 255 if rng.random() < 0.6 else int(rng.integers(236, 252))
    image = Image.new("RGB", (size, size), (tone, tone, tone))
    height = int(round(0.84 * size * float(rng.uniform(0.97, 1.03))))
    sprite = _scaled_sprite(design, height, size)
    x = (size - sprite.width) / 2 + float(rng.uniform(-0.02, 0.02)) * size
    y = (size - sprite.height) / 2 + float(rng.uniform(-0.02, 0.02)) * size
    shadow = ImageDraw.Draw(image)
    sy = y + sprite.height
    shadow.ellipse(
        (x - 0.04 * size, sy - 0.02 * size, x + sprite.width + 0.04 * size, sy + 0.025 * size), fill=(tone - 22,) * 3
    )
    image.paste(sprite, (int(round(x)), int(round(y))), sprite)
    return image


_WALLS: tuple[Colour, ...] = ((236, 236, 232), (200, 203, 208), (214, 190, 160), (120, 124, 130), (60, 62, 68))
_BOARDS: tuple[Colour, ...] = ((245, 245, 245), (170, 172, 176), (165, 120, 80), (40, 40, 44))
_OCCLUSIONS: tuple[str, ...] = ("divider", "hand", "sign", "glare", "box")


@lru_cache(maxsize=1)
def _price_tags() -> tuple[Image.Image, ...]:
    """A fixed bank of shelf labels (white, some yellow promotions) with prices, drawn once per process."""
    rng = np.random.default_rng(np.random.SeedSequence([20240, 7]))
    tags = []
    for _ in range(48):
        promo = rng.random() < 0.25
        hi_w, hi_h = 96, 36
        tag = Image.new("RGB", (hi_w, hi_h), (252, 222, 40) if promo else (250, 250, 250))
        draw = ImageDraw.Draw(tag)
        price = f"{int(rng.integers(0, 10))}.{int(rng.integers(0, 100)):02d}"
        draw.rectangle((0, 0, hi_w - 1, 5), fill=(210, 30, 40) if promo else (40, 90, 170))
        _draw_text(draw, price, (hi_w * 0.35, 8, hi_w - 2, hi_h - 2), (20, 20, 20))
        draw.rectangle((4, 12, int(hi_w * 0.3), 15), fill=(90, 90, 90))
        draw.rectangle((4, 20, int(hi_w * 0.25), 22), fill=(120, 120, 120))
        tags.append(tag)
    return tuple(tags)


def _price_tag(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A small shelf label with a price in digits, ``w`` x ``h`` pixels."""
    return _sized_price_tag(int(rng.integers(len(_price_tags()))), max(2, w), max(2, h))


@lru_cache(maxsize=2048)
def _sized_price_tag(index: int, w: int, h: int) -> Image.Image:
    return _price_tags()[index].resize((w, h), Image.Resampling.BILINEAR)


def _perspective_coefficients(
    output: Sequence[tuple[float, float]], scene: Sequence[tuple[float, float]]
) -> tuple[float, ...]:
    """Coefficients for :meth:`PIL.Image.Image.transform` mapping output corners to scene points."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(output, scene, strict=True)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    return tuple(float(c) for c in np.linalg.solve(a, b))


def _shelf_scene(
    design: SkuDesign,
    neighbours: Sequence[SkuDesign],
    rng: np.random.Generator,
    size: int,
    difficulty: float,
    side: float,
    slot: float,
) -> tuple[Image.Image, tuple[float, float], Colour]:
    """Draw a shelf around ``design``; returns the scene, the product's centre and the wall colour.

    Args:
        design: the product in the middle.
        neighbours: products to its left (first) and right (last).
        rng: the image's random generator.
        size: the output image size (picks the sprite resolution).
        difficulty: in [0, 1]; harder shelves are packed tighter.
        side: the crop side in scene pixels; the scene is a square of ``2 * side`` pixels centred on
            the product, so that a rotated or tilted crop stays inside it.
        slot: the height of the family's tallest size in scene pixels.
    """
    d = difficulty
    n = int(math.ceil(2 * side))
    wall = _WALLS[int(rng.integers(len(_WALLS)))]
    board = _BOARDS[int(rng.integers(len(_BOARDS)))]
    scene = Image.new("RGB", (n, n), wall)
    draw = ImageDraw.Draw(scene)
    target = _scaled_sprite(design, int(round(slot * float(rng.uniform(0.98, 1.02)))), size)
    cx, board_y = n / 2, n / 2 + target.height / 2
    lip = 0.13 * slot
    top_board = board_y - slot * 1.22
    # the underside of the shelf above, with its own lip and tags
    draw.rectangle((0, 0, n, top_board - lip), fill=_darker(wall, 0.55))
    draw.rectangle((0, top_board - lip, n, top_board), fill=board)
    for x in np.arange(-rng.uniform(0, slot), n, slot * 0.9):
        draw.rectangle(
            (x + 0.2 * slot, top_board - 0.85 * lip, x + 0.5 * slot, top_board - 0.15 * lip), fill=(246, 246, 246)
        )
    # products: the target in the middle, neighbours (and further facings) to each side
    gap = slot * (0.03 + 0.3 * (1.0 - d)) * float(rng.uniform(0.7, 1.3))
    placed = [cx]
    half = target.width / 2
    for direction, neighbour in (
        (-1, neighbours[0] if neighbours else None),
        (1, neighbours[-1] if neighbours else None),
    ):
        if neighbour is None:
            continue
        edge = cx + direction * (half + gap)
        while 0 <= edge <= n:  # facings until the scene's edge
            sprite = _scaled_sprite(neighbour, int(round(slot * float(rng.uniform(0.97, 1.03)))), size)
            centre = edge + direction * sprite.width / 2
            scene.paste(sprite, (int(round(centre - sprite.width / 2)), int(round(board_y - sprite.height))), sprite)
            placed.append(centre)
            edge = centre + direction * (sprite.width / 2 + slot * float(rng.uniform(0.03, 0.12)))
    scene.paste(target, (int(round(cx - half)), int(round(board_y - target.height))), target)
    # the shelf board, its lip and a price tag under each product
    draw.rectangle((0, board_y, n, board_y + lip), fill=board)
    draw.rectangle((0, board_y + lip, n, n), fill=_darker(wall, 0.45))
    tag_w, tag_h = int(0.5 * slot * ASPECTS[design.family.shape] / 0.55), int(0.8 * lip)
    for centre in placed:
        tag = _price_tag(rng, tag_w, tag_h)
        offset = float(rng.uniform(-0.15, 0.15)) * slot
        scene.paste(tag, (int(round(centre - tag_w / 2 + offset)), int(round(board_y + 0.1 * lip))))
    return scene, (cx, board_y - target.height / 2), wall


def _occlude(image: Image.Image, rng: np.random.Generator, difficulty: float) -> None:
    """Cover part of the crop with something found on shelves: a divider, a hand, a sign, glare, a box."""
    s = image.width
    draw = ImageDraw.Draw(image, "RGBA")
    kind = _OCCLUSIONS[int(rng.integers(len(_OCCLUSIONS)))]
    extent = s * (0.15 + 0.3 * difficulty * float(rng.random()))  # how far it reaches into the crop
    left = rng.random() < 0.5
    if kind == "divider":
        x = extent if left else s - extent
        draw.rectangle((x - 0.06 * s, 0, x + 0.06 * s, s), fill=(235, 240, 245, 150))
    elif kind == "hand":
        skin = (int(rng.integers(150, 235)), int(rng.integers(110, 180)), int(rng.integers(90, 150)), 255)
        y = float(rng.uniform(0.3, 0.8)) * s
        x0, x1 = (-0.2 * s, extent) if left else (s - extent, 1.2 * s)
        draw.ellipse((x0, y - 0.14 * s, x1, y + 0.14 * s), fill=skin)
    elif kind == "sign":
        colour = ((220, 30, 40, 255), (250, 210, 30, 255), (30, 140, 60, 255))[int(rng.integers(3))]
        y = float(rng.uniform(0.0, 0.6)) * s
        x0 = -0.05 * s if left else s - extent
        draw.rectangle((x0, y, x0 + extent, y + 0.3 * s), fill=colour)
        _draw_text(draw, "SALE", (x0, y + 0.05 * s, x0 + extent, y + 0.25 * s), _WHITE)
    elif kind == "glare":
        x, y = float(rng.uniform(0.2, 0.8)) * s, float(rng.uniform(0.2, 0.8)) * s
        r = extent * 0.6
        draw.ellipse((x - r, y - 0.6 * r, x + r, y + 0.6 * r), fill=(255, 255, 250, int(rng.integers(90, 190))))
    else:  # a box in the foreground
        shade = int(rng.integers(40, 200))
        y = float(rng.uniform(0.4, 0.9)) * s
        x0 = -0.05 * s if left else s - extent
        draw.rectangle((x0, y, x0 + extent, s + 1), fill=(shade, int(shade * 0.9), int(shade * 0.75), 255))


def _light(image: Image.Image, rng: np.random.Generator, d: float) -> Image.Image:
    """Uneven light (a linear gradient), exposure, a colour cast and haze, scaled by difficulty ``d``.

    Done in 8-bit by PIL (one multiply by the gradient, one lookup table per channel) for speed.
    """
    size = image.width
    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gx, gy = (float(g) for g in d * rng.uniform(-0.6, 0.6, size=2))
    exposure = float(np.exp(d * rng.normal(0.0, 0.2)))
    cast = 1.0 + d * rng.normal(0.0, 0.08, size=3)
    haze = d * float(rng.uniform(0.0, 0.2))
    light = 1.0 + gx * ramp[None, :] + gy * ramp[:, None]
    peak = float(light.max())
    gradient = Image.fromarray((light * (255.0 / peak) + 0.5).astype(np.uint8), "L").convert("RGB")
    image = ImageChops.multiply(image, gradient)
    gains = peak * exposure * (1.0 - haze) * cast
    lut = np.clip(np.arange(256)[None, :] * gains[:, None] + haze * 170.0 + 0.5, 0, 255).astype(np.uint8)
    return image.point(lut.ravel().tolist())


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> tuple[Image.Image, ...]:
    """Gaussian sensor noise around 128, one field of ``2 * size`` pixels per standard deviation 0..9.

    Images crop it at a random offset: far cheaper than drawing fresh noise, and just as seeded.
    """
    rng = np.random.default_rng(np.random.SeedSequence([20240, 9, size]))
    base = rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32)
    return tuple(Image.fromarray(np.clip(128.5 + base * s, 0, 255).astype(np.uint8), "RGB") for s in range(10))


def _shelf_image(
    design: SkuDesign, neighbours: Sequence[SkuDesign], rng: np.random.Generator, size: int, difficulty: float
) -> tuple[Image.Image, int]:
    """A shelf crop before JPEG compression, and the JPEG quality it is to be saved with."""
    d = float(difficulty)
    # framing: at d = 0 the product fills the crop as in a packshot; harder crops zoom out and drift.
    # The scene is drawn at about the output's resolution, so the crop is resampled nearly 1:1.
    fill = 0.84 * float(np.exp(d * rng.uniform(-0.5, 0.12)))  # of the crop taken by the tallest size
    side = size * float(rng.uniform(1 - 0.1 * d, 1 + 0.1 * d))
    scene, (cx, cy), wall = _shelf_scene(design, neighbours, rng, size, d, side, slot=side * fill)
    centre = np.array([cx, cy]) + d * side * rng.normal(0, 0.07, size=2)
    angle = math.radians(d * float(rng.normal(0, 7)))
    keystone = d * float(rng.uniform(-0.15, 0.15))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * side / 2
    corners[:, 1] *= 1 + keystone * np.sign(corners[:, 0])  # one side nearer the camera
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    quad = corners @ rot.T + centre + d * side * rng.normal(0, 0.03, size=(4, 2))
    out_corners = [(0.0, 0.0), (float(size), 0.0), (float(size), float(size)), (0.0, float(size))]
    coeffs = _perspective_coefficients(out_corners, [(float(x), float(y)) for x, y in quad])
    image = scene.transform(
        (size, size), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR, fillcolor=wall
    )
    if rng.random() < 0.7 * d:
        _occlude(image, rng, d)
    if rng.random() < 0.4 * d:  # a low-resolution camera
        small = max(8, int(size * float(rng.uniform(0.45, 0.8))))
        image = image.resize((small, small), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BILINEAR)
    radius = d * float(rng.uniform(0.0, 1.1)) * size / 64
    if radius > 0.15:
        image = image.filter(ImageFilter.BoxBlur(radius))
    if d > 0:  # lighting: a gradient across the crop, exposure, colour cast and haze, then sensor noise
        image = _light(image, rng, d)
        level = int(round(d * float(rng.uniform(1.0, 9.0))))
        if level > 0:
            bank = _noise_bank(size)
            ox, oy = (int(v) for v in rng.integers(0, size, size=2))
            noise = bank[min(level, len(bank) - 1)].crop((ox, oy, ox + size, oy + size))
            image = ImageChops.add(image, noise, 1.0, -128)
    quality = int(round(95 - d * float(rng.uniform(0.0, 65.0))))
    return image, quality


def render_shelf(
    design: SkuDesign, neighbours: Sequence[SkuDesign], rng: np.random.Generator, size: int, difficulty: float
) -> Image.Image:
    """An in-store crop of ``design`` between ``neighbours``, as a camera and JPEG encoder leave it.

    Args:
        design: the SKU in the middle of the crop.
        neighbours: the products to its left (first) and right (last); each fills its side of the
            shelf with a few facings. Empty for a shelf with nothing else on it.
        rng: the image's random generator.
        size: side of the square output image in pixels.
        difficulty: in [0, 1]; scales every distortion (0 gives a nearly clean, centred crop).

    Returns:
        An RGB image of ``size`` x ``size`` pixels, already through JPEG at its sampled quality.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty!r}")
    image, quality = _shelf_image(design, neighbours, rng, size, difficulty)
    return _decode(encode_jpeg(image, quality))


def pick_neighbours(design: SkuDesign, pool: Sequence[SkuDesign], rng: np.random.Generator) -> list[SkuDesign]:
    """Left and right shelf neighbours of ``design`` from ``pool``: another facing, a sibling or any SKU.

    Shelves are arranged by brand, so a neighbour is often the same product or a sibling variant.
    """
    siblings = [s for s in pool if s.family.index == design.family.index and s.index != design.index] or [design]
    chosen = []
    for _ in range(2):
        r = rng.random()
        if r < 0.25:
            chosen.append(design)
        elif r < 0.6:
            chosen.append(siblings[int(rng.integers(len(siblings)))])
        else:
            chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


# --------------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------------


class ImageJob(NamedTuple):
    """One image to render: which SKU, which domain, its number within that SKU and domain, and its role."""

    sku: int
    domain: str
    number: int
    role: str

    @property
    def path(self) -> str:
        """Where the image goes, relative to the dataset folder (``sku`` is resolved by the caller)."""
        return f"{self.domain}_{self.number:03d}.jpg"


def _roles_of(sku: SkuDesign, config: SyntheticSpec) -> tuple[list[str], list[str]]:
    """The roles of an SKU's catalogue images and of its shelf images, in image-index order."""
    c = config
    if sku.kind == "labelled":
        return ["labelled"] * c.catalogue_per_sku, ["labelled"] * c.labelled_shelf_per_sku + [
            "unlabelled"
        ] * c.unlabelled_shelf_per_sku
    if sku.kind == "unlabelled":
        return [], ["unlabelled"] * c.unlabelled_shelf_per_sku
    if sku.kind == "monitor":
        return ["monitor_train"] * c.catalogue_per_sku, ["monitor_train"] * c.monitor_train_per_sku + [
            "monitor_test"
        ] * c.monitor_test_per_sku
    return ["probe_train"] * c.catalogue_per_sku, ["probe_train"] * c.probe_train_shelf_per_sku + [
        "probe_test"
    ] * c.probe_test_per_sku


def plan_images(config: SyntheticSpec, designs: Sequence[SkuDesign]) -> list[ImageJob]:
    """Every image of the dataset, SKU by SKU, catalogue images first."""
    jobs = []
    for sku in designs:
        catalogue_roles, shelf_roles = _roles_of(sku, config)
        jobs += [ImageJob(sku.index, "catalogue", i, role) for i, role in enumerate(catalogue_roles)]
        jobs += [ImageJob(sku.index, "shelf", i, role) for i, role in enumerate(shelf_roles)]
    return jobs


def expected_role_counts(config: SyntheticSpec) -> dict[str, int]:
    """How many manifest rows each role gets under ``config`` (its total is the number of images)."""
    counts = dict.fromkeys(_ROLE_CODE, 0)
    for job in plan_images(config, design_catalogue(config)):
        counts[job.role] += 1
    return counts


def image_rng(config: SyntheticSpec, job: ImageJob) -> np.random.Generator:
    """The random generator of one image; it depends on nothing but the seed and the image's identity."""
    return np.random.default_rng(
        np.random.SeedSequence([config.seed, 1, job.sku, _DOMAIN_CODE[job.domain], job.number, _ROLE_CODE[job.role]])
    )


def _record(job: ImageJob, sku: SkuDesign) -> ManifestRow:
    return ManifestRow(
        path=f"images/{sku.slug}/{job.path}",
        label=sku.label,
        class_name=sku.name,
        split="test" if job.role in _TEST_ROLES else "train",
        role=job.role,
        domain=job.domain,
        group=sku.family.name,
    )


class _RenderState(NamedTuple):
    config: SyntheticSpec
    designs: tuple[SkuDesign, ...]
    pools: dict[str, tuple[SkuDesign, ...]]
    root: str


_STATE: _RenderState | None = None


def _init_worker(state: _RenderState) -> None:
    global _STATE
    _STATE = state


def _render_job(job: ImageJob, state: _RenderState) -> None:
    """Render one image and write its JPEG file."""
    sku = state.designs[job.sku]
    rng = image_rng(state.config, job)
    size = state.config.image_size
    if job.domain == "catalogue":
        data = encode_jpeg(render_catalogue(sku, rng, size), 95)
    else:
        neighbours = pick_neighbours(sku, state.pools[sku.family.kind], rng)
        image, quality = _shelf_image(sku, neighbours, rng, size, state.config.difficulty)
        data = encode_jpeg(image, quality)
    with open(os.path.join(state.root, "images", sku.slug, job.path), "wb") as fh:
        fh.write(data)


def _render_pooled(jobs: Sequence[ImageJob]) -> int:
    assert _STATE is not None, "worker not initialised"
    for job in jobs:
        _render_job(job, _STATE)
    return len(jobs)


def _render_all(jobs: list[ImageJob], state: _RenderState, workers: int) -> None:
    if workers <= 1 or len(jobs) < 32:
        for job in jobs:
            _render_job(job, state)
        return
    chunk = max(4, min(64, len(jobs) // (workers * 6)))
    with pool_context().Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
        for _ in pool.imap_unordered(_render_pooled, chunks(jobs, chunk)):
            pass


def _hex(c: Colour) -> str:
    return f"#{c[0]:02x}{c[1]:02x}{c[2]:02x}"


def _catalogue_json(config: SyntheticSpec, designs: Sequence[SkuDesign]) -> str:
    families = {sku.family.index: sku.family for sku in designs}
    return json.dumps(
        {
            "config": config.model_dump(),
            "families": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "catalogue": f.catalogue,
                    "shape": f.shape,
                    "colours": {
                        "body": _hex(f.body),
                        "secondary": _hex(f.secondary),
                        "accent": _hex(f.accent),
                        "text": _hex(f.text),
                    },
                    "logo": f.logo,
                    "pattern": f.pattern,
                    "layout": list(f.layout),
                }
                for f in families.values()
            ],
            "skus": [
                {
                    "name": s.name,
                    "slug": s.slug,
                    "label": s.label,
                    "kind": s.kind,
                    "family": s.family.name,
                    "shape": s.family.shape,
                    "variant": s.variant,
                    "band_colour": _hex(s.band),
                    "size": s.size_text,
                    "size_factor": s.size_factor,
                    "mark": s.mark,
                }
                for s in designs
            ],
        },
        indent=1,
    )


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing what was there; ``target`` is never left half-replaced."""
    if not target.exists():
        os.rename(new, target)
        return
    old = temporary_folder(target)
    os.rename(target, old / "data")
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old / "data", target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def generate(config: SyntheticSpec, out_dir: str | os.PathLike[str], *, workers: int | None = None) -> Path:
    """Render the whole dataset into ``out_dir`` and return the path of its manifest.

    Writes ``images/<sku-slug>/<domain>_<index>.jpg``, ``manifest.csv`` (paths relative to
    ``out_dir``) and ``catalogue.json`` (families and SKUs). Everything is built in a temporary sibling
    folder that replaces ``out_dir`` only once complete, so a failure leaves ``out_dir`` as it was.

    Args:
        config: the dataset's sizes, difficulty and seed.
        out_dir: the dataset folder; an existing one is replaced.
        workers: rendering processes; ``None`` uses every available core, ``1`` renders in-process.
            The output does not depend on it.

    Returns:
        ``out_dir / "manifest.csv"``.

    Raises:
        NotADirectoryError: ``out_dir`` exists and is not a folder.
        ValueError: ``workers`` is below 1.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir exists and is not a folder: {out_dir}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    designs = design_catalogue(config)
    jobs = plan_images(config, designs)
    records = [_record(job, designs[job.sku]) for job in jobs]
    tmp = temporary_folder(out_dir)  # recognised, and removed by the next run, if this one is killed
    try:
        for sku in designs:
            (tmp / "images" / sku.slug).mkdir(parents=True)
        pools = {kind: tuple(s for s in designs if s.family.kind == kind) for kind in {s.family.kind for s in designs}}
        state = _RenderState(config=config, designs=tuple(designs), pools=pools, root=str(tmp))
        _render_all(jobs, state, workers if workers is not None else default_workers())
        write_manifest(records, tmp / "manifest.csv")
        (tmp / "catalogue.json").write_text(_catalogue_json(config, designs))
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "manifest.csv"
