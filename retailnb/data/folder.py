"""Manifests from generic image-folder datasets.

Two layouts are recognised, and told apart by the folders under the root:

* ``root/<class>/<image>``: one folder per class. Split lists (text files of image paths relative to
  the root, one per line) say which images belong to which split; without them every image belongs to
  one split.
* ``root/<split>/<class>/<image>``: one folder per split (names from the role map), each holding one
  folder per class.

Labels index the sorted class names. Image paths are written absolute: images stay where they are.
Inside a class folder, what counts as an image is the rule of :mod:`retailnb.data.listing` (the
command line's too): broken links, link loops and unreadable files named as images are reported per
file by validation; other files (``README.txt``) are ignored and listed in the report; a folder inside
a class folder is a layout error that names it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Mapping
from pathlib import Path, PurePosixPath
from typing import Literal

from retailnb.data.adapters import (
    AdapterReport,
    Candidate,
    DatasetError,
    Issues,
    OnError,
    RoleMap,
    resolve_role_map,
    write_adapter_manifest,
)
from retailnb.data.listing import folder_images, is_listable
from retailnb.data.images import DEFAULT_MIN_SIZE
from retailnb.data.manifest import DOMAINS

log = logging.getLogger(__name__)

Layout = Literal["class", "split"]
COMMON_SPLITS: frozenset[str] = frozenset({"train", "val", "test"})
"""Split folder names recognised even when the role map leaves them out (their images are then not written)."""
PathLike = str | os.PathLike[str]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and is_listable(p))


def _inner_dirs(folder: Path) -> list[Path]:
    """The folders inside a class or split folder; none when it cannot be listed (reported when read)."""
    try:
        return _subdirs(folder)
    except OSError:
        return []


def _nested(dirs: list[Path]) -> list[str]:
    """``class/sub`` for every folder inside one of ``dirs``: what makes a class layout ambiguous."""
    return [f"{d.name}/{s.name}" for d in dirs for s in _inner_dirs(d)]


def detect_layout(root: Path, splits: Collection[str]) -> Layout:
    """Tell which image-folder layout ``root`` has.

    Args:
        root: the dataset folder.
        splits: the split names a ``root/<split>/<class>`` layout may use.

    Returns:
        ``"split"`` when every folder under ``root`` is a split holding class folders, ``"class"`` when
        every folder under ``root`` is a class folder (holding no folders).

    Raises:
        DatasetError: ``root`` is not a folder, or is neither layout; the message names ``root``.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder")
    dirs = _subdirs(root)
    if dirs and all(d.name in splits for d in dirs) and all(_inner_dirs(d) for d in dirs):
        return "split"
    if dirs and not any(_inner_dirs(d) for d in dirs):
        return "class"
    nested = _nested(dirs)
    at_fault = (f"; folders inside class folders (a class folder holds only images): {', '.join(nested[:5])}"
                + (f" and {len(nested) - 5} more" if len(nested) > 5 else "")) if nested and dirs else ""
    raise DatasetError(
        f"{root}: not an image-folder dataset; expected root/<class>/<image> or root/<split>/<class>/<image> "
        f"with <split> among {sorted(splits)}, found folders {[d.name for d in dirs]}{at_fault}"
    )


def _class_images(folders: list[Path], issues: Issues, ignored: list[Path] | None = None) -> dict[str, list[Path]]:
    """Image files per class folder; an empty or unlistable class folder is a problem and the class is left out.

    Entries named as images are all taken (validation reports broken links and unreadable files by
    name); other files are appended to ``ignored``.
    """
    images = {}
    for folder in folders:
        try:
            files, others = folder_images(folder)
        except OSError as err:
            issues.report(folder, f"cannot list class folder ({err.strerror})")
            continue
        for inner in _inner_dirs(folder):  # its images would be left out without a word
            issues.report(inner, "a folder inside a class folder (a class folder holds only images); its files are "
                                 "not read")
        if ignored is not None:
            ignored.extend(others)
        if files:
            images[folder.name] = files
        else:
            issues.report(folder, "empty class folder" + (f" (no images; {len(others)} other file(s))" if others else ""))
    return images


def _label_index(class_names: Collection[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(sorted(class_names))}


def _split_layout_candidates(root: Path, splits: Collection[str], issues: Issues, domain: str,
                             ignored: list[Path] | None = None) -> list[Candidate]:
    """Candidates of a ``root/<split>/<class>/<image>`` dataset."""
    per_split = {d.name: _class_images(_subdirs(d), issues, ignored) for d in _subdirs(root) if d.name in splits}
    index = _label_index({name for classes in per_split.values() for name in classes})
    return [
        Candidate(path, index[name], name, split, domain)
        for split, classes in per_split.items()
        for name, paths in classes.items()
        for path in paths
    ]


def read_split_list(list_file: Path, root: Path, classes: Collection[str], issues: Issues) -> list[tuple[Path, str]]:
    """Read a split list: image paths relative to ``root``, one per line (blank and ``#`` lines skipped).

    Args:
        list_file: the split list.
        root: the folder the listed paths are relative to.
        classes: the class folders of ``root``; the first component of a listed path is its class.
        issues: where unusable lines (outside the root, unknown class, file not found) are reported.

    Returns:
        (absolute image path, class name) of each usable line, in file order.

    Raises:
        DatasetError: ``list_file`` cannot be read, or (with ``on_error="raise"``) a line is unusable.
    """
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{list_file}: cannot read split list ({err})") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{list_file}, line {number}"
        rel = PurePosixPath(text)
        if rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2:
            issues.report(where, f"{text!r} is not a path <class>/<image> relative to {root}")
        elif rel.parts[0] not in classes:
            issues.report(where, f"{text!r} names unknown class {rel.parts[0]!r} (no such class folder in {root})")
        elif not (root / rel).is_file():
            issues.report(where, f"{text!r} names a file that does not exist ({root / rel})")
        else:
            entries.append((root / rel, rel.parts[0]))
    return entries


def find_split_lists(root: Path, splits: Collection[str]) -> dict[str, Path]:
    """Split lists found next to the class folders: ``root/<split>.txt`` for each split name."""
    return {split: root / f"{split}.txt" for split in splits if (root / f"{split}.txt").is_file()}


def _listed_candidates(
    root: Path, split_files: Mapping[str, Path], classes: Mapping[str, list[Path]], issues: Issues, domain: str
) -> list[Candidate]:
    """Candidates of a ``root/<class>/<image>`` dataset whose splits come from split lists."""
    index = _label_index(classes)
    seen: dict[Path, str] = {}
    candidates = []
    for split, list_file in split_files.items():
        for path, name in read_split_list(Path(list_file), root, classes, issues):
            if path in seen:
                issues.report(list_file, f"{path} is listed again (already in split {seen[path]!r})")
                continue
            seen[path] = split
            candidates.append(Candidate(path, index[name], name, split, domain))
    unlisted = len({p for paths in classes.values() for p in paths} - seen.keys())
    if unlisted:
        log.info("%s: %d images are in no split list and are left out", root, unlisted)
    return candidates


def image_folder_candidates(
    root: Path,
    *,
    role_map: Mapping[str, tuple[str, ...]],
    split_files: Mapping[str, PathLike] | None,
    default_split: str,
    issues: Issues,
    domain: str = "unknown",
    ignored: list[Path] | None = None,
) -> tuple[list[Candidate], int]:
    """Read an image-folder dataset into candidates (files not yet checked).

    Files in class folders that are not images by name are appended to ``ignored``.

    Returns:
        The candidates and the number of classes their labels index.
    """
    layout = detect_layout(root, COMMON_SPLITS | set(role_map))
    used = [split for split, roles in role_map.items() if roles]  # splits that will be written
    log.info("%s: layout root/%s", root, "<split>/<class>/<image>" if layout == "split" else "<class>/<image>")
    if layout == "split":
        if split_files:
            raise DatasetError(f"{root}: split lists apply only to a root/<class>/<image> layout")
        candidates = _split_layout_candidates(root, used, issues, domain, ignored)
        return candidates, len({c.class_name for c in candidates})
    classes = _class_images(_subdirs(root), issues, ignored)
    lists = find_split_lists(root, used) if split_files is None else {s: Path(f) for s, f in split_files.items()}
    if lists:
        return _listed_candidates(root, lists, classes, issues, domain), len(classes)
    index = _label_index(classes)
    candidates = [Candidate(p, index[name], name, default_split, domain) for name, ps in classes.items() for p in ps]
    return candidates, len(classes)


def build_image_folder_manifest(
    root: PathLike,
    out: PathLike,
    *,
    role_map: RoleMap | None = None,
    split_files: Mapping[str, PathLike] | None = None,
    default_split: str = "train",
    domain: str = "unknown",
    on_error: OnError = "raise",
    min_size: int = DEFAULT_MIN_SIZE,
    workers: int | None = None,
    calibration_folds: int = 0,
) -> AdapterReport:
    """Write the manifest of an image-folder dataset (see the module docstring for the layouts).

    Args:
        root: the dataset folder.
        out: the manifest file to write (atomically; nothing is written when this raises).
        role_map: roles per split; None uses :data:`~retailnb.data.adapters.DEFAULT_ROLE_MAP`. Images of
            splits it leaves out are not written.
        split_files: split name -> split list, for a ``root/<class>`` layout. None looks for
            ``root/<split>.txt`` for each split of the role map; ``{}`` uses no lists.
        default_split: the split of every image of a ``root/<class>`` layout without split lists.
        domain: the manifest domain of every image (``catalogue``, ``shelf`` or ``unknown``).
        on_error: ``"raise"`` stops at the first bad input with an error naming it; ``"skip"`` leaves bad
            inputs out and lists them in the report. Bad inputs: unusable image files (missing, empty,
            truncated, not an image, too small, broken links, link loops, unreadable), empty or
            unlistable class folders, split-list lines naming missing
            files, unknown classes or images listed twice.
        min_size: smallest accepted shorter side of an image, in pixels.
        workers: processes validating the images; None uses every available core.
        calibration_folds: keep one fold in this many of each product's train photos out of training, for the
            rejection thresholds (:func:`~retailnb.data.adapters.held_for_calibration`); 0 keeps none.

    Returns:
        Rows per role, images per split, number of classes, skipped inputs and ignored files (files
        in class folders without an image extension).

    Raises:
        DatasetError: the root is neither layout, or a bad input with ``on_error="raise"``.
        ImageError: an unusable image with ``on_error="raise"``.
    """
    started = time.perf_counter()
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    roles = resolve_role_map(role_map)
    issues = Issues(on_error)
    root = Path(root).resolve()
    ignored: list[Path] = []
    candidates, n_classes = image_folder_candidates(
        root, role_map=roles, split_files=split_files, default_split=default_split, issues=issues, domain=domain,
        ignored=ignored,
    )
    if ignored:
        log.warning("%s: ignored %d file(s) that are not images by their extension (e.g. %s); listed in the report",
                    root, len(ignored), ignored[0])
    return write_adapter_manifest(
        candidates,
        out,
        role_map=roles,
        issues=issues,
        n_classes=n_classes,
        started=started,
        source=root,
        min_size=min_size,
        workers=workers,
        ignored=tuple(str(p) for p in ignored),
        min_classes=2,
        calibration_folds=calibration_folds,
    )
