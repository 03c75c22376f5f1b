"""One manifest format for every dataset, synthetic or real.

A manifest is a CSV file with one row per (image, role). Downstream stages read nothing but manifests,
so synthetic and real data are treated the same way. An image may appear in several rows when it serves
several roles (for example a real dataset's train split is both ``labelled`` for pretraining and
``probe_train`` for evaluation).

Columns:
    path: image path, relative to the manifest's folder unless absolute.
    label: integer id of ``class_name`` within the dataset (-1 when the truth is unknown).
    class_name: the product (SKU) name; empty when unknown.
    split: the dataset's own split (``train``, ``val``, ``test``).
    role: what the row is used for, one of :data:`ROLES`.
    domain: ``catalogue`` (clean packshot), ``shelf`` (in-store photo) or ``unknown``.
    group: brand family or coarse class, empty when none.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from retailnb.util.atomic import atomic_write

ROLES: tuple[str, ...] = (
    "labelled",  # source images whose labels pretraining may use (SupCon, teacher classifier)
    "unlabelled",  # source images whose labels are hidden from training (kept only to score pseudolabels)
    "monitor_train",  # held-out source classes: the pretraining monitor fits its probe here
    "monitor_test",  # ... and scores it here
    "probe_train",  # target catalogue: few-shot training images for the downstream probe
    "probe_test",  # target catalogue: shelf test images for the downstream probe
)
TRAINING_ROLES: tuple[str, ...] = ("labelled", "unlabelled")
"""The roles whose images train the backbone (pretraining and the noisy student)."""
EVALUATION_ROLES: tuple[str, ...] = ("probe_train", "probe_test")
"""The roles only the evaluation reads."""
DOMAINS: tuple[str, ...] = ("catalogue", "shelf", "unknown")
COLUMNS: tuple[str, ...] = ("path", "label", "class_name", "split", "role", "domain", "group")


class ManifestError(ValueError):
    """A manifest file is missing, malformed or holds a value outside the format."""


@dataclass(frozen=True)
class ManifestRow:
    """One row of a manifest: an image and the role it plays."""

    path: str
    label: int
    class_name: str
    split: str
    role: str
    domain: str = "unknown"
    group: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ManifestError(f"unknown role {self.role!r} for {self.path}; expected one of {ROLES}")
        if self.domain not in DOMAINS:
            raise ManifestError(f"unknown domain {self.domain!r} for {self.path}; expected one of {DOMAINS}")


@dataclass(frozen=True)
class Manifest:
    """The rows of a manifest plus the folder their relative paths are resolved against."""

    records: tuple[ManifestRow, ...]
    root: Path

    def resolve(self, record: ManifestRow) -> Path:
        """Absolute path of a record's image."""
        p = Path(record.path)
        return p if p.is_absolute() else self.root / p

    def select(self, *roles: str) -> list[ManifestRow]:
        """Rows whose role is one of ``roles``, in manifest order."""
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ManifestError(f"unknown role(s) {sorted(unknown)}; expected some of {ROLES}")
        return [r for r in self.records if r.role in roles]

    def paths(self, records: Sequence[ManifestRow]) -> list[Path]:
        """Absolute image paths of ``records``."""
        return [self.resolve(r) for r in records]

    def training_paths(self) -> frozenset[Path]:
        """The resolved paths of the images that train the backbone (rows of :data:`TRAINING_ROLES`)."""
        return frozenset(self.resolve(r).resolve() for r in self.select(*TRAINING_ROLES))

    def role_counts(self) -> dict[str, int]:
        """Number of rows per role (every role listed, zero when absent)."""
        counts = Counter(r.role for r in self.records)
        return {role: counts.get(role, 0) for role in ROLES}


def encode_labels(records: Sequence[ManifestRow], classes: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Contiguous integer labels ``0..C-1`` for ``records`` and the class names they index.

    Roles use different class subsets, so every consumer re-indexes its own rows. When ``classes`` is
    given, it fixes the order (for example a teacher's classes) and a row outside it raises.
    """
    names = sorted({r.class_name for r in records}) if classes is None else list(classes)
    index = {name: i for i, name in enumerate(names)}
    try:
        return [index[r.class_name] for r in records], names
    except KeyError as err:
        raise ManifestError(f"class {err.args[0]!r} is not among the {len(names)} given classes") from None


def portable_path(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to the folder ``start`` (with ``..`` where needed), in POSIX form.

    An output holding absolute paths is right only in the checkout that wrote it; relative to the file
    that holds it, it stays right in any clone (``dvc pull``) with the same layout. A path on another
    drive (Windows), which has no relative form, stays absolute.
    """
    try:
        return Path(os.path.relpath(Path(path).absolute(), Path(start).absolute())).as_posix()
    except ValueError:
        return str(path)


def write_manifest(records: Iterable[ManifestRow], path: str | os.PathLike[str]) -> Path:
    """Write ``records`` as CSV at ``path`` atomically (temporary file, then rename).

    Image paths are written relative to the manifest's folder (:func:`portable_path`), which is how
    :func:`read_manifest` resolves them.
    """
    folder = Path(path).parent
    with atomic_write(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in records:
            row = asdict(r)
            if Path(r.path).is_absolute():
                row["path"] = portable_path(r.path, folder)
            writer.writerow(row)
    return Path(path)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    records: list[ManifestRow] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}: missing column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                records.append(
                    ManifestRow(
                        path=row["path"],
                        label=int(row["label"]),
                        class_name=row["class_name"],
                        split=row["split"],
                        role=row["role"],
                        domain=row["domain"],
                        group=row["group"],
                    )
                )
            except (ValueError, TypeError) as err:
                raise ManifestError(f"{path}, line {line}: {err}") from None
    if not records:
        raise ManifestError(f"{path}: manifest has no rows")
    return Manifest(records=tuple(records), root=path.parent.resolve())


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ManifestRow))
assert RECORD_FIELDS == COLUMNS, "ManifestRow fields and COLUMNS must agree"
