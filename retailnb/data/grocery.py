"""Manifests from the Grocery Store Dataset (Klasson et al., WACV 2019).

Layout, under the ``dataset/`` folder of the published repository:

* ``classes.csv``: one row per fine class: name, id, coarse class name, coarse id, then the iconic
  image's path and the product description's path, both starting ``/iconic-images-and-descriptions/``
  and relative to ``dataset/``.
* ``train.txt``, ``val.txt``, ``test.txt``: one natural (in-store) photo per line,
  ``train/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg, 0, 0`` = path relative to ``dataset/``,
  fine id, coarse id.

The photos become ``domain="shelf"`` rows of their split; each class's iconic (web-shop) image becomes a
``domain="catalogue"`` row of the train split. Labels are the dataset's own fine or coarse ids.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
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
from retailnb.data.images import DEFAULT_MIN_SIZE

log = logging.getLogger(__name__)

Labels = Literal["fine", "coarse"]
Kinds = Literal["all", "even", "odd"]
KINDS: tuple[Kinds, ...] = ("all", "even", "odd")
"""Which coarse kinds an ingest keeps: every kind, or the kinds of even or of odd coarse id.

``even`` and ``odd`` are a class-disjoint split by coarse kind: every variety of a kind (the five apples,
the ten juices) falls on the same side, so a backbone pretrained on one half has seen no product of the
other, nor a near-duplicate of one. The coarse ids alternate through fruit, packages and vegetables, so
each half holds some of each (on the published dataset: even 35 products of 22 kinds, odd 46 of 21).
"""
PathLike = str | os.PathLike[str]

CATALOGUE_SPLIT = "train"
"""The split of the iconic images: they are the labelled catalogue a probe is trained from."""

_CLASSES_HEADER = ("Class Name", "Class ID", "Coarse Class Name", "Coarse Class ID", "Iconic Image Path")


@dataclass(frozen=True)
class GroceryClass:
    """One fine class of ``classes.csv``."""

    fine_id: int
    fine_name: str
    coarse_id: int
    coarse_name: str
    iconic: str  # path of the iconic image relative to dataset/, empty when none

    def label(self, labels: Labels) -> tuple[int, str, str]:
        """(label, class_name, group) of this class's images for fine or coarse labels.

        With fine labels the group is the coarse class; coarse labels have no group.
        """
        if labels == "fine":
            return self.fine_id, self.fine_name, self.coarse_name
        return self.coarse_id, self.coarse_name, ""

    def in_kinds(self, kinds: Kinds) -> bool:
        """Whether this class belongs to the half ``kinds`` (see :data:`KINDS`)."""
        return kinds == "all" or (self.coarse_id % 2 == 0) == (kinds == "even")


def find_dataset_dir(root: PathLike) -> Path:
    """The folder holding ``classes.csv``: ``root`` itself or ``root/dataset``.

    Raises:
        DatasetError: neither holds ``classes.csv``; the message names ``root``.
    """
    root = Path(root).resolve()
    for folder in (root, root / "dataset"):
        if (folder / "classes.csv").is_file():
            return folder
    raise DatasetError(f"{root}: not a Grocery Store Dataset (no classes.csv here nor in {root / 'dataset'})")


def read_classes(dataset_dir: Path) -> list[GroceryClass]:
    """Read and check ``classes.csv``.

    Raises:
        DatasetError: the file is malformed, a fine id repeats, or a coarse name has two ids (or the
            reverse); the message names the file and line.
    """
    path = dataset_dir / "classes.csv"
    with path.open(newline="") as fh:
        rows = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    if not rows or tuple(c.split(" (")[0].strip() for c in rows[0][: len(_CLASSES_HEADER)]) != _CLASSES_HEADER:
        raise DatasetError(f"{path}: expected a header starting with {', '.join(_CLASSES_HEADER)}")
    classes: list[GroceryClass] = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            name, fine_id, coarse_name, coarse_id, iconic = (c.strip() for c in row[:5])
            classes.append(GroceryClass(int(fine_id), name, int(coarse_id), coarse_name, iconic.lstrip("/")))
        except ValueError:
            raise DatasetError(f"{path}, line {line}: malformed row {row}") from None
    _check_classes(classes, path)
    return classes


def _check_classes(classes: list[GroceryClass], path: Path) -> None:
    """Fine ids unique; coarse names and ids in one-to-one correspondence."""
    if len({c.fine_id for c in classes}) != len(classes):
        raise DatasetError(f"{path}: fine class ids repeat")
    pairs = {(c.coarse_id, c.coarse_name) for c in classes}
    if len(pairs) != len({i for i, _ in pairs}) or len(pairs) != len({n for _, n in pairs}):
        raise DatasetError(f"{path}: coarse class names and ids do not correspond one to one")


def read_split(
    list_file: Path, dataset_dir: Path, classes: Mapping[int, GroceryClass], issues: Issues
) -> list[tuple[Path, GroceryClass]]:
    """Read a split list (``path, fine id, coarse id`` per line) into (absolute image path, class).

    Unusable lines (malformed, unknown fine id, coarse id disagreeing with ``classes.csv``, a path
    outside the dataset or naming a missing file) go to ``issues``.

    Raises:
        DatasetError: the list does not exist, or a line is unusable and ``on_error="raise"``.
    """
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: split list not found")
    entries = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{list_file}, line {number}"
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[1].lstrip("-").isdigit() or not fields[2].lstrip("-").isdigit():
            issues.report(where, f"malformed line {line!r}; expected 'path, fine id, coarse id'")
            continue
        rel, fine_id, coarse_id = PurePosixPath(fields[0]), int(fields[1]), int(fields[2])
        cls = classes.get(fine_id)
        if cls is None:
            issues.report(where, f"{rel} has unknown fine class id {fine_id} (not in classes.csv)")
        elif cls.coarse_id != coarse_id:
            issues.report(where, f"{rel} has coarse id {coarse_id}, but classes.csv gives {cls.coarse_id}")
        elif rel.is_absolute() or ".." in rel.parts:
            issues.report(where, f"{rel} is not a path inside {dataset_dir}")
        elif not (dataset_dir / rel).is_file():
            issues.report(where, f"{rel} names a file that does not exist ({dataset_dir / rel})")
        else:
            entries.append((dataset_dir / rel, cls))
    return entries


def _candidate(path: Path, cls: GroceryClass, labels: Labels, split: str, domain: str) -> Candidate:
    label, class_name, group = cls.label(labels)
    return Candidate(path=path, label=label, class_name=class_name, split=split, domain=domain, group=group)


def grocery_candidates(
    dataset_dir: Path, *, labels: Labels, role_map: Mapping[str, tuple[str, ...]], issues: Issues,
    kinds: Kinds = "all",
) -> tuple[list[Candidate], int]:
    """The catalogue (iconic) and shelf (photo) images of the splits the role map uses.

    Args:
        kinds: keep every class, or only those of the even or odd coarse kinds (:data:`KINDS`); the
            split lists' lines of the other half are left out silently (they are not errors).

    Returns:
        The candidates (catalogue images first) and the number of classes their labels index.
    """
    if kinds not in KINDS:
        raise ValueError(f"kinds must be one of {KINDS}, got {kinds!r}")
    every_class = read_classes(dataset_dir)
    classes = [cls for cls in every_class if cls.in_kinds(kinds)]
    candidates = []
    if role_map.get(CATALOGUE_SPLIT):
        for cls in classes:
            if cls.iconic:
                candidates.append(_candidate(dataset_dir / cls.iconic, cls, labels, CATALOGUE_SPLIT, "catalogue"))
    by_id = {c.fine_id: c for c in every_class}
    for split, roles in role_map.items():
        if roles:
            for path, cls in read_split(dataset_dir / f"{split}.txt", dataset_dir, by_id, issues):
                if cls.in_kinds(kinds):
                    candidates.append(_candidate(path, cls, labels, split, "shelf"))
    n_classes = len({cls.label(labels)[0] for cls in classes})
    return candidates, n_classes


def build_grocery_manifest(
    root: PathLike,
    out: PathLike,
    *,
    labels: Labels = "fine",
    kinds: Kinds = "all",
    role_map: RoleMap | None = None,
    on_error: OnError = "raise",
    min_size: int = DEFAULT_MIN_SIZE,
    workers: int | None = None,
    calibration_folds: int = 0,
) -> AdapterReport:
    """Write the manifest of a Grocery Store Dataset copy.

    Args:
        root: the dataset's ``dataset/`` folder or the folder holding it.
        out: the manifest file to write (atomically; nothing is written when this raises).
        labels: ``"fine"`` (81 products; the group is the coarse class) or ``"coarse"`` (43 classes such
            as Apple; no group).
        kinds: ``"all"`` classes, or one half of a class-disjoint split by coarse kind, ``"even"`` or
            ``"odd"`` (:data:`KINDS`): pretrain on one half, evaluate transfer on the other.
        role_map: roles per split; None uses :data:`~retailnb.data.adapters.DEFAULT_ROLE_MAP`. Each split
            with roles is read from ``<split>.txt``; the iconic images take the train split's roles.
        on_error: ``"raise"`` stops at the first bad input with an error naming it; ``"skip"`` leaves bad
            inputs out and lists them in the report.
        min_size: smallest accepted shorter side of an image, in pixels.
        workers: processes validating the images; None uses every available core.
        calibration_folds: keep one fold in this many of each product's train photos out of training, for the
            rejection thresholds (:func:`~retailnb.data.adapters.held_for_calibration`); 0 keeps none.

    Returns:
        Rows per role, images per split, number of classes and skipped inputs.

    Raises:
        DatasetError: ``root`` is not the dataset, ``classes.csv`` or a split list is missing or
            malformed, or a bad split-list line with ``on_error="raise"``.
        ImageError: an unusable image with ``on_error="raise"``.
    """
    started = time.perf_counter()
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    roles = resolve_role_map(role_map)
    issues = Issues(on_error)
    dataset_dir = find_dataset_dir(root)
    candidates, n_classes = grocery_candidates(dataset_dir, labels=labels, role_map=roles, issues=issues,
                                               kinds=kinds)
    return write_adapter_manifest(
        candidates,
        out,
        role_map=roles,
        issues=issues,
        n_classes=n_classes,
        started=started,
        source=dataset_dir,
        min_size=min_size,
        workers=workers,
        calibration_folds=calibration_folds,
    )
