"""What counts as an image file in a folder: one rule, shared by the ingest and the command line.

An entry of a folder is an image when its name is listable (not a dot-file nor OS clutter, see
:func:`is_listable`) and ends in an extension Pillow opens (``.jpg``, ``.png``,
...), and it is not a folder. What the entry turns out to be is checked later, when the image is
validated or decoded: a broken symbolic link, a link loop or an unreadable file named ``x.jpg`` is
taken by this rule, so that the check reports it by name (skipped and listed, or an error) instead of
it vanishing from a listing. A name without an image extension (``README.txt``) is never an image;
callers say how many of those they ignored.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from PIL import Image

PathLike = str | os.PathLike[str]

IGNORED_NAMES = frozenset({"Thumbs.db", "desktop.ini"})
"""File names that operating systems drop into folders; never treated as images (nor are dot-files)."""


def is_listable(path: Path) -> bool:
    """Whether a directory entry may be part of a dataset (not a dot-file nor OS clutter)."""
    return not path.name.startswith(".") and path.name not in IGNORED_NAMES


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (``.jpg``, ``.png``, ...) of the formats Pillow can open."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_image_name(path: Path) -> bool:
    """Whether a folder entry counts as an image by its name alone (listable, with an image extension)."""
    return is_listable(path) and path.suffix.lower() in image_extensions()


def _is_folder(path: Path) -> bool:
    return path.is_dir()  # False for a broken link or a link loop: those are checked as files


def folder_images(folder: PathLike) -> tuple[list[Path], list[Path]]:
    """The images directly in ``folder`` under the rule above, and the other files it ignored.

    Args:
        folder: a folder.

    Returns:
        (images, ignored): sorted entries that count as images, and sorted listable entries that are
        neither images nor folders (``README.txt``). Folders are in neither.

    Raises:
        OSError: ``folder`` cannot be listed.
    """
    images: list[Path] = []
    ignored: list[Path] = []
    for entry in sorted(Path(folder).iterdir()):
        if not is_listable(entry) or _is_folder(entry):
            continue
        (images if is_image_name(entry) else ignored).append(entry)
    return images, ignored
