"""What a bundle file is, read without building its backbone: its ``bundle.json``, checked, and its summary.

``retailnb info``, and every command's check of ``--bundle`` before it loads torch, read only the zip
archive's ``bundle.json``, one small array (the training labels) and two ``.npy`` headers (the width of the
training features, the number of negatives): a fraction of a second even for a large bundle. This module
imports neither torch nor scikit-learn, so it also holds what the rest of the package needs to tell a
bundle from another file: the format's name and versions, :class:`BundleError`, :data:`UNKNOWN`.

:func:`bundle_info` (a file) and :func:`retailnb.bundle.predict.describe_bundle` (a loaded bundle) give
the same summary, both through :func:`describe`; :func:`format_info` is its text.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import retailnb
from retailnb.config.score_names import USES_NEGATIVES
from retailnb.util.errors import FileProblem
from retailnb.util.tables import aligned

PathLike = str | os.PathLike[str]

UNKNOWN = "unknown"
"""The answer for an image unlike every enrolled product; no product may be named so."""

BUNDLE_FORMAT_NAME = "retailnb.bundle"
"""The ``format`` value of every bundle's ``bundle.json``: tells a bundle from any other zip file."""

BUNDLE_FORMAT = 4
"""Version of the bundle file layout this retailnb writes; raised whenever it changes.

2 added the negatives (``negatives/features.npy``) and the scores beyond ``msp``, ``energy`` and
``prototype``: a retailnb that reads only 1 would ignore the negatives the threshold was chosen with, so it
is told the version instead. 3 added the ``background`` score and its probe (``background/*.npy``, with
its C in ``bundle.json``), which a retailnb that reads only 2 could not score. 4 added the photos the
threshold is chosen on (``train/calibrate.npy``), which a retailnb that reads only 3 would forget at the next
refit."""

READABLE_FORMATS = (1, 2, 3, 4)
"""The bundle format versions this retailnb reads: its own, 3 (no calibration photos), 2 (no background probe
either) and 1 (no negatives either)."""

NEGATIVES = "negatives/features.npy"
"""The archive entry of a bundle's negatives, (M, D) float32; absent when it has none."""

CALIBRATE = "train/calibrate.npy"
"""The archive entry marking the training rows that trained no backbone, (N,) bool; absent when the bundle was
fitted without knowing which did."""

META = "bundle.json"
"""The archive entry that holds everything of a bundle that is not an array."""


def listed(items: Sequence[object], last: str = "and") -> str:
    """``items`` in words: ``a``, ``a and b``, ``a, b and c`` (``last``: the word before the last item)."""
    words = [str(item) for item in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


class BundleError(FileProblem):
    """A bundle file is unreadable, corrupt, of another format version, or does not fit its backbone."""


def check_meta(meta: Any, path: PathLike) -> dict[str, Any]:
    """``meta`` (a parsed ``bundle.json``) if it is of the format and version this retailnb reads.

    Raises:
        BundleError: another format, or another version (the message says which, and what to do).
    """
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT_NAME:
        raise BundleError(path, f"not a retailnb bundle ({META} does not say format {BUNDLE_FORMAT_NAME!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMATS:
        writer = meta.get("retailnb_version", "an unknown version")
        readable = listed(READABLE_FORMATS)
        raise BundleError(
            path,
            f"bundle format {version}, this retailnb reads {readable} (this is retailnb {retailnb.__version__}; "
            f"the bundle was written by retailnb {writer}): use that version, or rebuild the bundle with "
            "`retailnb fit`",
        )
    return meta


def read_meta(zf: zipfile.ZipFile, path: PathLike) -> dict[str, Any]:
    """The parsed and checked ``bundle.json`` of an open bundle archive (see :func:`check_meta`)."""
    try:
        meta = json.loads(zf.read(META))
    except KeyError:
        raise BundleError(path, f"not a retailnb bundle (a zip file without {META})") from None
    except json.JSONDecodeError as err:
        raise BundleError(path, f"corrupt bundle: {META} is not valid JSON ({err})") from None
    return check_meta(meta, path)


def check_bundle_file(path: PathLike) -> Path:
    """``path`` as a Path if it is a file, else a FileNotFoundError that says so (and whether it is a folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    return path


def read_bundle_meta(path: PathLike) -> dict[str, Any]:
    """The checked ``bundle.json`` of a bundle file, read without its arrays.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        BundleError: the file is not a bundle, is corrupt, or has another format version.
    """
    path = check_bundle_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return read_meta(zf, path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise BundleError(path, f"not a bundle, or a truncated or corrupt one ({type(err).__name__}: {err})") from None


def _matrix_shape(zf: zipfile.ZipFile, name: str) -> tuple[int, int]:
    """The shape (N, D) of the archive's ``.npy`` entry ``name``, from its header alone."""
    with zf.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)
    if len(shape) != 2:
        raise ValueError(f"{name} of shape {shape}, not (N, D)")
    return int(shape[0]), int(shape[1])


def _n_negatives(zf: zipfile.ZipFile) -> int:
    """The number of negatives the archive holds (0 without the entry, as in a format 1 bundle)."""
    return _matrix_shape(zf, NEGATIVES)[0] if NEGATIVES in zf.namelist() else 0


def bundle_info(path: PathLike) -> dict[str, Any]:
    """What a bundle file holds (see :func:`describe`), read without building its backbone or importing torch.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        BundleError: the file is not a bundle, is truncated or corrupt, or has another format version.
    """
    path = check_bundle_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            meta = read_meta(zf, path)
            width = _matrix_shape(zf, "train/features.npy")[1]
            n_negatives = _n_negatives(zf)
            with zf.open("train/labels.npy") as fh:
                labels = np.lib.format.read_array(fh, allow_pickle=False)
            n_calibration = None
            if CALIBRATE in zf.namelist():
                with zf.open(CALIBRATE) as fh:
                    n_calibration = int(np.lib.format.read_array(fh, allow_pickle=False).sum())
        return describe(meta, width, labels, n_negatives, n_calibration)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise BundleError(path, f"not a bundle, or a truncated or corrupt one ({type(err).__name__}: {err})") from None
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise BundleError(path, f"corrupt bundle: missing or malformed entry ({type(err).__name__}: {err})") from None


def _describe_rejection(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The rejection part of :func:`describe`: score, recall, threshold, and in words whether it is on."""
    if meta["probe"] is None:
        return None
    r = meta.get("rejection")
    if r is None:
        return {"score": None, "recall": None, "threshold": None, "active": False,
                "note": "off: this bundle was written before unknown-product rejection; refit it (retailnb fit, "
                        "or add or remove a product) to choose a threshold"}
    threshold = r["threshold"]  # null: -inf, accept everything
    note = (f"images scoring below {threshold:.4g} ({r['score']}) are answered {UNKNOWN!r}" if threshold is not None
            else "off until products have two or more images (no enrolled image could be scored out of fold)")
    return {"score": r["score"], "recall": r["recall"], "threshold": threshold, "active": threshold is not None,
            "note": note}


def describe(meta: Mapping[str, Any], feature_dim: int, labels: Sequence[int] | np.ndarray,
             n_negatives: int = 0, n_calibration: int | None = None) -> dict[str, Any]:
    """A bundle's summary as JSON data: backbone, preprocessing, probe, rejection, products with their image
    counts, negatives, the photos its threshold is chosen on, provenance.

    Args:
        meta: its ``bundle.json`` (:func:`read_meta`, or :func:`retailnb.bundle.io.bundle_meta` of a loaded one).
        feature_dim: the width of its backbone's features.
        labels: the class index of each stored training feature.
        n_negatives: the images it holds as negatives (images it must never name).
        n_calibration: the training photos that trained no backbone, which the threshold is chosen on; None:
            not recorded (the threshold comes from every photo).
    """
    names = list(meta["class_names"])
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names)).tolist() if names else []
    probe = meta["probe"]
    return {
        "format_version": meta["format_version"],
        "architecture": meta["architecture"],
        "feature_dim": int(feature_dim),
        "preprocessing": {key: meta["preprocessing"][key] for key in ("image_size", "mean", "std")},
        "probe": None if probe is None else {"c": probe["c"], "uniform_prior": meta["settings"]["uniform_prior"]},
        "rejection": _describe_rejection(meta),
        "n_products": len(names),
        "n_train": len(labels),
        "n_negatives": int(n_negatives),
        "n_calibration": n_calibration,
        "products": {name: int(n) for name, n in zip(names, counts)},
        "provenance": meta["provenance"],
    }


# --------------------------------------------------------------------------------------------------
# The text of ``retailnb info``
# --------------------------------------------------------------------------------------------------


def _history_line(step: Mapping[str, Any], shown: int = 4) -> str:
    """One provenance entry in words: the operation, its products, images and source, the probe it left."""
    classes = [str(c) for c in step.get("classes", [])]
    names = ", ".join(classes[:shown]) + (f" and {len(classes) - shown} more" if len(classes) > shown else "")
    source = step.get("source")
    folder = None
    if isinstance(source, dict):  # a product folder, or the image files and folders negatives came from
        inputs = source.get("inputs")
        folder = source.get("folder") or (", ".join(map(str, inputs)) if isinstance(inputs, list) else None)
    text = f"{step.get('operation')} {names}".rstrip()
    if step.get("n_images"):
        text += f": {step['n_images']} images" + (f" from {folder}" if folder else "")
    kinds = sorted({str(v.get("images")) for v in (step.get("enrolled_from") or {}).values() if isinstance(v, dict)})
    if kinds:
        text += f" ({'/'.join(kinds)} images)"
    c = step.get("c")
    probe = f"C={c:g} ({step.get('c_from')})" if isinstance(c, (int, float)) else "no probe"
    text += f"; then {step.get('n_train')} training images"
    if step.get("n_negatives"):
        text += f" and {step['n_negatives']} negatives"
    text += f", {probe}; retailnb {step.get('retailnb_version', '?')}"
    rejection = step.get("rejection")
    if isinstance(rejection, dict):
        threshold = rejection.get("threshold")
        text += (f"; {rejection.get('score')} threshold {threshold:.4g}" if isinstance(threshold, (int, float))
                 else "; rejection off")
    return text


def _rejection_text(rejection: Mapping[str, Any]) -> str:
    """The ``rejection`` line of ``retailnb info``: score, recall and threshold, or why it is off."""
    if rejection.get("score") is None:
        return str(rejection["note"])
    threshold = rejection.get("threshold")
    shown = f"{threshold:.4g}" if isinstance(threshold, (int, float)) else "none"
    return (f"{rejection['score']} score, recall {rejection['recall']:g}, threshold {shown}: "
            f"{rejection['note']}")


def format_info(info: Mapping[str, Any]) -> str:
    """The text of ``retailnb info``: the bundle's backbone, probe and provenance, then one line per product."""
    pre, probe, origin = info["preprocessing"], info["probe"], info["provenance"].get("backbone", {})
    weights = str(origin.get("weights", "unknown"))
    if "weights_sha256" in origin:
        weights += f" (sha256 {origin['weights_sha256'][:12]})"
    lines = [
        ["format version", str(info["format_version"])],
        ["architecture", f"{info['architecture']} ({info['feature_dim']} features)"],
        ["image size", f"{pre['image_size']} px, mean {pre['mean']}, std {pre['std']}"],
        ["backbone weights", weights],
        ["probe", "none (no products yet)" if probe is None else
         f"logistic regression, C={probe['c']:g}" + (", uniform prior" if probe["uniform_prior"] else "")],
    ]
    rejection = info.get("rejection")
    if rejection is not None:
        lines.append(["rejection", _rejection_text(rejection)])
    n_negatives = int(info.get("n_negatives", 0))
    lines.append(["negatives", f"{n_negatives} images it never names (used by the {listed(USES_NEGATIVES)} "
                  "scores)" if n_negatives else "none"])
    n_calibration = info.get("n_calibration")
    if n_calibration is not None:
        lines.append(["threshold photos", f"{n_calibration} of the {info['n_train']} training images, which trained "
                      "no backbone"])
    lines += [[f"history {i}", _history_line(step)] for i, step in enumerate(info["provenance"].get("history", []), 1)]
    products = [["product", "images"], *([name, str(n)] for name, n in info["products"].items())]
    summary = f"{info['n_products']} products, {info['n_train']} training images"
    return aligned(lines) + f"\n\n{summary}\n" + (aligned(products) + "\n" if info["products"] else "")
