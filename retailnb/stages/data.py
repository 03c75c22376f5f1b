"""The data stage: the manifest every later stage reads, and its counts as metrics."""

from __future__ import annotations

from dataclasses import dataclass

from retailnb.config.data import DataStageSpec
from retailnb.data.manifest import Manifest, read_manifest
from retailnb.data.prepare import prepare_dataset
from retailnb.data.statistics import describe_manifest
from retailnb.plots.manifest import images_per_class
from retailnb.results.records import DataRecord
from retailnb.util.tables import markdown_table


@dataclass(frozen=True)
class DataPaths:
    """Where the stage writes: the prepared folder (``manifest.csv``) and the metrics file."""

    out_dir: str
    metrics: str


def run(spec: DataStageSpec, paths: DataPaths) -> tuple[DataRecord, Manifest]:
    """Build (synthetic) or ingest (real) the dataset, write its manifest and record; return both."""
    data = spec.data
    manifest_path = prepare_dataset(data.source, paths.out_dir, root=data.root, labels=data.labels, kinds=data.kinds,
                                    on_error=data.on_error, min_size=data.min_size, synthetic=data.synthetic,
                                    calibration_folds=data.calibration_folds)
    manifest = read_manifest(manifest_path)
    record = DataRecord.model_validate(describe_manifest(manifest))
    record.write(paths.metrics)
    return record, manifest


def roles_markdown(manifest: Manifest) -> str:
    """A Markdown table of each role present: its classes, images, and images per class (one number when
    every class has the same, else the range)."""
    rows = []
    for role, n in manifest.role_counts().items():
        if n:
            counts = sorted(images_per_class(manifest, role).values())
            per_class = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
            rows.append([f"`{role}`", str(len(counts)), str(n), per_class])
    return markdown_table(["role", "classes", "images", "images per class"], rows)
