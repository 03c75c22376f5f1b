"""The data stage's one entry point: build (synthetic) or ingest (real) a dataset into a manifest folder.

Whatever the source, the result is ``out_dir/manifest.csv`` in the format of
:mod:`retailnb.data.manifest`, so every later stage is the same for synthetic and real data. Real images
are never copied: their manifest rows hold absolute paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from retailnb.util.atomic import temporary_folder
from retailnb.data.adapters import AdapterReport
from retailnb.data.grocery import build_grocery_manifest
from retailnb.data.folder import build_image_folder_manifest
from retailnb.config.data import SyntheticSpec, check_calibration_folds, check_kinds
from retailnb.data.synthetic import generate

SOURCES: tuple[str, ...] = ("synthetic", "grocery_store", "imagefolder")
log = logging.getLogger(__name__)


def prepare_dataset(
    source: str,
    out_dir: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] = "",
    labels: str = "fine",
    kinds: str = "all",
    on_error: str = "raise",
    min_size: int = 16,
    synthetic: SyntheticSpec | None = None,
    workers: int | None = None,
    calibration_folds: int = 0,
) -> Path:
    """Write the manifest of ``source`` into ``out_dir`` (replaced whole, only once complete).

    It is built in a temporary folder beside ``out_dir`` (``.<name>.tmp-<pid>-*``); those that killed
    runs left are removed first (see :func:`retailnb.util.atomic.remove_stale_temporaries`).

    Args:
        source: ``synthetic`` (rendered by retailnb), ``grocery_store`` or ``imagefolder``.
        out_dir: the folder to (re)write; it holds ``manifest.csv`` and, for real data,
            ``ingest_report.json`` listing skipped inputs.
        root: the real dataset's folder (ignored for ``synthetic``).
        labels: Grocery Store labels, ``fine`` or ``coarse``.
        kinds: Grocery Store classes, ``all`` or one half of its class-disjoint split by coarse kind
            (``even`` or ``odd``; see :data:`retailnb.data.grocery.KINDS`).
        on_error: ``raise`` or ``skip`` for bad real images (see the adapters).
        min_size: smallest accepted shorter side of a real image, in pixels.
        synthetic: the synthetic dataset's sizes (needed for ``synthetic``; ``data.synthetic``).
        workers: worker processes; None uses every core.
        calibration_folds: a real dataset keeps one fold in this many of each product's train photos out of
            training, for the rejection thresholds (:func:`retailnb.data.adapters.held_for_calibration`); 0
            keeps none. The synthetic target is never trained on and takes 0.

    Returns:
        The manifest's path.

    Raises:
        ValueError: an unknown ``source``, a real source without ``root``, ``kinds`` other than
            ``all`` for a source without coarse kinds, or ``calibration_folds`` that is neither 0 nor at least 2
            or not 0 for ``synthetic``.
    """
    out_dir = Path(out_dir)
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    check_kinds(source, kinds)
    check_calibration_folds(source, calibration_folds)
    if source == "synthetic":
        if synthetic is None:
            raise ValueError("data.synthetic: the synthetic source needs its sizes (a SyntheticSpec)")
        return generate(synthetic, out_dir, workers=workers)
    if not str(root):
        raise ValueError(f"data.root must name the dataset folder for data.source={source!r}")
    if not Path(root).exists():
        raise FileNotFoundError(f"data.root {str(root)!r} does not exist (data.source={source!r})")
    tmp = temporary_folder(out_dir)  # a killed run's folder is recognised and removed by the next run
    try:
        manifest = tmp / "manifest.csv"
        if source == "grocery_store":
            report = build_grocery_manifest(
                root, manifest, labels=labels, kinds=kinds, on_error=on_error,  # type: ignore[arg-type]
                min_size=min_size, workers=workers, calibration_folds=calibration_folds,
            )
        else:
            report = build_image_folder_manifest(
                root, manifest, on_error=on_error, min_size=min_size, workers=workers,  # type: ignore[arg-type]
                calibration_folds=calibration_folds)
        (tmp / "ingest_report.json").write_text(json.dumps(_report_dict(report), indent=2, default=str) + "\n")
        if report.n_skipped:
            log.warning("skipped %d bad input(s) of %s; see ingest_report.json", report.n_skipped, root)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "manifest.csv"


def _report_dict(report: AdapterReport) -> dict[str, object]:
    """The adapter's report as JSON-ready values, without the temporary manifest path."""
    data = asdict(report)
    data.pop("manifest", None)
    return data
