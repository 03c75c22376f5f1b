"""The bundle file: save and load a :class:`~retailnb.bundle.model.Bundle`, and edit one in place under its lock.

The file format (:data:`~retailnb.bundle.info.BUNDLE_FORMAT`) is one uncompressed zip archive:

* ``bundle.json``: format name and version, architecture, preprocessing, class names, probe settings,
  the chosen C and provenance;
* ``backbone/<state-dict key>.npy``: every tensor of the backbone's state dict;
* ``probe/{mean,scale,coef,intercept}.npy``: the standardiser and the logistic regression;
* ``train/{features,labels}.npy``: the training features and their class indices;
* ``negatives/features.npy``: the features of the images the bundle must never name (format 2), only
  when it has some;
* ``background/{mean,scale,coef,intercept}.npy``: the ``background`` score's probe (format 3), only when
  the bundle rejects with it;
* ``train/calibrate.npy``: which training rows trained no backbone, the threshold's photos (format 4), only
  when the bundle was fitted with them.

Only JSON and ``.npy`` arrays read with ``allow_pickle=False``: loading a bundle never runs code from
the file. Entries carry a fixed timestamp, so the same bundle always gives the same bytes (and the same
DVC hash). :func:`save_bundle` writes a temporary file and renames it over the destination, so a
reader, or a run interrupted halfway, sees the old bundle or the complete new one, never a part.

The operations of :mod:`retailnb.bundle.fit` return a new bundle and touch no file until
:func:`save_bundle`. To change a bundle file in place, use :func:`edit_bundle`: it holds the file's lock
(:func:`retailnb.util.locks.exclusive`) from load to save, so two concurrent edits land one after the
other instead of the later save dropping the earlier change. The rejection threshold is kept in
``bundle.json`` (``rejection``); a file written before it existed loads with rejection off, a file of
format 1 loads without negatives, and one of format 2 without a background probe.

The SHA-256 of files (:mod:`retailnb.util.hashing`) versions the data and weights a bundle's provenance
names.
"""

from __future__ import annotations

import json
import unicodedata
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

import retailnb
from retailnb.bundle.info import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_NAME,
    CALIBRATE,
    META,
    NEGATIVES,
    UNKNOWN,
    BundleError,
    check_bundle_file,
    read_meta,
)
from retailnb.bundle.choices import DEFAULT_REJECTION_SCORE, WAIT_S
from retailnb.bundle.model import (
    Bundle,
    LinearProbe,
    PathLike,
    Preprocessing,
    ProbeSettings,
    Rejection,
    frozen_backbone,
    inference_device,
)
from retailnb.config.score_names import BACKGROUND_SCORES
from retailnb.models.backbone import create_backbone
from retailnb.util.atomic import atomic_write
from retailnb.util.locks import exclusive

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: a fixed timestamp makes the bytes reproducible
_PROBE_KEYS = ("mean", "scale", "coef", "intercept")


def bundle_meta(bundle: Bundle) -> dict[str, Any]:
    """Everything of ``bundle`` that is not an array: the content of its file's ``bundle.json``."""
    p, s = bundle.preprocessing, bundle.settings
    return {
        "format": BUNDLE_FORMAT_NAME,
        "format_version": BUNDLE_FORMAT,
        "retailnb_version": retailnb.__version__,
        "architecture": bundle.architecture,
        "preprocessing": {"image_size": p.image_size, "mean": list(p.mean), "std": list(p.std)},
        "class_names": list(bundle.class_names),
        "probe": None if bundle.probe is None else {"c": bundle.probe.c},
        "background": None if bundle.background is None else {"c": bundle.background.c},
        "settings": {"cs": list(s.cs), "cv": s.cv, "max_iter": s.max_iter, "seed": s.seed,
                     "uniform_prior": s.uniform_prior, "rejection_score": s.rejection_score, "recall": s.recall},
        "rejection": None if bundle.rejection is None else bundle.rejection.as_json(),
        "backbone_keys": list(bundle.backbone.state_dict()),
        "provenance": bundle.provenance,
    }


def _arrays(bundle: Bundle) -> dict[str, np.ndarray]:
    """Every array of ``bundle`` under its entry name in the file (without ``.npy``)."""
    arrays = {}
    for key, tensor in bundle.backbone.state_dict().items():
        t = tensor.detach().cpu()
        arrays[f"backbone/{key}"] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    for name, probe in (("probe", bundle.probe), ("background", bundle.background)):
        if probe is not None:
            arrays.update({f"{name}/{key}": getattr(probe, key) for key in _PROBE_KEYS})
    arrays["train/features"] = np.asarray(bundle.features, dtype=np.float32)
    arrays["train/labels"] = np.asarray(bundle.labels, dtype=np.int64)
    if bundle.n_negatives:
        arrays[NEGATIVES[: -len(".npy")]] = np.asarray(bundle.negatives, dtype=np.float32)
    if bundle.calibrate is not None:
        arrays[CALIBRATE[: -len(".npy")]] = np.asarray(bundle.calibrate, dtype=bool)
    return arrays


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # float weights barely compress; storing keeps loading fast
    info.external_attr = 0o644 << 16
    return info


def save_bundle(bundle: Bundle, path: PathLike) -> Path:
    """Write ``bundle`` to one file at ``path``, atomically (see the module docstring for the layout).

    The file is written under a temporary name in the destination's folder and renamed over ``path``
    once complete: an existing bundle at ``path`` is replaced whole or not at all. This takes no lock:
    to change a file that another process may be changing too, use :func:`edit_bundle`.

    Args:
        bundle: the bundle.
        path: the bundle file; missing parent folders are created. Conventionally ``*.bundle``.

    Returns:
        ``path`` as a Path.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: a parent of ``path`` is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; a bundle is a single file (e.g. {path / 'catalogue.bundle'})")
    meta = json.dumps(bundle_meta(bundle), indent=1, sort_keys=True)  # fails before any file is touched
    with atomic_write(path, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
        zf.writestr(_entry(META), meta)
        for name, array in _arrays(bundle).items():
            with zf.open(_entry(f"{name}.npy"), "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
    return path


def edit_bundle(
    path: PathLike,
    change: Callable[[Bundle], Bundle],
    *,
    out: PathLike | None = None,
    timeout: float = WAIT_S,
) -> Bundle:
    """Load a bundle file, change it and save the result, holding the destination's lock throughout.

    Example::

        edit_bundle("shop.bundle", lambda b: remove_products(b, ["old_cola"]))

    Two processes that edit the same file this way both land, one after the other: the second waits
    for the first to save, then loads what it saved. Use this rather than :func:`load_bundle` then
    :func:`save_bundle` wherever another process may edit the same file.

    Args:
        path: the bundle to load.
        change: the edit, e.g. ``lambda b: add_products(b, features, names)``; it must not save.
        out: where to save; None replaces ``path`` (the file a link points to, when it is one). The lock
            taken is the destination's.
        timeout: seconds to wait for another edit of the destination.

    Returns:
        The saved bundle.

    Raises:
        retailnb.util.locks.BusyError: another edit held the destination for ``timeout`` seconds.
        FileNotFoundError, BundleError: as :func:`load_bundle`; the file is left as it was.
    """
    # through a symbolic link, the linked bundle is the one changed (a rename over the link would replace it)
    target = Path(path if out is None else out).resolve()
    with exclusive(target, timeout):
        edited = change(load_bundle(path, device="cpu"))  # on the CPU, as the command line edits bundles
        save_bundle(edited, target)
    return edited


def _declared_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """The bytes an ``.npy`` entry's header declares (shape x item size), read before anything is allocated."""
    with zf.open(info) as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
    return int(np.prod(shape, dtype=np.float64) * dtype.itemsize)


def _read_arrays(zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """Every ``.npy`` entry of the archive, read without pickle, each checked against its CRC-32 (a flipped
    byte is a ``BadZipFile`` naming the entry) and its header's shape against the entry's size first, so
    that a forged header cannot make the reader allocate what the file does not hold.

    Raises:
        ValueError: an entry declares more data than it holds (the message names it).
    """
    import io

    arrays = {}
    for info in zf.infolist():
        if info.filename.endswith(".npy"):
            if _declared_bytes(zf, info) > info.file_size:
                raise ValueError(f"entry {info.filename} declares more data than its {info.file_size} bytes")
            data = zf.read(info)  # the whole entry: zipfile checks its CRC-32 at the end
            arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    return arrays


def _backbone(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> nn.Module:
    """The architecture of ``meta`` with the stored weights, checked to fit it exactly."""
    try:
        model = create_backbone(meta["architecture"])
    except ValueError as err:  # an architecture this timm does not know
        raise BundleError(path, f"{err} (installed timm {timm.__version__})") from None
    state = {key: torch.from_numpy(arrays[f"backbone/{key}"]) for key in meta["backbone_keys"]}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # torch lists every mismatching tensor, one per line: the first words will do
        first = " ".join(str(err).split())
        raise BundleError(path, f"the stored weights do not fit timm model {meta['architecture']!r}: "
                          f"{first[:200]}{'...' if len(first) > 200 else ''}") from None
    return frozen_backbone(model)


def _bundle(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Bundle:
    """A :class:`Bundle` from the parsed file; KeyError or ValueError when an entry is missing or wrong."""
    pre = meta["preprocessing"]
    probe, background = (None if meta.get(name) is None  # no background before format 3
                         else LinearProbe(**{k: arrays[f"{name}/{k}"] for k in _PROBE_KEYS}, c=float(meta[name]["c"]))
                         for name in ("probe", "background"))
    s = meta["settings"]
    rejection = meta.get("rejection")  # absent in files written before rejection: it stays off
    negatives = arrays.get(NEGATIVES[: -len(".npy")])  # absent in format 1, and without negatives
    return Bundle(
        architecture=meta["architecture"],
        backbone=_backbone(meta, arrays, path),
        preprocessing=Preprocessing(int(pre["image_size"]), tuple(pre["mean"]), tuple(pre["std"])),
        class_names=tuple(meta["class_names"]),
        features=arrays["train/features"],
        labels=arrays["train/labels"],
        probe=probe,
        settings=ProbeSettings(tuple(s["cs"]), int(s["cv"]), int(s["max_iter"]), int(s["seed"]),
                               bool(s["uniform_prior"]), str(s.get("rejection_score", DEFAULT_REJECTION_SCORE)),
                               float(s.get("recall", 0.95))),
        provenance=meta["provenance"],
        rejection=None if rejection is None or probe is None else Rejection.from_json(rejection),
        negatives=negatives,
        background=background,
        calibrate=arrays.get(CALIBRATE[: -len(".npy")]),  # absent before format 4, and in bundles fitted without it
    )


def _check_consistent(bundle: Bundle, path: Path) -> None:
    """Reject a bundle whose content cannot be meant (a hand-edited or damaged file): arrays that disagree with
    each other, weights or features that are not finite, negatives that are not (M, D) numbers of the
    backbone's width, two products of one name (compared in Unicode NFC), a product named ``unknown``."""
    k, d = len(bundle.class_names), bundle.feature_dim
    problems = []
    names = [unicodedata.normalize("NFC", n) for n in bundle.class_names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"products named twice: {', '.join(map(repr, repeated))}")
    if UNKNOWN in names:
        problems.append(f"a product named {UNKNOWN!r}, the answer for images it rejects")
    arrays = {"training features": bundle.features}
    for name, probe in (("probe", bundle.probe), ("background probe", bundle.background)):
        if probe is not None:
            arrays.update({f"{name} {k}": getattr(probe, k) for k in _PROBE_KEYS})
    negatives = bundle.negatives
    if negatives is not None:
        if negatives.dtype.kind not in "fiu" or negatives.ndim != 2 or negatives.shape[1] != d:
            problems.append(f"{NEGATIVES} of shape {negatives.shape} and type {negatives.dtype}, not (M, {d}) numbers")
        else:
            arrays[NEGATIVES] = negatives
    problems += [f"{what} not finite" for what, a in arrays.items() if a.size and not np.isfinite(a).all()]
    calibrate = bundle.calibrate
    if calibrate is not None and (calibrate.dtype != bool or calibrate.shape != bundle.labels.shape
                                  or not calibrate.any()):
        problems.append(f"{CALIBRATE} of shape {calibrate.shape} and type {calibrate.dtype}, not "
                        f"{len(bundle.labels)} booleans marking some rows")
    if bundle.features.shape != (len(bundle.labels), d) and bundle.features.size:
        problems.append(f"training features of shape {bundle.features.shape}, not ({len(bundle.labels)}, {d})")
    if bundle.labels.size and (bundle.labels.min() < 0 or bundle.labels.max() >= k):
        problems.append(f"training labels outside [0, {k})")
    if bundle.probe is not None and bundle.probe.coef.shape != (k, d):
        problems.append(f"probe weights of shape {bundle.probe.coef.shape} for {k} classes of width {d}")
    if bundle.background is not None and bundle.background.coef.shape != (k + 1, d):
        problems.append(f"background probe weights of shape {bundle.background.coef.shape} for {k} classes and "
                        f"the negatives, of width {d}")
    if bundle.rejection is not None and bundle.rejection.score in BACKGROUND_SCORES and bundle.background is None:
        problems.append("rejection by the background score without its background probe")
    if problems:
        raise BundleError(path, "corrupt bundle: " + "; ".join(problems))


def load_bundle(path: PathLike, *, device: str | torch.device = "auto") -> Bundle:
    """Read a bundle written by :func:`save_bundle`, without running code from the file.

    Example::

        bundle = load_bundle("shop.bundle")               # on the GPU when there is one
        bundle = load_bundle("shop.bundle", device="cpu")

    Args:
        path: the bundle file.
        device: where to put the backbone: ``auto`` (the default: CUDA when available, else the CPU),
            ``cpu``, ``cuda`` or ``cuda:<index>`` (see :func:`~retailnb.bundle.model.inference_device`);
            :func:`~retailnb.bundle.embed.embed_files` and :func:`~retailnb.bundle.predict.predict_files`
            run it there.

    Returns:
        The bundle, its backbone in eval mode on ``device``.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        BundleError: the file is not a bundle, is truncated or corrupt, or has another format version
            (the message says which version it is and which this retailnb reads).
        ValueError: ``device`` is unknown or not available (checked before the file is read).
    """
    target = inference_device(device)
    path = check_bundle_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            meta = read_meta(zf, path)
            arrays = _read_arrays(zf)
        bundle = _bundle(meta, arrays, path)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise BundleError(path, f"not a bundle, or a truncated or corrupt one ({type(err).__name__}: {err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(path, f"corrupt bundle: missing or malformed entry ({type(err).__name__}: {err})") from None
    _check_consistent(bundle, path)
    bundle.backbone.to(target)
    return bundle
