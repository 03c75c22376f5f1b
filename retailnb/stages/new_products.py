"""The new-products stage: a bundle fitted without some products, then enrolled with them from few shots."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retailnb.bundle.embed import embed
from retailnb.bundle.fit import fit_probe, new_bundle
from retailnb.bundle.io import save_bundle
from retailnb.bundle.model import Bundle, ProbeSettings
from retailnb.config.new_products import NewProductsStageSpec
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.rejection import unseen_photos
from retailnb.bundle.enrolment import enrolment_curve, hold_out_classes
from retailnb.evaluation.quickprobe import load_probe_data
from retailnb.results.records import NewProductsRecord
from retailnb.util.hashing import file_sha256
from retailnb.util.tables import markdown_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewProductsPaths:
    """Where the stage reads and writes: the manifest, the main backbone, the bundle folder, the metrics."""

    manifest: str
    backbone_weights: str
    bundle_dir: str
    metrics: str


@dataclass(frozen=True)
class NewProductsResult:
    """The record and the final bundle (every target product, enrolled with the most shots)."""

    record: NewProductsRecord
    bundle: Bundle
    bundle_path: Path


def run(spec: NewProductsStageSpec, paths: NewProductsPaths) -> NewProductsResult:
    """Fit the first bundle without ``n_new`` products, enrol them from each shot count, write all.

    The first bundle's threshold is chosen on the photos of its products that no training stage read, when the
    manifest keeps some out (``data.calibration_folds``; :func:`~retailnb.evaluation.rejection.unseen_photos`).
    """
    settings = spec.new_products
    size = spec.backbone.image_size
    manifest = read_manifest(paths.manifest)
    data = load_probe_data(manifest, size, "probe_train", "probe_test")
    old, new = hold_out_classes(data.classes, settings.n_new, settings.seed)
    train_names = np.asarray(data.classes)[data.y_train]
    test_names = np.asarray(data.classes)[data.y_test]
    is_old = np.isin(train_names, old)
    bundle = new_bundle(spec.backbone.architecture, weights=paths.backbone_weights, image_size=size,
                        settings=ProbeSettings(seed=settings.seed, rejection_score=settings.rejection_score,
                                                recall=spec.recall))
    source = {"manifest": paths.manifest, "manifest_sha256": file_sha256(paths.manifest), "role": "probe_train",
              "held_out": new}
    unseen = unseen_photos([manifest.resolve(r).resolve() for r in data.train], manifest.training_paths())
    calibrate = None if unseen is None or not unseen[is_old].any() else unseen[is_old]
    bundle = fit_probe(bundle, embed(bundle, data.x_train[is_old]), train_names[is_old].tolist(), source=source,
                       calibrate=calibrate)
    rows, final = enrolment_curve(bundle, data.x_train[~is_old], train_names[~is_old].tolist(),
                                  embed(bundle, data.x_test), test_names.tolist(), shots=settings.shots,
                                  seed=settings.seed)
    for row in rows:  # a timing: to the stage's log, not the record (a rerun leaves the record as it was)
        seconds = row.pop("seconds")
        if row["shots"]:
            log.info("enrolling %d new products from %d images each took %.2f s", len(new), row["shots"], seconds)
    assert bundle.probe is not None  # fit_probe just fitted it
    record = NewProductsRecord(architecture=spec.backbone.architecture, image_size=size, n_old=len(old),
                               n_new=len(new), held_out=list(new), first_c=bundle.probe.c, enrolment=rows)
    record.write(paths.metrics)
    bundle_path = save_bundle(final, Path(paths.bundle_dir) / "catalogue.bundle")
    return NewProductsResult(record=record, bundle=final, bundle_path=bundle_path)


def enrolment_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The record's enrolment rows as a Markdown table: images per new product, then the accuracies."""
    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    body = [["before" if r["shots"] == 0 else str(r["shots"]), str(r["n_images"]), cell(r["old_accuracy"]),
             cell(r["new_accuracy"]), cell(r["accuracy"])] for r in rows]
    return markdown_table(["images per new product", "images enrolled", "old products", "new products",
                           "all products"], body)
