"""The implementations of the ``retailnb`` commands (see :mod:`retailnb.bundle.cli` for the command line).

They live apart from the argument parser so that ``retailnb --help`` and a mistyped option answer at
once: this module imports torch, timm and scikit-learn (several seconds), and only a command that runs
needs them. :mod:`retailnb.bundle.cli` has checked the paths and options before (``args`` as it left them);
``retailnb info`` needs none of this module (:mod:`retailnb.bundle.info`).
"""


from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retailnb.util.atomic import atomic_write, check_writable
from retailnb.bundle.choices import TABLE_WIDTH
from retailnb.bundle.embed import embed_files, folder_features
from retailnb.bundle.fit import (
    add_negatives,
    add_products,
    check_new_products,
    check_background,
    fit_probe,
    new_bundle,
    remove_negatives,
    remove_products,
)
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.info import listed
from retailnb.bundle.model import (
    Bundle,
    BundleError,
    ClassNameError,
    Predictions,
    ProbeSettings,
    Rejection,
    inference_device,
)
from retailnb.bundle.predict import predict_files
from retailnb.data.adapters import DatasetError
from retailnb.data.inputs import image_files, product_folders
from retailnb.data.images import ImageError
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.rejection import unseen_photos
from retailnb.config.score_names import USES_NEGATIVES
from retailnb.util.hashing import files_sha256
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


def _status(args: argparse.Namespace, text: str | None) -> None:
    """Say on the command line's status line what is loading (``text``), or end the line (None).

    The line is :class:`retailnb.bundle.cli.Status`, set as ``args.status`` by :func:`retailnb.bundle.cli.main`
    (drawn only in a terminal); a command called without it says nothing.
    """
    status = getattr(args, "status", None)
    if status is None:
        return
    if text is None:
        status.close()
    else:
        status.show(text)


def _loaded(args: argparse.Namespace, what: str, load: Callable[[], Bundle]) -> Bundle:
    """``load()``, with ``what`` on the status line while it runs, and the line ended once it is done."""
    _status(args, what)
    bundle = load()
    _status(args, None)
    return bundle


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


@contextlib.contextmanager
def _naming_on_error() -> Iterator[None]:
    """An unreadable image under ``--on-error raise`` stops the command; its message says how to go past it."""
    try:
        yield
    except ImageError as err:
        raise ImageError(err.path, f"{err.problem} (--on-error skip goes past unreadable images)") from None


def _inference_bundle(args: argparse.Namespace) -> Bundle:
    """``--bundle`` loaded onto ``--device``; a device this machine lacks is a user error naming the option."""
    try:
        device = inference_device(args.device)
    except ValueError as err:
        raise ValueError(f"--device {args.device}: {err}") from None
    return _loaded(args, f"loading {args.bundle} onto {device}", lambda: load_bundle(args.bundle, device=device))


def _edited_bundle(args: argparse.Namespace) -> Bundle:
    """``--bundle`` on the CPU, for the commands that change its products (they refit on the CPU)."""
    return _loaded(args, f"loading {args.bundle}", lambda: load_bundle(args.bundle, device="cpu"))


def _folder_features(bundle: Bundle, folder: str, products: Mapping[str, Sequence[Path]] | None = None,
                     ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    with _embedding("embedding") as progress:
        return folder_features(bundle, folder, products=products, progress=progress)


def _save(bundle: Bundle, out: str | Path) -> None:
    save_bundle(bundle, out)
    negatives = f", {bundle.n_negatives} negatives" if bundle.n_negatives else ""
    _say(f"wrote {out}: {len(bundle.class_names)} products, {len(bundle.labels)} training images{negatives}")


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


def save_embeddings(path: str | Path, features: np.ndarray, paths: Sequence[str | Path], *, architecture: str,
                    image_size: int, bundle: str | os.PathLike[str]) -> Path:
    """Write the features of image files to one ``.npz`` file, atomically: what ``retailnb embed`` writes.

    Its arrays, each read with ``np.load(path)[name]`` (no pickle):

    * ``features``: (N, D) float32, row ``i`` the feature of ``paths[i]``;
    * ``paths``: (N,) strings, the image files;
    * ``architecture``: the backbone's timm name (a 0-d string array: ``str(npz["architecture"])``);
    * ``image_size``: the side the images were resized to, in pixels (0-d int64);
    * ``bundle``: the bundle file whose backbone computed them (0-d string).

    Raises:
        ValueError: ``paths`` does not give one path per feature row.
    """
    features = np.asarray(features, dtype=np.float32)
    if len(paths) != len(features):
        raise ValueError(f"one path per feature row: {len(paths)} paths, {len(features)} rows")
    arrays = {
        "features": features,
        "paths": np.asarray([str(p) for p in paths], dtype=np.str_),
        "architecture": np.asarray(architecture, dtype=np.str_),
        "image_size": np.asarray(image_size, dtype=np.int64),
        "bundle": np.asarray(os.fspath(bundle), dtype=np.str_),
    }
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return Path(path)


def load_embeddings(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """The features and image paths of a file that ``retailnb embed`` wrote (see :func:`save_embeddings`).

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


def _embedding_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--batch-size``, ``--workers`` and ``--on-error`` as the keyword arguments of ``embed_files``/``predict_files``."""
    return {"batch_size": args.batch_size, "workers": args.workers, "on_error": args.on_error}


def cmd_embed(args: argparse.Namespace) -> None:
    """``retailnb embed``: features of images, written as an ``.npz`` with their paths (see :func:`save_embeddings`)."""
    check_writable(args.out)  # before any work
    bundle = _inference_bundle(args)
    total = len(image_files(args.images))  # for the progress bar; the function lists the inputs as it does
    with _embedding(f"embedding on {bundle.device}", total) as progress, _naming_on_error():
        done = embed_files(bundle, args.images, progress=progress, **_embedding_options(args))
    _report_failures(done.failures, total, args.out)
    save_embeddings(args.out, done.features, done.paths, architecture=bundle.architecture,
                    image_size=bundle.preprocessing.image_size, bundle=args.bundle)
    _say(f"wrote {args.out}: {done.features.shape[0]} x {done.features.shape[1]} features")


def _base_bundle(args: argparse.Namespace) -> Bundle:
    """The bundle ``fit`` starts from: ``--bundle``, or a new one from the backbone options.

    The command line has checked them (:func:`retailnb.bundle.cli.check_args`) and filled in the
    architecture and image size from the ``backbone.json`` beside ``--backbone-weights``.
    """
    if args.bundle is not None:
        return _edited_bundle(args)
    return _loaded(args, f"building {args.architecture} from {args.backbone_weights}",
                   lambda: new_bundle(args.architecture, weights=args.backbone_weights, image_size=args.image_size,
                                      settings=_with_rejection_options(ProbeSettings(), args)))


def cmd_fit(args: argparse.Namespace) -> None:
    """``retailnb fit``: a bundle whose products are exactly the folder's, its probe fitted from scratch.

    ``--out``'s lock is held from loading ``--bundle`` to saving, as for the other edits.
    """
    with exclusive(check_writable(args.out), args.wait):
        products = product_folders(args.folder)
        bundle = _rejection_options(_base_bundle(args), args)
        check_new_products(dataclasses.replace(bundle, class_names=()), list(products))  # before embedding
        check_background(bundle.settings, bundle.n_negatives)
        features, names, source = _folder_features(bundle, args.folder, products)
        unseen = None
        if args.trained_on is not None:
            paths = [Path(p).resolve() for files in products.values() for p in files]  # folder_features' order
            unseen = unseen_photos(paths, read_manifest(args.trained_on).training_paths())
            source = {**source, "trained_on": str(Path(args.trained_on).resolve())}
        start = time.perf_counter()
        fitted = fit_probe(bundle, features, names, source=source, image_kind=args.images, calibrate=unseen)
        assert fitted.probe is not None  # fit_probe always fits one: it needs two products or more
        _say(f"fitted the probe on {len(fitted.class_names)} products (C={fitted.probe.c:g}, chosen by "
             f"cross-validation) in {time.perf_counter() - start:.2f} s")
        _say(rejection_line(fitted.rejection))
        if args.trained_on is not None:
            _say(calibration_line(unseen, len(names), args.trained_on))
        _save(fitted, args.out)
        _say(enrolled_line(names, args.images))


def calibration_line(unseen: np.ndarray | None, n: int, manifest: str) -> str:
    """What ``fit --trained-on`` chose the threshold on, in one line: the photos the backbone never trained on,
    all of them, or (none left) a warning."""
    if unseen is None:
        return (f"warning: {manifest} trained the backbone on all {n} photos, so the threshold is chosen on photos "
                "it knows and will accept fewer new photos than asked; keep some out of training "
                "(data.calibration_folds) and fit again")
    if unseen.all():
        return f"the backbone trained on none of the {n} photos ({manifest}): the threshold is chosen on all of them"
    return f"the threshold is chosen on the {int(unseen.sum())} of {n} photos that {manifest} trains no backbone on"


def cmd_add_products(args: argparse.Namespace) -> None:
    """``retailnb add-products``: the bundle plus the folder's products, probe refitted on old + new.

    The destination's lock is held from load to save (see :func:`retailnb.bundle.io.edit_bundle`): a
    concurrent edit of the same bundle waits for this one and then starts from its result.
    """
    target = check_writable(args.out or args.bundle)
    with exclusive(target, args.wait):
        products = product_folders(args.folder)
        bundle = _rejection_options(_edited_bundle(args), args)
        check_new_products(bundle, list(products))  # fail before embedding anything
        check_background(bundle.settings, bundle.n_negatives)
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
        _save(remove_products(_edited_bundle(args), args.names, choose_c=args.choose_c), target)


def negatives_line(bundle: Bundle, added: int) -> str:
    """What ``add-negatives`` did, in one line: how many negatives it added and holds, and whether its score
    uses them."""
    line = f"added {added} negative image{'' if added == 1 else 's'} ({bundle.n_negatives} in all)"
    score = bundle.rejection.score if bundle.rejection is not None else bundle.settings.rejection_score
    if score not in USES_NEGATIVES:
        line += (f"; the {score} score does not use them (--rejection-score "
                 f"{listed(USES_NEGATIVES, 'or')} does)")
    return line


def cmd_add_negatives(args: argparse.Namespace) -> None:
    """``retailnb add-negatives``: the bundle plus the features of images it must never name, its threshold
    chosen again (under its lock, as add-products).

    Every image of the files and folders given is embedded with the bundle's backbone (``--on-error`` as
    in ``predict``); the probe is not refitted.
    """
    target = check_writable(args.out or args.bundle)
    with exclusive(target, args.wait):
        bundle = _rejection_options(_edited_bundle(args), args)
        total = len(image_files(args.images))  # for the progress bar; embed_files lists the inputs as it does
        with _embedding("embedding", total) as progress, _naming_on_error():
            done = embed_files(bundle, args.images, progress=progress, **_embedding_options(args))
        _report_failures(done.failures, total, args.out)
        source = {"inputs": [str(Path(p).resolve()) for p in args.images], "files_sha256": files_sha256(done.paths)}
        negated = add_negatives(bundle, done.features, source=source)
        _say(negatives_line(negated, len(done.paths)))
        _say(rejection_line(negated.rejection))
        _save(negated, target)


def cmd_remove_negatives(args: argparse.Namespace) -> None:
    """``retailnb remove-negatives``: the bundle without its negatives, its threshold chosen again (under its
    lock; ``--rejection-score`` moves a bundle off ``background``, which needs them)."""
    target = check_writable(args.out or args.bundle)
    with exclusive(target, args.wait):
        bundle = _rejection_options(_edited_bundle(args), args)
        removed = remove_negatives(bundle)
        _say(f"removed {bundle.n_negatives} negative image{'' if bundle.n_negatives == 1 else 's'}")
        _say(rejection_line(removed.rejection))
        _save(removed, target)


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


def printable(text: str) -> str:
    """``text`` with every character that would break a table line (a newline, a tab, a control character)
    written as its escape, ``\\n``: one image is one line whatever its file is named."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cut(text: str, width: int, *, keep_end: bool = False) -> str:
    """``text`` in at most ``width`` characters: cut with ``...`` at the end (or, with ``keep_end``, at the start)."""
    text = printable(text)
    if len(text) <= width:
        return text
    return "..." + text[len(text) - width + 3:] if keep_end else text[: width - 3] + "..."


def _shown_images(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The images as the table shows them: relative to the folder they all share (a file's name for one)."""
    paths = [os.path.abspath(r["image"]) for r in rows]
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [os.path.relpath(p, common) for p in paths]


def _top_text(predictions: Sequence[Mapping[str, Any]], width: int) -> str:
    """``red 0.912, blue 0.051, ...``: the top products with their probabilities, as many as fit in ``width``."""
    text = ""
    for i, p in enumerate(predictions):
        item = f"{printable(p['product'])} {p['probability']:.3f}"
        more = i + 1 < len(predictions)
        candidate = f"{text}, {item}" if text else item
        if len(candidate) + (5 if more else 0) > width:  # room for ", ..."
            return f"{text}, ..." if text else _cut(item, width)
        text = candidate
    return text


def format_table(rows: Sequence[dict[str, Any]], width: int = TABLE_WIDTH) -> str:
    """One line per image, at most ``width`` characters: the image, its answer (``unknown`` when rejected),
    its known-ness score (when the bundle has one), and its top products with their probabilities, as many
    as fit.

    Images are shown relative to the folder they all share; long paths and product names are cut with
    ``...`` (``--format csv`` or ``json`` give them whole).
    """
    with_score = any(r.get("known_score") is not None for r in rows)
    images = [_cut(image, 36, keep_end=True) for image in _shown_images(rows)]
    answers = [_cut(r["answer"], 20) for r in rows]
    scores = [_score_text(r.get("known_score"), 4) for r in rows]
    fixed = [max(len(x) for x in column) for column in (["image", *images], ["answer", *answers],
                                                          *([["score", *scores]] if with_score else []))]
    room = max(width - sum(fixed) - 2 * len(fixed), 20)
    header = ["image", "answer", *(["score"] if with_score else []), "top products"]
    body = [[image, answer, *([score] if with_score else []), _top_text(r["predictions"], room)]
            for image, answer, score, r in zip(images, answers, scores, rows)]
    return aligned([header, *body]) + "\n"


def format_csv(rows: Sequence[dict[str, Any]]) -> str:
    """One line per image: ``image,answer,known_score,threshold,label_1,probability_1,...,label_k,probability_k``.

    ``answer`` is the top product, or ``unknown`` when the image scored below the threshold; ``known_score``
    and ``threshold`` are empty when the bundle has no rejection threshold (``threshold`` also with
    ``--no-reject``); ``label_i`` is the i-th most probable product.
    """
    k = max(len(r["predictions"]) for r in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "answer", "known_score", "threshold",
                     *(f"{part}_{i}" for i in range(1, k + 1) for part in ("label", "probability"))])
    for r in rows:
        writer.writerow([r["image"], r["answer"], _score_text(r["known_score"], 6), _score_text(r["threshold"], 6),
                         *(v for p in r["predictions"] for v in (p["product"], f"{p['probability']:.6f}"))])
    return buffer.getvalue()


def format_json(rows: Sequence[dict[str, Any]]) -> str:
    """A JSON list: per image, ``image``, ``answer`` (top product or ``unknown``), ``known``, ``known_score``,
    ``threshold`` and its ``predictions`` (``product``, ``probability``), best first."""
    return json.dumps(list(rows), indent=1) + "\n"


def _share(count: int, total: int) -> str:
    """``count`` of ``total`` as a whole percentage, ``<1%`` rather than ``0%`` for a few."""
    percent = 100 * count / total if total else 0.0
    return "<1%" if 0 < percent < 0.5 else f"{percent:.0f}%"


def summary_line(predictions: Predictions, rejection: Rejection | None) -> str:
    """The one line ``retailnb predict`` ends with on stderr: how many images, how many answered ``unknown`` and
    their share, and the rejection that decided it, with the known-product recall its threshold was chosen for.

    E.g. ``12 images: 3 unknown (25%); rejection: knn score, threshold 0.812 set to accept 95% of known-product
    images``. With ``--no-reject`` it says how many the threshold would have answered ``unknown``.

    Args:
        predictions: what :func:`retailnb.bundle.predict.predict_files` returned.
        rejection: the bundle's rejection (None: a bundle written before rejection existed).
    """
    n = len(predictions.indices)
    images = f"{n} image{'' if n == 1 else 's'}"
    if rejection is None:
        return (f"{images}: 0 unknown; rejection off: the bundle was written before unknown-product rejection "
                "(refit it to choose a threshold)")
    if not rejection.active:
        return f"{images}: 0 unknown; rejection off until products have two or more images ({rejection.score} score)"
    how = (f"rejection: {rejection.score} score, threshold {rejection.threshold:.4g} set to accept "
           f"{rejection.recall * 100:g}% of known-product images")
    if predictions.threshold is None or predictions.known is None:  # --no-reject: scored, held to nothing
        scores = predictions.known_scores
        would = 0 if scores is None else int((scores < rejection.threshold).sum())
        return f"{images}: 0 unknown (--no-reject; {would} ({_share(would, n)}) score below the threshold); {how}"
    unknown = int((~predictions.known).sum())
    return f"{images}: {unknown} unknown ({_share(unknown, n)}); {how}"


def cmd_predict(args: argparse.Namespace) -> None:
    """``retailnb predict``: the top-k products of each image, as a table, JSON or CSV, with its answer.

    The answer is the top product, or ``unknown`` where the image's known-ness score is below the bundle's
    threshold (unless ``--no-reject``). It is :func:`retailnb.bundle.predict.predict_files`, on the
    command line's options; stderr ends with :func:`summary_line`.
    """
    if args.out is not None:
        check_writable(args.out)  # before any work
    bundle = _inference_bundle(args)
    total = len(image_files(args.images))  # for the progress bar; the function lists the inputs as it does
    with _embedding(f"predicting on {bundle.device}", total) as progress, _naming_on_error():
        predictions = predict_files(bundle, args.images, args.top_k, progress=progress, reject=args.reject,
                                    **_embedding_options(args))
    _report_failures(predictions.failures, total, args.out)
    rows = _rows(predictions.paths, predictions)
    text = {"table": format_table, "csv": format_csv, "json": format_json}[args.format](rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_write(args.out, "w") as fh:
            fh.write(text)
        _say(f"wrote {args.out}: predictions for {len(rows)} images")
    _say(summary_line(predictions, bundle.rejection))
