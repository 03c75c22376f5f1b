"""The implementations of the ``retailnb`` commands (see :mod:`retailnb.cli` for the command line).

They live apart from the argument parser so that ``retailnb --help`` and a mistyped option answer at
once: this module imports torch, timm and scikit-learn (several seconds), and only a command that runs
needs them.
"""


from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retailnb.atomic import atomic_write
from retailnb.bundle import (
    Bundle,
    BundleError,
    ClassNameError,
    Predictions,
    add_products,
    check_new_products,
    embed_files,
    fit_probe,
    load_bundle,
    new_bundle,
    predict_features,
    remove_products,
    save_bundle,
)
from retailnb.data.adapters import DatasetError
from retailnb.data.imagefiles import image_files, product_folders
from retailnb.data.images import ImageError
from retailnb.enrol import folder_features
from retailnb.evaluation.features import save_features
from retailnb.models.backbone import WeightsUnavailableError
from retailnb.models.checkpoint import CheckpointError
from retailnb.tables import aligned

USER_ERRORS = (
    BundleError,
    ClassNameError,
    DatasetError,
    ImageError,
    CheckpointError,
    WeightsUnavailableError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
    ValueError,
)
"""Errors caused by what the user passed: reported in one line, never as a traceback."""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def _embedding(what: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar of embedded images on stderr; when the block ends, how many and how fast.

    Yields the bar's ``update``, to pass as ``progress`` to :func:`retailnb.bundle.embed_files`.
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


def _embed_files(bundle: Bundle, paths: Sequence[Path], what: str) -> np.ndarray:
    with _embedding(what, len(paths)) as progress:
        return embed_files(bundle, paths, progress=progress)


def _folder_features(bundle: Bundle, folder: str, products: Mapping[str, Sequence[Path]] | None = None,
                     ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    with _embedding("embedding") as progress:
        return folder_features(bundle, folder, products=products, progress=progress)


def _save(bundle: Bundle, out: str) -> None:
    save_bundle(bundle, out)
    _say(f"wrote {out}: {len(bundle.class_names)} products, {len(bundle.labels)} training images")


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def cmd_embed(args: argparse.Namespace) -> None:
    """``retailnb embed``: features of images, written as a feature file (``.npz``)."""
    bundle = load_bundle(args.bundle)
    paths = image_files(args.images)
    features = _embed_files(bundle, paths, "embedding")
    save_features(args.out, features, [-1] * len(paths), [], bundle=str(args.bundle),
                  architecture=bundle.architecture, image_size=bundle.preprocessing.image_size,
                  paths=[str(p) for p in paths])
    _say(f"wrote {args.out}: {features.shape[0]} x {features.shape[1]} features")


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
    return new_bundle(args.architecture, weights=args.backbone_weights, image_size=args.image_size)


def cmd_fit(args: argparse.Namespace) -> None:
    """``retailnb fit``: a bundle whose products are exactly the folder's, its probe fitted from scratch."""
    bundle = _base_bundle(args)
    features, names, source = _folder_features(bundle, args.folder)
    start = time.perf_counter()
    fitted = fit_probe(bundle, features, names, source=source)
    assert fitted.probe is not None  # fit_probe always fits one: it needs two products or more
    _say(f"fitted the probe on {len(fitted.class_names)} products (C={fitted.probe.c:g}, chosen by "
         f"cross-validation) in {time.perf_counter() - start:.2f} s")
    _save(fitted, args.out)


def cmd_add_products(args: argparse.Namespace) -> None:
    """``retailnb add-products``: the bundle plus the folder's products, probe refitted on old + new."""
    bundle = load_bundle(args.bundle)
    products = product_folders(args.folder)
    check_new_products(bundle, list(products))  # fail before embedding anything
    features, names, source = _folder_features(bundle, args.folder, products)
    start = time.perf_counter()
    enrolled = add_products(bundle, features, names, choose_c=args.choose_c, source=source)
    _say(f"refitted the probe on {len(enrolled.class_names)} products in {time.perf_counter() - start:.2f} s")
    _save(enrolled, args.out or args.bundle)


def cmd_remove_products(args: argparse.Namespace) -> None:
    """``retailnb remove-products``: the bundle without the named products, probe refitted."""
    bundle = load_bundle(args.bundle)
    _save(remove_products(bundle, args.names, choose_c=args.choose_c), args.out or args.bundle)


def _rows(paths: Sequence[Path], predictions: Predictions) -> list[dict[str, Any]]:
    """One dict per image: its path and its top-k (product, probability) pairs."""
    return [
        {"image": str(path), "predictions": [{"product": name, "probability": float(p)}
                                             for name, p in zip(names, scores)]}
        for path, names, scores in zip(paths, predictions.names(), predictions.scores)
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned columns: the image, then each rank's product and probability."""
    k = max(len(r["predictions"]) for r in rows)
    header = ["image", *(f"{part}{i}" for i in range(1, k + 1) for part in ("top", "p"))]
    body = [[r["image"], *(v for p in r["predictions"] for v in (p["product"], f"{p['probability']:.3f}"))]
            for r in rows]
    return aligned([header, *body]) + "\n"


def format_csv(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (image, rank): ``image,rank,product,probability``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "rank", "product", "probability"])
    for r in rows:
        for rank, p in enumerate(r["predictions"], start=1):
            writer.writerow([r["image"], rank, p["product"], f"{p['probability']:.6f}"])
    return buffer.getvalue()


def format_json(rows: Sequence[dict[str, Any]]) -> str:
    """A JSON list: per image, ``image`` and its ``predictions`` (``product``, ``probability``), best first."""
    return json.dumps(list(rows), indent=1) + "\n"


def cmd_predict(args: argparse.Namespace) -> None:
    """``retailnb predict``: the top-k products of each image, as a table, JSON or CSV."""
    bundle = load_bundle(args.bundle)
    if bundle.probe is None:
        raise ValueError(f"{args.bundle}: this bundle has no products yet; fit them with `retailnb fit`")
    paths = image_files(args.images)
    features = _embed_files(bundle, paths, "predicting")
    rows = _rows(paths, predict_features(bundle, features, args.top_k))
    text = {"table": format_table, "csv": format_csv, "json": format_json}[args.format](rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_write(args.out, "w") as fh:
            fh.write(text)
        _say(f"wrote {args.out}: predictions for {len(rows)} images")
