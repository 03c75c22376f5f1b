"""The ``retailnb`` command line: embed images, fit a probe, add or remove products, predict.

It is a thin layer over :mod:`retailnb.bundle` and :mod:`retailnb.enrol`. Every command that changes a
bundle builds the new one in memory and writes it atomically at the end, so a failure at any step
(an unreadable image, a wrong folder layout, a bundle of another format, a product that already
exists) leaves the old bundle byte for byte as it was. Such failures print one line on stderr and exit
with status 2, without a traceback. Progress bars and timings go to stderr; results go to stdout or
to the ``--out`` file.

Examples::

    retailnb fit shop/ --architecture mobilenetv3_small_100 --backbone-weights backbone.pt \\
        --image-size 64 --out shop.bundle
    retailnb add-products new_products/ --bundle shop.bundle
    retailnb remove-products old_cola old_chips --bundle shop.bundle
    retailnb predict shelf_crops/ --bundle shop.bundle --top-k 3 --format csv --out predictions.csv
    retailnb embed shelf_crops/ --bundle shop.bundle --out features.npz
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Sequence
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

EXIT_USER_ERROR = 2
"""Exit status of a command stopped by bad input (argparse uses the same for bad arguments)."""

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

FORMATS = ("table", "json", "csv")
CHOOSE_C_HELP = ("choose the regularisation C again by cross-validation (a dozen fits instead of one); by default "
                 "the probe is refitted with the bundle's C")


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _embed_with_progress(bundle: Bundle, paths: Sequence[Path], what: str) -> np.ndarray:
    """Features of ``paths`` with a progress bar on stderr and the throughput printed after."""
    start = time.perf_counter()
    with tqdm(total=len(paths), desc=what, unit="img", file=sys.stderr, disable=None, leave=False) as bar:
        features = embed_files(bundle, paths, progress=bar.update)
    seconds = time.perf_counter() - start
    _say(f"{what}: {len(paths)} images in {seconds:.2f} s ({len(paths) / seconds:.1f} images/s)")
    return features


def _folder_features(bundle: Bundle, folder: str) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Features of a product folder, with progress, and their product names and provenance."""
    start = time.perf_counter()
    with tqdm(desc="embedding", unit="img", file=sys.stderr, disable=None, leave=False) as bar:
        features, names, source = folder_features(bundle, folder, progress=bar.update)
    seconds = time.perf_counter() - start
    _say(f"embedding: {len(names)} images of {len(set(names))} products in {seconds:.2f} s "
         f"({len(names) / seconds:.1f} images/s)")
    return features, names, source


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
    features = _embed_with_progress(bundle, paths, "embedding")
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
    classes = sorted(set(names))
    labels = [classes.index(n) for n in names]
    start = time.perf_counter()
    fitted = fit_probe(bundle, features, labels, classes, source=source)
    assert fitted.probe is not None  # fit_probe always fits one: it needs two products or more
    _say(f"fitted the probe on {len(classes)} products (C={fitted.probe.c:g}, chosen by cross-validation) in "
         f"{time.perf_counter() - start:.2f} s")
    _save(fitted, args.out)


def cmd_add_products(args: argparse.Namespace) -> None:
    """``retailnb add-products``: the bundle plus the folder's products, probe refitted on old + new."""
    bundle = load_bundle(args.bundle)
    check_new_products(bundle, list(product_folders(args.folder)))  # fail before embedding anything
    features, names, source = _folder_features(bundle, args.folder)
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
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in (header, *body)) + "\n"


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
    features = _embed_with_progress(bundle, paths, "predicting")
    rows = _rows(paths, predict_features(bundle, features, args.top_k))
    text = {"table": format_table, "csv": format_csv, "json": format_json}[args.format](rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_write(args.out, "w") as fh:
            fh.write(text)
        _say(f"wrote {args.out}: predictions for {len(rows)} images")


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="retailnb",
        description="Recognise retail products with a frozen backbone and a logistic regression kept in a "
        "bundle file; add or remove products by refitting the regression, not the network.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="write the features of images to a .npz file")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and folders of images")
    p.add_argument("--bundle", required=True, help="bundle whose backbone embeds the images")
    p.add_argument("--out", required=True, help="feature file to write (.npz)")
    p.set_defaults(run=cmd_embed)

    p = sub.add_parser("fit", help="fit a probe on FOLDER/<product>/<image> and write a new bundle")
    p.add_argument("folder", metavar="FOLDER", help="one sub-folder of images per product")
    p.add_argument("--bundle", help="bundle whose backbone to use (its products are replaced)")
    p.add_argument("--architecture", help="timm model name, to build a new bundle (without --bundle)")
    p.add_argument("--backbone-weights", help="backbone weights file (e.g. models/pretrain/.../backbone.pt), "
                   "or 'none' for random weights")
    p.add_argument("--image-size", type=_positive_int, help="side of the square input images, in pixels")
    p.add_argument("--out", required=True, help="bundle file to write")
    p.set_defaults(run=cmd_fit)

    p = sub.add_parser("add-products", help="add the products of FOLDER/<product>/<image> to a bundle")
    p.add_argument("folder", metavar="FOLDER", help="one sub-folder of images per new product")
    p.add_argument("--bundle", required=True, help="bundle to extend")
    p.add_argument("--out", help="bundle file to write (default: replace --bundle, atomically)")
    p.add_argument("--choose-c", action="store_true", help=CHOOSE_C_HELP)
    p.set_defaults(run=cmd_add_products)

    p = sub.add_parser("remove-products", help="remove products from a bundle")
    p.add_argument("names", nargs="+", metavar="NAME", help="products to remove")
    p.add_argument("--bundle", required=True, help="bundle to shrink")
    p.add_argument("--out", help="bundle file to write (default: replace --bundle, atomically)")
    p.add_argument("--choose-c", action="store_true", help=CHOOSE_C_HELP)
    p.set_defaults(run=cmd_remove_products)

    p = sub.add_parser("predict", help="the most probable products of each image")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and folders of images")
    p.add_argument("--bundle", required=True, help="bundle to predict with")
    p.add_argument("--top-k", type=_positive_int, default=5, help="products per image (default 5)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(run=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit status (0, or 2 for bad input).

    Args:
        argv: the arguments after the program name; None reads ``sys.argv``.
    """
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as err:
        _say(f"retailnb {args.command}: error: {err}")
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
