"""Counts that describe a manifest: what a person checks first and what `dvc metrics` tracks."""

from __future__ import annotations

from collections import Counter

from retailnb.data.manifest import Manifest


def describe_manifest(manifest: Manifest) -> dict[str, object]:
    """Images and classes per role, images per domain, the few-shot depth of the probe split, how
    many target products the source (labelled or unlabelled) also holds: 0 when, as on the synthetic
    data, the probes test products that pretraining never saw; and how many ``probe_train`` images no
    training role holds (all of them on the synthetic data; on a real dataset those ``data.calibration_folds``
    kept out, which the rejection thresholds are chosen on).

    Returned as plain JSON-ready values so the data stage can write it as its metrics file.
    """
    images = manifest.role_counts()
    classes = {role: len({r.class_name for r in manifest.select(role)}) for role in images}
    domains = Counter(r.domain for r in manifest.records)
    probe = Counter(r.class_name for r in manifest.select("probe_train"))
    source = {r.class_name for r in manifest.select("labelled", "unlabelled")}
    target = {r.class_name for r in manifest.select("probe_test")}
    trained = manifest.training_paths()
    return {
        "images": images,
        "classes": classes,
        "domains": dict(sorted(domains.items())),
        "unique_images": len({r.path for r in manifest.records}),
        "probe_train_min_per_class": min(probe.values()) if probe else 0,
        "target_classes_in_source": len(target & source),
        "probe_train_unseen": sum(manifest.resolve(r).resolve() not in trained
                                  for r in manifest.select("probe_train")),
    }
