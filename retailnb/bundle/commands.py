"""The implementations of the ``retailnb`` commands (see :mod:`retailnb.bundle.cli` for the command line).

They live apart from the argument parser so that ``retailnb --help`` and a mistyped option answer at
once: this module imports torch, timm and scikit-learn (several seconds), and only a command that runs
needs them.
"""


from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retailnb.util.atomic import atomic_write, check_writable
from retailnb.bundle.embed import embed_files, embed_readable_files, folder_features
from retailnb.bundle.fit import add_products, check_new_products, fit_probe, new_bundle, remove_products
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.model import (
    Bundle,
    BundleError,
    ClassNameError,
    Predictions,
    ProbeSettings,
    Rejection,
    inference_device,
)
from retailnb.bundle.predict import describe_bundle, predict_features
from retailnb.data.adapters import DatasetError
from retailnb.data.inputs import image_files, product_folders
from retailnb.data.images import ImageError
from retailnb.util.locks import BusyError, exclusive
from retailnb.models.backbone import WeightsUnavailableError
from retailnb.models.checkpoint import CheckpointError
from retailnb.util.tables import aligned

USER_ERRORS = (
    BundleError,
    ClassNameError,
    DatasetError,
    ImageError,
    CheckpointError,
    WeightsUnavailableError,
    BusyError,
    OSError,
    ValueError,
)
"""Errors caused by what the user passed: reported in one line, never as a traceback.

``OSError`` covers every failure on the user's paths (missing, a folder, a parent that is a file, no
permission, a full disk); :mod:`retailnb.util.atomic` makes those name the user's path, not a temporary file.
"""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def _embedding(what: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar of embedded images on stderr; when the block ends, how many and how fast.

    Yields the bar's ``update``, to pass as ``progress`` to :func:`retailnb.bundle.embed.embed_files`.
    """
    done = 0
    start = time.perf_counter()
    with tqdm(total=total, desc=what, unit="img", file=sys.stderr, disable=None, leave=False) as bar:

        def update(n: int) -> None:
            nonlocal done
            done += n
            bar.update(n)

        yield update
    seconds = time.perf_counter() - start
    _say(f"{what}: {done} images in {seconds:.2f} s ({done / seconds:.1f} images/s)")


def _inference_bundle(args: argparse.Namespace) -> Bundle:
    """``--bundle`` loaded onto ``--device``; a device this machine lacks is a user error naming the option."""
    try:
        device = inference_device(args.device)
    except ValueError as err:
        raise ValueError(f"--device {args.device}: {err}") from None
    return load_bundle(args.bundle, device=device)


def _folder_features(bundle: Bundle, folder: str, products: Mapping[str, Sequence[Path]] | None = None,
                     ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    with _embedding("embedding") as progress:
        return folder_features(bundle, folder, products=products, progress=progress)


def _save(bundle: Bundle, out: str | Path) -> None:
    save_bundle(bundle, out)
    _say(f"wrote {out}: {len(bundle.class_names)} products, {len(bundle.labels)} training images")


def _with_rejection_options(settings: ProbeSettings, args: argparse.Namespace) -> ProbeSettings:
    """``settings`` with ``--recall`` and ``--rejection-score`` where given (the bundle's own otherwise)."""
    changes = {key: value for key, value in (("recall", args.recall), ("rejection_score", args.rejection_score))
               if value is not None}
    return dataclasses.replace(settings, **changes) if changes else settings


def _rejection_options(bundle: Bundle, args: argparse.Namespace) -> Bundle:
    """``bundle`` whose next refit chooses its threshold as ``--recall`` / ``--rejection-score`` say."""
    return dataclasses.replace(bundle, settings=_with_rejection_options(bundle.settings, args))


def enrolled_line(names: Sequence[str], image_kind: str) -> str:
    """The one-line summary of an enrolment, e.g. ``enrolled 3 products from 6 catalogue packshots``."""
    n_products, n_images = len(set(names)), len(names)
    what = ("catalogue packshot" if image_kind == "catalogue" else "shelf photo") + ("" if n_images == 1 else "s")
    return f"enrolled {n_products} product{'' if n_products == 1 else 's'} from {n_images} {what}"


def rejection_line(rejection: Rejection | None) -> str:
    """How the bundle now rejects unknown products, in one line (after fit and add-products)."""
    if rejection is None:
        return "unknown-product rejection: off"
    if not rejection.active:
        return (f"unknown-product rejection: off until products have two or more images ({rejection.score} "
                f"score, recall {rejection.recall:g})")
    return (f"unknown-product rejection: {rejection.score} score below {rejection.threshold:.4g} is 'unknown' "
            f"(threshold at known-product recall {rejection.recall:g})")


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def save_embeddings(path: str | Path, features: np.ndarray, paths: Sequence[str | Path], **meta: Any) -> Path:
    """Write the features of image files and the files' paths to one ``.npz`` file, atomically.

    The arrays are ``features`` (N, D) float32 and ``paths`` (N,) unicode strings, so
    ``np.load(path)["paths"]`` gives the paths without parsing anything. The file is also a feature file
    of :func:`retailnb.evaluation.features.load_features` (unlabelled: every label -1, no class names,
    ``meta`` as its metadata).

    Raises:
        ValueError: ``paths`` does not give one path per feature row.
    """
    features = np.asarray(features, dtype=np.float32)
    if len(paths) != len(features):
        raise ValueError(f"one path per feature row: {len(paths)} paths, {len(features)} rows")
    arrays = {
        "features": features,
        "paths": np.asarray([str(p) for p in paths], dtype=np.str_),
        "labels": np.full(len(features), -1, dtype=np.int64),
        "class_names": np.asarray([], dtype=np.str_),
        "meta_json": np.asarray(json.dumps(meta, sort_keys=True)),
    }
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return Path(path)


def load_embeddings(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """The features and image paths of a file that ``retailnb embed`` wrote.

    Files of retailnb before the ``paths`` array kept the paths as JSON in their metadata; those are
    read too.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a feature file, or one without image paths.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: feature file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            features = np.asarray(data["features"])
            if "paths" in data.files:
                return features, [str(p) for p in data["paths"]]
            meta = json.loads(str(data["meta_json"]))
    except (KeyError, OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a feature file of `retailnb embed` ({err})") from None
    if not isinstance(meta, dict) or "paths" not in meta:
        raise ValueError(f"{path}: a feature file without image paths (not written by `retailnb embed`)")
    return features, [str(p) for p in meta["paths"]]


def errors_path(out: str | Path) -> Path:
    """The side file listing the images a command could not read: ``<out>.errors.csv`` beside ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".errors.csv")


def format_failures(failures: Sequence[ImageError]) -> str:
    """CSV of unreadable images: ``image,problem``, one line each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "problem"])
    writer.writerows([str(err.path), err.problem] for err in failures)
    return buffer.getvalue()


def _report_failures(failures: Sequence[ImageError], total: int, out: str | None) -> None:
    """Say how many images were skipped and where they are listed (``<out>.errors.csv``, else stderr).

    A side file of an earlier run is removed when this run skipped nothing, so it never lists files
    that are fine now.
    """
    side = errors_path(out) if out is not None else None
    if not failures:
        if side is not None and side.is_file():
            side.unlink()
        return
    if side is not None:
        with atomic_write(side, "w") as fh:
            fh.write(format_failures(failures))
        _say(f"skipped {len(failures)} of {total} images that could not be read; listed in {side}")
        return
    _say(f"skipped {len(failures)} of {total} images that could not be read:")
    for err in failures:
        _say(f"  {err}")


def _readable(args: argparse.Namespace, bundle: Bundle, paths: Sequence[Path], what: str) -> tuple[np.ndarray, list[Path]]:
    """The features and paths of the images of ``paths`` that can be read, under ``--on-error``.

    ``--on-error raise`` stops at the first unreadable image; ``skip`` reports the others (see
    :func:`_report_failures`) and goes on. No readable image at all is an error either way.
    """
    with _embedding(f"{what} on {bundle.device}", len(paths)) as progress:
        if args.on_error == "raise":  # stops at the first bad image (the batches not started are cancelled)
            return embed_files(bundle, paths, batch_size=args.batch_size, workers=args.workers,
                               progress=progress), list(paths)
        done = embed_readable_files(bundle, paths, batch_size=args.batch_size, workers=args.workers,
                                    progress=progress)
        if not done.paths:  # inside the block: an error, not a timing line, is all that is printed
            raise ValueError(f"none of the {len(paths)} images could be read; the first: {done.failures[0]}")
    _report_failures(done.failures, len(paths), args.out)
    return done.features, list(done.paths)


def cmd_embed(args: argparse.Namespace) -> None:
    """``retailnb embed``: features of images, written as a feature file (``.npz``) with their paths."""
    check_writable(args.out)  # before any work
    bundle = _inference_bundle(args)
    features, paths = _readable(args, bundle, image_files(args.images), "embedding")
    save_embeddings(args.out, features, paths, bundle=str(args.bundle), architecture=bundle.architecture,
                    image_size=bundle.preprocessing.image_size)
    _say(f"wrote {args.out}: {features.shape[0]} x {features.shape[1]} features")


def _history_line(step: Mapping[str, Any], shown: int = 4) -> str:
    """One provenance entry in words: the operation, its products, images and source, the probe it left."""
    classes = [str(c) for c in step.get("classes", [])]
    names = ", ".join(classes[:shown]) + (f" and {len(classes) - shown} more" if len(classes) > shown else "")
    source = step.get("source")
    folder = source.get("folder") if isinstance(source, dict) else None
    text = f"{step.get('operation')} {names}"
    if step.get("n_images"):
        text += f": {step['n_images']} images" + (f" from {folder}" if folder else "")
    kinds = sorted({str(v.get("images")) for v in (step.get("enrolled_from") or {}).values() if isinstance(v, dict)})
    if kinds:
        text += f" ({'/'.join(kinds)} images)"
    c = step.get("c")
    probe = f"C={c:g} ({step.get('c_from')})" if isinstance(c, (int, float)) else "no probe"
    text += f"; then {step.get('n_train')} training images, {probe}; retailnb {step.get('retailnb_version', '?')}"
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
    lines += [[f"history {i}", _history_line(step)] for i, step in enumerate(info["provenance"].get("history", []), 1)]
    products = [["product", "images"], *([name, str(n)] for name, n in info["products"].items())]
    summary = f"{info['n_products']} products, {info['n_train']} training images"
    return aligned(lines) + f"\n\n{summary}\n" + (aligned(products) + "\n" if info["products"] else "")


def cmd_info(args: argparse.Namespace) -> None:
    """``retailnb info``: what a bundle holds (products and image counts) and where it came from."""
    info = {"bundle": str(args.bundle), **describe_bundle(load_bundle(args.bundle))}
    if args.format == "json":
        sys.stdout.write(json.dumps(info, indent=1) + "\n")
    else:
        sys.stdout.write(f"{args.bundle}\n" + format_info(info))


def _base_bundle(args: argparse.Namespace) -> Bundle:
    """The bundle ``fit`` starts from: ``--bundle``, or a new one from the backbone options."""
    backbone_options = [args.architecture, args.backbone_weights, args.image_size]
    if args.bundle is not None:
        if any(o is not None for o in backbone_options):
            raise ValueError("give either --bundle or --architecture/--backbone-weights/--image-size, not both")
        return load_bundle(args.bundle)
    missing = [flag for flag, o in zip(("--architecture", "--backbone-weights", "--image-size"), backbone_options)
               if o is None]
    if missing:
        raise ValueError(f"without --bundle, fit needs {', '.join(missing)} to build the backbone "
                         "(--backbone-weights none gives random weights)")
    return new_bundle(args.architecture, weights=args.backbone_weights, image_size=args.image_size,
                      settings=_with_rejection_options(ProbeSettings(), args))


def cmd_fit(args: argparse.Namespace) -> None:
    """``retailnb fit``: a bundle whose products are exactly the folder's, its probe fitted from scratch.

    ``--out``'s lock is held from loading ``--bundle`` to saving, as for the other edits.
    """
    with exclusive(check_writable(args.out), args.wait):
        bundle = _rejection_options(_base_bundle(args), args)
        products = product_folders(args.folder)
        check_new_products(dataclasses.replace(bundle, class_names=()), list(products))  # before embedding
        features, names, source = _folder_features(bundle, args.folder, products)
        start = time.perf_counter()
        fitted = fit_probe(bundle, features, names, source=source, image_kind=args.images)
        assert fitted.probe is not None  # fit_probe always fits one: it needs two products or more
        _say(f"fitted the probe on {len(fitted.class_names)} products (C={fitted.probe.c:g}, chosen by "
             f"cross-validation) in {time.perf_counter() - start:.2f} s")
        _say(rejection_line(fitted.rejection))
        _save(fitted, args.out)
        _say(enrolled_line(names, args.images))


def cmd_add_products(args: argparse.Namespace) -> None:
    """``retailnb add-products``: the bundle plus the folder's products, probe refitted on old + new.

    The destination's lock is held from load to save (see :func:`retailnb.bundle.io.edit_bundle`): a
    concurrent edit of the same bundle waits for this one and then starts from its result.
    """
    target = check_writable(args.out or args.bundle)
    with exclusive(target, args.wait):
        bundle = _rejection_options(load_bundle(args.bundle), args)
        products = product_folders(args.folder)
        check_new_products(bundle, list(products))  # fail before embedding anything
        features, names, source = _folder_features(bundle, args.folder, products)
        start = time.perf_counter()
        enrolled = add_products(bundle, features, names, choose_c=args.choose_c, source=source,
                                image_kind=args.images)
        _say(f"refitted the probe on {len(enrolled.class_names)} products in {time.perf_counter() - start:.2f} s")
        _say(rejection_line(enrolled.rejection))
        _save(enrolled, target)
        _say(enrolled_line(names, args.images))


def cmd_remove_products(args: argparse.Namespace) -> None:
    """``retailnb remove-products``: the bundle without the named products, probe refitted (under its lock)."""
    target = check_writable(args.out or args.bundle)
    with exclusive(target, args.wait):
        _save(remove_products(load_bundle(args.bundle), args.names, choose_c=args.choose_c), target)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _rows(paths: Sequence[Path], predictions: Predictions) -> list[dict[str, Any]]:
    """One dict per image: its path, its answer (top product or ``unknown``), whether it is taken for a known
    product, its known-ness score and the threshold it was held to, and its top-k (product, probability) pairs."""
    n = len(predictions.indices)
    scores = [None] * n if predictions.known_scores is None else [float(x) for x in predictions.known_scores]
    known = [True] * n if predictions.known is None else [bool(x) for x in predictions.known]
    return [
        {"image": str(path), "answer": answer, "known": ok, "known_score": score,
         "threshold": _optional_float(predictions.threshold),
         "predictions": [{"product": name, "probability": float(p)} for name, p in zip(names, top)]}
        for path, answer, ok, score, names, top in zip(paths, predictions.answers, known, scores, predictions.names(),
                                                       predictions.scores)
    ]


def _score_text(score: float | None, digits: int) -> str:
    return "" if score is None else f"{score:.{digits}f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned columns: the image, its answer (``unknown`` when rejected), each rank's product and probability,
    then the known-ness score (when the bundle has one)."""
    k = max(len(r["predictions"]) for r in rows)
    with_score = any(r.get("known_score") is not None for r in rows)
    header = ["image", "answer", *(f"{part}{i}" for i in range(1, k + 1) for part in ("top", "p")),
              *(["score"] if with_score else [])]
    body = [[r["image"], r["answer"], *(v for p in r["predictions"] for v in (p["product"], f"{p['probability']:.3f}")),
             *([_score_text(r.get("known_score"), 4)] if with_score else [])]
            for r in rows]
    return aligned([header, *body]) + "\n"


def format_csv(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (image, rank): ``image,rank,product,probability,answer,known_score,threshold``.

    ``answer`` (the top product, or ``unknown``), ``known_score`` and ``threshold`` are the image's, repeated on
    each of its ranks; the last two are empty when the bundle has no rejection threshold.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "rank", "product", "probability", "answer", "known_score", "threshold"])
    for r in rows:
        for rank, p in enumerate(r["predictions"], start=1):
            writer.writerow([r["image"], rank, p["product"], f"{p['probability']:.6f}", r["answer"],
                             _score_text(r["known_score"], 6), _score_text(r["threshold"], 6)])
    return buffer.getvalue()


def format_json(rows: Sequence[dict[str, Any]]) -> str:
    """A JSON list: per image, ``image``, ``answer`` (top product or ``unknown``), ``known``, ``known_score``,
    ``threshold`` and its ``predictions`` (``product``, ``probability``), best first."""
    return json.dumps(list(rows), indent=1) + "\n"


def _rejected_line(predictions: Predictions) -> str | None:
    """How many images were answered ``unknown`` and why, for stderr; None when nothing was held to a threshold."""
    if predictions.threshold is None or predictions.known is None:
        return None
    unknown = int((~predictions.known).sum())
    return (f"{unknown} of {len(predictions.known)} images unknown ({predictions.rejection_score} score below "
            f"{predictions.threshold:.4g}; --no-reject to always name a product)")


def cmd_predict(args: argparse.Namespace) -> None:
    """``retailnb predict``: the top-k products of each image, as a table, JSON or CSV, with its answer.

    The answer is the top product, or ``unknown`` where the image's known-ness score is below the bundle's
    threshold (unless ``--no-reject``).
    """
    if args.out is not None:
        check_writable(args.out)  # before any work
    bundle = _inference_bundle(args)
    if bundle.probe is None:
        raise ValueError(f"{args.bundle}: this bundle has no products yet; fit them with `retailnb fit`")
    features, paths = _readable(args, bundle, image_files(args.images), "predicting")
    predictions = predict_features(bundle, features, args.top_k, reject=args.reject)
    rows = _rows(paths, predictions)
    rejected = _rejected_line(predictions)
    if rejected is not None:
        _say(rejected)
    text = {"table": format_table, "csv": format_csv, "json": format_json}[args.format](rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_write(args.out, "w") as fh:
            fh.write(text)
        _say(f"wrote {args.out}: predictions for {len(rows)} images")
