"""Image files named on a command line: single files, folders of images, and folders of products.

A user points the command line at what they have: a few photos, a folder of shelf crops, or a folder
with one sub-folder of images per product (``FOLDER/<product>/<image>``). Inside folders, entries count
as images by the one rule of :mod:`retailnb.data.listing` that the ingest uses too (by extension, so
a stray ``notes.txt`` or ``.DS_Store`` is skipped, and a broken link named ``x.jpg`` is taken and
reported when decoded); a file named explicitly is always taken, and a broken image is reported by
name when it is decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from retailnb.data.adapters import DatasetError
from retailnb.data.folder import COMMON_SPLITS, detect_layout
from retailnb.data.listing import folder_images, image_extensions, is_image_name, is_listable

__all__ = ["image_extensions", "image_files", "is_image_file", "product_folders"]

PathLike = str | os.PathLike[str]


def is_image_file(path: Path) -> bool:
    """Whether a folder entry counts as an image (:func:`retailnb.data.listing.is_image_name`, not a folder)."""
    return is_image_name(path) and not path.is_dir()


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted, skipping hidden files and folders."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if is_listable(Path(d)))  # prune hidden folders
        found.extend(p for p in (Path(root) / f for f in files) if is_image_file(p))
    return sorted(found)


def image_files(paths: Sequence[PathLike]) -> list[Path]:
    """The images that a list of files and folders names, in order, each once.

    Args:
        paths: image files (taken as they are) and folders (every image file below them, sorted).

    Returns:
        The image paths.

    Raises:
        FileNotFoundError: a path does not exist.
        DatasetError: a folder holds no image file, or ``paths`` is empty.
    """
    if not paths:
        raise DatasetError("no images given: name image files or folders of images")
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            images = _images_under(p)
            if not images:
                raise DatasetError(f"{p}: no image files in this folder (extensions such as .jpg, .png)")
            found.update(dict.fromkeys(images))
        elif p.exists():
            found[p] = None
        else:
            raise FileNotFoundError(f"no such image file or folder: {p}")
    return list(found)


def product_folders(root: PathLike) -> dict[str, list[Path]]:
    """The images of each product of a ``root/<product>/<image>`` folder, by product name.

    Args:
        root: a folder with one sub-folder of images per product; the sub-folder's name is the product.

    Returns:
        Product name → its sorted image files, products in sorted order.

    Raises:
        DatasetError: ``root`` is not a folder, has no product folders, holds images directly, has
            product folders with sub-folders (another layout) or without images; the message says which.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected {root}/<product>/<image>")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and is_listable(p))
    loose = [p.name for p in folder_images(root)[0]]
    if loose:
        shown = ", ".join(loose[:3]) + (", ..." if len(loose) > 3 else "")
        raise DatasetError(
            f"{root}: {len(loose)} image(s) directly in the folder ({shown}) belong to no product; "
            f"expected {root}/<product>/<image>, one folder per product"
        )
    if not folders:
        raise DatasetError(f"{root}: no product folders; expected {root}/<product>/<image>, one folder per product")
    if detect_layout(root, COMMON_SPLITS) == "split":
        raise DatasetError(
            f"{root}: looks like a {root}/<split>/<product>/<image> dataset; pass one split's folder "
            f"(e.g. {folders[0]})"
        )
    images = {}
    for folder in folders:
        files = folder_images(folder)[0]
        if not files:
            raise DatasetError(f"{folder}: product folder without images (extensions such as .jpg, .png)")
        images[folder.name] = files
    return images
