"""What every dataset adapter shares: roles per split, bad-input policy, validation and the report.

An adapter (:mod:`retailnb.data.folder`, :mod:`retailnb.data.grocery`) reads a dataset's own layout
into :class:`Candidate` images, reporting anything wrong to an :class:`Issues` collector. This module
then checks every image file in parallel, expands each image into one manifest row per role of its split
(:data:`DEFAULT_ROLE_MAP`) and writes the manifest atomically, or nothing at all when it raises.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from retailnb.data.images import DEFAULT_MIN_SIZE, ImageError, check_images, decode_images
from retailnb.data.lookalikes import THUMBNAIL_SOURCE, calibration_share
from retailnb.data.manifest import EVALUATION_ROLES, ROLES, TRAINING_ROLES, ManifestRow, write_manifest

log = logging.getLogger(__name__)

RoleMap = Mapping[str, Sequence[str]]
OnError = Literal["raise", "skip"]

DEFAULT_ROLE_MAP: dict[str, tuple[str, ...]] = {
    "train": ("labelled", "monitor_train", "probe_train"),
    "val": ("unlabelled",),
    "test": ("unlabelled", "monitor_test", "probe_test"),
}
"""Roles the images of each dataset split play; an image gets one manifest row per role."""

class DatasetError(ValueError):
    """A dataset's layout is not what its adapter expects; the message names the file or folder."""


@dataclass(frozen=True)
class Candidate:
    """An image named by a dataset's layout, before its file is checked and its roles assigned."""

    path: Path
    label: int
    class_name: str
    split: str
    domain: str = "unknown"
    group: str = ""


@dataclass(frozen=True)
class Skipped:
    """An input left out of the manifest and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class AdapterReport:
    """What an adapter wrote.

    Attributes:
        manifest: the manifest file written.
        role_counts: manifest rows per role (every role listed).
        split_counts: distinct images per dataset split.
        n_classes: classes the labels index.
        skipped: inputs left out (only with ``on_error="skip"``), with reasons.
        seconds: wall time of the whole build, validation included.
        ignored: files beside the images that are not images by their name (``README.txt``; see
            :mod:`retailnb.data.listing`), never read: listed so that nothing vanishes uncounted.
        n_held: training photos kept out of every training role for the rejection thresholds
            (:func:`held_for_calibration`; 0 without ``calibration_folds``).
    """

    manifest: Path
    role_counts: dict[str, int]
    split_counts: dict[str, int]
    n_classes: int
    skipped: tuple[Skipped, ...]
    seconds: float
    ignored: tuple[str, ...] = ()
    n_held: int = 0

    @property
    def n_skipped(self) -> int:
        """Number of inputs left out."""
        return len(self.skipped)


@dataclass
class Issues:
    """Applies the bad-input policy: raise at the first problem, or record it and carry on.

    Args:
        on_error: ``"raise"`` to stop with one error naming the file, ``"skip"`` to leave it out and count it.
    """

    on_error: OnError
    skipped: list[Skipped] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def report(self, where: str | os.PathLike[str], reason: str, *, image: bool = False) -> None:
        """Handle one problem.

        Args:
            where: the file or folder at fault (a split list may add its line: ``"train.txt, line 3"``).
            reason: what is wrong, in words.
            image: the problem is the content of an image file (raised as :class:`ImageError`),
                rather than the dataset's layout (raised as :class:`DatasetError`).

        Raises:
            ImageError: with ``on_error="raise"`` and ``image``.
            DatasetError: with ``on_error="raise"`` otherwise.
        """
        if self.on_error == "raise":
            raise ImageError(where, reason) if image else DatasetError(f"{where}: {reason}")
        log.warning("skipping %s: %s", where, reason)
        self.skipped.append(Skipped(str(where), reason))


def resolve_role_map(role_map: RoleMap | None) -> dict[str, tuple[str, ...]]:
    """Validate a role map (None gives :data:`DEFAULT_ROLE_MAP`); splits it leaves out are not written."""
    role_map = DEFAULT_ROLE_MAP if role_map is None else role_map
    resolved = {split: tuple(roles) for split, roles in role_map.items()}
    for split, roles in resolved.items():
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise ValueError(f"role map: split {split!r} has unknown role(s) {unknown}; expected some of {ROLES}")
    return resolved


def validate_images(
    candidates: Sequence[Candidate], issues: Issues, *, min_size: int = DEFAULT_MIN_SIZE, workers: int | None = None
) -> list[Candidate]:
    """Check every candidate's image file (in parallel) and keep the usable ones, in order.

    Raises:
        ImageError: with ``issues.on_error == "raise"``, at the first unusable image in order.
    """
    kept = []
    problems = check_images([c.path for c in candidates], min_size, workers=workers)
    for candidate, problem in zip(candidates, problems, strict=True):
        if problem is None:
            kept.append(candidate)
        else:
            issues.report(candidate.path, problem, image=True)
    return kept


def expand_roles(candidates: Sequence[Candidate], role_map: Mapping[str, Sequence[str]],
                 held: frozenset[Path] = frozenset()) -> list[ManifestRow]:
    """One manifest row per (image, role of its split), paths absolute; splits without roles drop out. An image
    in ``held`` keeps only its split's :data:`~retailnb.data.manifest.EVALUATION_ROLES`."""
    return [
        ManifestRow(
            path=str(c.path),
            label=c.label,
            class_name=c.class_name,
            split=c.split,
            role=role,
            domain=c.domain,
            group=c.group,
        )
        for c in candidates
        for role in role_map.get(c.split, ())
        if c.path not in held or role in EVALUATION_ROLES
    ]


def held_for_calibration(candidates: Sequence[Candidate], role_map: Mapping[str, Sequence[str]], folds: int, *,
                         min_size: int = DEFAULT_MIN_SIZE, workers: int | None = None) -> frozenset[Path]:
    """The photos kept out of training so that the rejection thresholds can be chosen on photos no training
    saw (``data.calibration_folds``): of each product's photos that would both train the backbone and
    enrol it (a split with a :data:`~retailnb.data.manifest.TRAINING_ROLES` role and ``probe_train``), whole
    groups of look-alikes, one fold in ``folds`` (:func:`retailnb.data.lookalikes.calibration_share`, on
    the photos decoded at :data:`~retailnb.data.lookalikes.THUMBNAIL_SOURCE` pixels; seed 0).

    A backbone that trained on every photo a threshold is chosen from finds them more familiar than a new
    photo of the same product: on the Grocery Store Dataset, thresholds for 95% recall then accepted 86-94% of
    new known photos, and 94-98% when a third of the photos stayed out (docs/experiments.md, ``enrolled_split``).
    """
    both = {split for split, roles in role_map.items()
            if "probe_train" in roles and any(role in TRAINING_ROLES for role in roles)}
    shared = [c for c in candidates if c.split in both]
    if not shared:
        return frozenset()
    images = decode_images([c.path for c in shared], THUMBNAIL_SOURCE, workers=workers, min_size=min_size)
    held = calibration_share(images, np.array([c.label for c in shared]), folds, seed=0)
    return frozenset(c.path for c, keep_out in zip(shared, held, strict=True) if keep_out)


def contiguous_labels(kept: Sequence[Candidate], n_classes: int,
                      source: str | os.PathLike[str]) -> tuple[list[Candidate], int]:
    """The kept images and ``k``, the classes left; when a class lost every image, labels renumbered ``0..k-1``
    in the order of their labels.

    A class whose every image was skipped would otherwise leave a gap in the labels, and the report would
    count a class the manifest does not hold; the renumbering is logged with the classes lost. With no class
    lost the labels stay as the adapter gave them (a dataset's own ids).
    """
    present = sorted({c.label for c in kept})
    if len(present) == n_classes:  # no class lost (a dataset's own ids, e.g. a subset of Grocery's, stay)
        return list(kept), n_classes
    rank = {label: i for i, label in enumerate(present)}
    log.warning("%s: %d of %d classes lost every image; labels renumbered 0..%d", source,
                n_classes - len(present), n_classes, len(present) - 1)
    return [replace(c, label=rank[c.label]) for c in kept], len(present)


def write_adapter_manifest(
    candidates: Sequence[Candidate],
    out: str | os.PathLike[str],
    *,
    role_map: Mapping[str, Sequence[str]],
    issues: Issues,
    n_classes: int,
    started: float,
    source: str | os.PathLike[str],
    min_size: int = DEFAULT_MIN_SIZE,
    workers: int | None = None,
    ignored: tuple[str, ...] = (),
    min_classes: int = 1,
    calibration_folds: int = 0,
) -> AdapterReport:
    """Validate the candidates, expand them into rows and write the manifest; the last step of an adapter.

    Args:
        candidates: images named by the dataset layout, paths absolute.
        out: manifest file to write.
        role_map: roles per split (already validated).
        issues: the bad-input policy, holding the problems the layout reading skipped.
        n_classes: classes the labels index (for the report).
        started: ``time.perf_counter()`` when the adapter started (for the report).
        source: the dataset root (for messages).
        min_size: smallest accepted shorter side of an image, in pixels.
        workers: validation processes; None uses every available core.
        ignored: files the adapter did not take as images (for the report).
        min_classes: fewest classes a usable dataset has (2 for a user's own photos: a classifier needs two).
        calibration_folds: keep one fold in this many of each product's training photos out of training
            (:func:`held_for_calibration`); 0 keeps none.

    Returns:
        The report of what was written and skipped.

    Raises:
        ImageError: an image is unusable and ``on_error="raise"``; nothing is written.
        DatasetError: no usable image is left, or fewer classes than ``min_classes``; nothing is written.
    """
    wanted = [c for c in candidates if role_map.get(c.split)]
    kept = validate_images(wanted, issues, min_size=min_size, workers=workers)
    if not kept:
        raise DatasetError(f"{source}: no usable images for the splits {sorted(role_map)}; nothing written")
    kept, n_classes = contiguous_labels(kept, n_classes, source)
    if n_classes < min_classes:
        raise DatasetError(f"{source}: images of one class only ({kept[0].class_name!r}): a classifier needs at "
                           f"least {min_classes}; nothing written")
    held = (held_for_calibration(kept, role_map, calibration_folds, min_size=min_size, workers=workers)
            if calibration_folds else frozenset())
    records = expand_roles(kept, role_map, held)
    if not records:
        raise DatasetError(f"{source}: no usable images for the splits {sorted(role_map)}; nothing written")
    path = write_manifest(records, out)
    role_counts = Counter(r.role for r in records)
    report = AdapterReport(
        manifest=path,
        role_counts={role: role_counts.get(role, 0) for role in ROLES},
        split_counts=dict(Counter(c.split for c in kept)),
        n_classes=n_classes,
        skipped=tuple(issues.skipped),
        seconds=time.perf_counter() - started,
        ignored=ignored,
        n_held=len(held),
    )
    log.info(
        "%s: wrote %d rows (%d images, %d classes) to %s in %.1fs; skipped %d",
        source,
        len(records),
        len(kept),
        n_classes,
        path,
        report.seconds,
        report.n_skipped,
    )
    return report
