"""Downstream targets: which catalogue the few-shot probes are trained and tested on.

The evaluation runs once per entry of ``evaluate.targets`` in ``params.yaml``. A target is either the
data stage's own target catalogue (``prepared``: the ``probe_train``/``probe_test`` rows of
``data/prepared/manifest.csv``) or any dataset an adapter reads (``grocery_store``, ``imagefolder``),
whose train split becomes ``probe_train`` and its test split ``probe_test``. The backbone's pretraining
data and a target may differ: that is how one asks whether features transfer to another product set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retailnb.data.prepare import prepare_dataset

PREPARED = "prepared"
"""The source name of the data stage's own target catalogue."""

TARGET_SOURCES: tuple[str, ...] = (PREPARED, "grocery_store", "imagefolder")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Target:
    """One downstream target of ``evaluate.targets``.

    Attributes:
        name: the key in ``params.yaml``; names the target's outputs (``metrics/evaluate/<name>.json``).
        source: ``prepared``, ``grocery_store`` or ``imagefolder``.
        root: the dataset folder (real sources only).
        labels: ``fine`` or ``coarse`` (Grocery Store only).
    """

    name: str
    source: str = PREPARED
    root: str = ""
    labels: str = "fine"

    def __post_init__(self) -> None:
        where = f"evaluate.targets.{self.name}"
        if self.source not in TARGET_SOURCES:
            raise ValueError(f"{where}.source must be one of {TARGET_SOURCES}, got {self.source!r}")
        if self.source != PREPARED and not self.root:
            raise ValueError(f"{where}.root must name the dataset folder for source {self.source!r}")
        if self.labels not in ("fine", "coarse"):
            raise ValueError(f"{where}.labels must be 'fine' or 'coarse', got {self.labels!r}")


def target_manifest(target: Target, prepared_manifest: PathLike, work_dir: PathLike, *,
                    on_error: str = "skip", min_size: int = 16) -> Path:
    """The manifest whose ``probe_train``/``probe_test`` rows are ``target``'s images.

    Args:
        target: the target to evaluate.
        prepared_manifest: the data stage's manifest, used as is for a ``prepared`` target.
        work_dir: where a real dataset's manifest is written (replaced whole); its images stay where they are.
        on_error: what a bad image of a real dataset does (see :func:`retailnb.data.prepare.prepare_dataset`).
        min_size: smallest accepted shorter side of a real image, in pixels.

    Raises:
        FileNotFoundError: the prepared manifest or the dataset folder is missing; the message names it.
    """
    if target.source == PREPARED:
        path = Path(prepared_manifest)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest for target {target.name!r}; run the data stage first")
        return path
    if not Path(target.root).exists():
        raise FileNotFoundError(f"evaluate.targets.{target.name}.root: {target.root!r} does not exist")
    return prepare_dataset(target.source, work_dir, root=target.root, labels=target.labels, on_error=on_error,
                           min_size=min_size)
