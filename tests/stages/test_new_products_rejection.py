"""The bundle the new_products stage writes answers "unknown" with the score and recall of params.yaml."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retailnb.bundle.fit import choose_rejection
from retailnb.bundle.io import load_bundle
from retailnb.config.params_file import read_params
from retailnb.config.new_products import NewProductsStageSpec
from retailnb.config.stages import spec_from_params
from retailnb.data.manifest import ManifestRow, read_manifest, write_manifest
from retailnb.stages import new_products


def stage_paths(pipeline: Path, out: Path) -> new_products.NewProductsPaths:
    """The stage's paths on the tiny pipeline's seed-0 main backbone, writing under ``out``."""
    return new_products.NewProductsPaths(
        manifest=str(pipeline / "data" / "prepared" / "manifest.csv"),
        backbone_weights=str(pipeline / "models" / "seeds" / "0" / "pretrain" / "simclr_supcon" / "backbone.pt"),
        bundle_dir=str(out / "bundle"), metrics=str(out / "new_products.json"))


def test_the_pipelines_bundle_uses_the_rejection_settings_of_params(pipeline: Path) -> None:
    """The default run's bundle: new_products.rejection_score and evaluate.rejection.recall, as written."""
    params = read_params(pipeline / "params.yaml")
    rejection = load_bundle(pipeline / "models" / "bundle" / "catalogue.bundle").rejection
    assert rejection is not None
    assert rejection.score == params["new_products"]["rejection_score"]
    assert rejection.recall == params["evaluate"]["rejection"]["recall"]


def test_other_rejection_settings_change_the_bundles_threshold(pipeline: Path, tmp_path: Path) -> None:
    """Through the stage: another score and a lower recall give that score and a higher threshold's recall."""
    params = read_params(pipeline / "params.yaml")
    default = load_bundle(pipeline / "models" / "bundle" / "catalogue.bundle").rejection
    for score in ("prototype", "energy"):
        params["new_products"]["rejection_score"] = score
        params["evaluate"]["rejection"]["recall"] = 0.5
        spec = spec_from_params(NewProductsStageSpec, params)
        assert spec.recall == 0.5 and spec.new_products.rejection_score == score
        result = new_products.run(spec, stage_paths(pipeline, tmp_path / score))
        rejection = result.bundle.rejection
        assert rejection is not None and (rejection.score, rejection.recall) == (score, 0.5)
        saved = load_bundle(result.bundle_path).rejection
        assert saved == rejection
        if score == "prototype":
            assert default is not None and default.score == "prototype"
            # accepting half the enrolled photos needs a higher similarity than accepting 95% of them
            assert rejection.threshold > default.threshold


def test_the_first_bundle_chooses_its_threshold_on_the_photos_no_training_read(pipeline: Path, tmp_path: Path) -> None:
    """As on a real dataset whose train photos also train the backbone: every target photo but the first of each
    product gets a ``labelled`` row too, and the bundle's threshold is chosen on those first photos (the synthetic
    default's target photos train nothing: no record)."""
    spec = spec_from_params(NewProductsStageSpec, read_params(pipeline / "params.yaml"))
    default = new_products.run(spec, stage_paths(pipeline, tmp_path / "default"))
    assert default.bundle.calibrate is None
    manifest = read_manifest(pipeline / "data" / "prepared" / "manifest.csv")
    first: dict[str, Path] = {}
    rows = [dataclasses.replace(r, path=str(manifest.resolve(r))) for r in manifest.records]  # written elsewhere
    for r in manifest.select("probe_train"):
        path = manifest.resolve(r)
        if first.setdefault(r.class_name, path) != path:
            rows.append(ManifestRow(path=str(path), label=r.label, class_name=r.class_name, split="train",
                                    role="labelled"))
    paths = stage_paths(pipeline, tmp_path / "held")
    paths = new_products.NewProductsPaths(manifest=str(write_manifest(rows, tmp_path / "manifest.csv")),
                                          backbone_weights=paths.backbone_weights, bundle_dir=paths.bundle_dir,
                                          metrics=paths.metrics)
    held = new_products.run(spec, paths)
    first_bundle = held.bundle.provenance["history"][0]
    calibrate = held.bundle.calibrate
    assert calibrate is not None and first_bundle["operation"] == "fit"
    old = calibrate[: first_bundle["n_images"]]  # the first fit's rows; enrolled products' rows follow, unmarked
    assert old.sum() == len(first) - spec.new_products.n_new and not calibrate[first_bundle["n_images"]:].any()
    b = held.bundle
    assert b.probe is not None
    assert b.rejection == choose_rejection(b.features, b.labels, b.settings, b.probe.c, b.negatives, calibrate)
