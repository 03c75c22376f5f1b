"""The ``retailnb`` command line: embed images, fit a probe, add or remove products and negatives, predict,
describe a bundle.

It is a thin layer over the modules of :mod:`retailnb.bundle` (see :mod:`retailnb.bundle.model`). Every
command that changes a bundle builds the new one in memory and writes it atomically at the end, so a
failure at any step (an unreadable image, a wrong folder layout, a bundle of another format, a product
that already exists) leaves the old bundle byte for byte as it was. Such failures print one line on stderr and exit
with status 2, without a traceback; so does every ``OSError`` on the user's paths, naming the path.
A command that replaces a bundle holds the bundle's lock from load to save, so two commands editing
the same bundle at once run one after the other (``--wait`` says how long the second waits). Progress bars and timings go to stderr; results go to stdout or
to the ``--out`` file.

The command line answers at once where it can: ``--help``, ``--version``, a bad option and every path
(the bundle, its format version, the images, the folder, the output, the backbone weights and their
``backbone.json``) are checked before torch is imported (:func:`check_args`), and ``info`` reads the bundle's
metadata without building its backbone (:mod:`retailnb.bundle.info`). While a command then loads torch
and the bundle, a status line on stderr says so (in a terminal; :class:`Status`).

Examples::

    retailnb fit shop/ --backbone-weights models/seeds/0/pretrain/simclr_supcon/backbone.pt --out shop.bundle
    retailnb fit shop/ --architecture mobilenetv3_small_100 --backbone-weights none --image-size 64 --out random.bundle
    retailnb add-products new_products/ --bundle shop.bundle
    retailnb add-products packshots/ --images catalogue --recall 0.9 --bundle shop.bundle
    retailnb remove-products old_cola old_chips --bundle shop.bundle
    retailnb add-negatives not_sold/ --bundle shop.bundle   # images it must never name
    retailnb remove-negatives --bundle shop.bundle
    retailnb predict shelf_crops/ --bundle shop.bundle --top-k 3 --format csv --out predictions.csv
    retailnb predict shelf_crops/ --bundle shop.bundle --device cuda --batch-size 256 --workers 8
    retailnb predict shelf_crops/ --bundle shop.bundle --no-reject   # always name a product, never "unknown"
    retailnb embed shelf_crops/ --bundle shop.bundle --out features.npz --on-error skip
    retailnb info shop.bundle
    python -m retailnb --version
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import retailnb
# plain Python: the choices are offered and checked before torch is imported
from retailnb.bundle.choices import (
    DEFAULT_REJECTION_SCORE,
    DEVICES,
    EMBEDDINGS_ARRAYS,
    FORMATS,
    IMAGE_KINDS,
    ON_ERROR,
    TABLE_WIDTH,
    WAIT_S,
)
from retailnb.config.score_names import BUNDLE_SCORES

EXIT_USER_ERROR = 2
"""Exit status of a command stopped by bad input (argparse uses the same for bad arguments)."""

BUNDLE_EDITS = ("add-products", "remove-products", "add-negatives", "remove-negatives")
"""The commands that change a bundle in place (or write the changed bundle to ``--out``)."""
CHOOSE_C_HELP = ("choose the regularisation C again by cross-validation (a dozen fits instead of one); by default "
                 "the probe is refitted with the bundle's C")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _inference_options(p: argparse.ArgumentParser) -> None:
    """Where and how the backbone runs: the options of the commands that embed images they are given."""
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the bundle's backbone runs; auto: cuda when available, else cpu (default auto)")
    _embedding_options(p)


def _embedding_options(p: argparse.ArgumentParser) -> None:
    """How the images given are embedded: batches, threads, unreadable images."""
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=_positive_int,
                   help="threads that decode and embed batches (default: one per torch thread on cpu, one per "
                   "core on cuda)")
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="an image that cannot be read: raise: stop at the first, naming it; or skip it and go on "
                   "(the count on stderr, the files in OUT.errors.csv beside --out, else on stderr) (default raise, "
                   "as in embed_files and predict_files)")


def _recall(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share of known-product images in (0, 1], got {text}")
    return value


def _rejection_options(p: argparse.ArgumentParser) -> None:
    """How the unknown-product threshold is chosen: fit, add-products and add-negatives."""
    p.add_argument("--recall", type=_recall, metavar="R",
                   help="share of known-product images to accept, 0 < R <= 1: images scoring below the threshold "
                   "that accepts R of the enrolled images (held out) are answered 'unknown'; stored in the bundle "
                   "(default: the bundle's, 0.95 for a new one)")
    p.add_argument("--rejection-score", choices=BUNDLE_SCORES,
                   help="known-ness score of the rejection: knn (cosine to the nearest enrolled image), prototype "
                   "(cosine to the nearest product's mean feature), mahalanobis or relative_mahalanobis (distance "
                   "to the nearest product's Gaussian, the latter less the distance to all images' Gaussian), msp "
                   "(the probe's top probability), energy (log-sum-exp of its logits) or background (one minus "
                   "the probability of a probe over the products and the bundle's negatives that an image is a "
                   "negative; needs negatives); knn and prototype subtract the cosine to the nearest of the "
                   "bundle's negatives (add-negatives); stored in the "
                   f"bundle (default: the bundle's, {DEFAULT_REJECTION_SCORE} for a new one)")


def _enrolment_options(p: argparse.ArgumentParser) -> None:
    """What the enrolment images are and how the unknown-product threshold is chosen: fit and add-products."""
    p.add_argument("--images", choices=IMAGE_KINDS, default="shelf",
                   help="what FOLDER's images are: shelf photos, or catalogue packshots (often one or two per "
                   "product); recorded per product in the bundle's history (default shelf)")
    _rejection_options(p)


IMAGE_SIZES = (16, 1024)
"""The image sizes ``--image-size`` takes, in pixels (as ``backbone.image_size`` of params.yaml)."""


def _image_size(text: str) -> int:
    value = _positive_int(text)
    low, high = IMAGE_SIZES
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be a side of {low} to {high} pixels, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _wait_option(p: argparse.ArgumentParser) -> None:
    """How long a command that replaces a bundle waits for another command editing the same file."""
    p.add_argument("--wait", type=_non_negative_float, default=WAIT_S, metavar="SECONDS",
                   help="while another retailnb command edits the same bundle, wait this long for it, then "
                   f"give up with 'busy' (default {WAIT_S:g}; 0: give up at once)")


def _force_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="let --out replace an input or a file of another kind "
                   "(refused otherwise)")


def _bundle_edit_options(p: argparse.ArgumentParser, bundle_help: str, *, run: str, choose_c: bool = True) -> None:
    """The options shared by the commands that change a bundle in place (``--choose-c`` where they refit the probe)."""
    p.add_argument("--bundle", required=True, help=bundle_help)
    p.add_argument("--out", help="bundle file to write (default: replace --bundle, atomically)")
    _force_option(p)
    if choose_c:
        p.add_argument("--choose-c", action="store_true", help=CHOOSE_C_HELP)
    _wait_option(p)
    p.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="retailnb",
        description="Recognise retail products with a frozen backbone and a logistic regression kept in a "
        "bundle file; add or remove products by refitting the regression, not the network.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {retailnb.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="write the features of images to a .npz file")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and folders of images")
    p.add_argument("--bundle", required=True, help="bundle whose backbone embeds the images")
    p.add_argument("--out", required=True, help=f"feature file to write (.npz with arrays {EMBEDDINGS_ARRAYS}; "
                   "row i of features is the image paths[i])")
    _force_option(p)
    _inference_options(p)
    p.set_defaults(run="cmd_embed")

    p = sub.add_parser("fit", help="fit a probe on FOLDER/<product>/<image> and write a new bundle")
    p.add_argument("folder", metavar="FOLDER", help="one sub-folder of images per product")
    p.add_argument("--bundle", help="bundle whose backbone to use (its products are replaced)")
    p.add_argument("--backbone-weights", metavar="WEIGHTS",
                   help="without --bundle: the backbone's weights file (e.g. models/seeds/0/pretrain/simclr_supcon/"
                   "backbone.pt or models/seeds/0/noisy/round_2/backbone.pt), or 'none' for random weights")
    p.add_argument("--architecture", help="timm model name of the backbone (default: the one backbone.json beside "
                   "the weights records; needed with --backbone-weights none)")
    p.add_argument("--image-size", type=_image_size, help="side of the square input images, in pixels (default: "
                   "the size backbone.json beside the weights records; needed with --backbone-weights none)")
    p.add_argument("--out", required=True, help="bundle file to write")
    p.add_argument("--trained-on", metavar="MANIFEST",
                   help="the manifest the backbone trained on (data/prepared/manifest.csv of the pipeline run that "
                   "made it): the threshold is chosen on FOLDER's photos it trained no backbone on (those "
                   "data.calibration_folds kept out), which a new photo resembles")
    _force_option(p)
    _enrolment_options(p)
    _wait_option(p)
    p.set_defaults(run="cmd_fit")

    p = sub.add_parser("add-products", help="add the products of FOLDER/<product>/<image> to a bundle")
    p.add_argument("folder", metavar="FOLDER", help="one sub-folder of images per new product")
    _enrolment_options(p)
    _bundle_edit_options(p, "bundle to extend", run="cmd_add_products")

    p = sub.add_parser("remove-products", help="remove products from a bundle")
    p.add_argument("names", nargs="+", metavar="NAME", help="products to remove")
    _bundle_edit_options(p, "bundle to shrink", run="cmd_remove_products")

    p = sub.add_parser("add-negatives", help="add images a bundle must never name (products the store does not "
                       "sell); its unknown-product threshold is chosen again")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS",
                   help="image files and folders of images (every image below a folder; no product sub-folders "
                   "needed)")
    _rejection_options(p)
    _embedding_options(p)  # on the cpu, as every command that changes a bundle
    _bundle_edit_options(p, "bundle to add the negatives to", run="cmd_add_negatives", choose_c=False)

    p = sub.add_parser("remove-negatives", help="drop every negative of a bundle; its threshold is chosen again")
    _rejection_options(p)
    _bundle_edit_options(p, "bundle whose negatives to drop", run="cmd_remove_negatives", choose_c=False)

    p = sub.add_parser("predict", help="the most probable products of each image")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and folders of images")
    p.add_argument("--bundle", required=True, help="bundle to predict with")
    p.add_argument("--top-k", type=_positive_int, default=5, help="products per image (default 5)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help=f"table: one line per image, at most {TABLE_WIDTH} characters (paths and names cut to fit); "
                   "csv: one row per image, columns image, answer, known_score, threshold, label_1, probability_1, "
                   "..., label_K, probability_K; json: a list of every field (default table)")
    p.add_argument("--out", help="file to write (default: stdout)")
    _force_option(p)
    p.add_argument("--no-reject", dest="reject", action="store_false",
                   help="always answer the most probable product, never 'unknown' (the known-ness score is "
                   "still written)")
    _inference_options(p)
    p.set_defaults(run="cmd_predict")

    p = sub.add_parser("info", help="a bundle's products with their image counts, backbone and provenance")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle file")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(run="run_info")
    return parser


class Status:
    """One line on stderr that says what a command is loading, with the seconds so far, redrawn in place.

    Drawn only when stderr is a terminal (as every progress bar of retailnb): piped or captured, it
    prints nothing. A thread redraws it twice a second, so the seconds move while the main thread
    imports torch or reads a bundle. Close it before printing anything else on stderr.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        isatty = getattr(sys.stderr, "isatty", None)
        self._terminal = bool(isatty is not None and isatty())
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            bar = self._bar
            if bar is not None:
                bar.refresh()

    def show(self, text: str) -> None:
        """Say ``text`` (e.g. ``loading shop.bundle``) after the prefix, on a line drawn from now on."""
        if not self._terminal:
            return
        line = f"{self.prefix}: {text}"
        if self._bar is not None:
            self._bar.set_description_str(line)
            return
        from tqdm import tqdm  # the house progress bar; only a terminal needs it

        self._bar = tqdm(total=None, desc=line, bar_format="{desc} ({elapsed})", file=sys.stderr, leave=False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Erase the line (a later :meth:`show` draws a new one)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Status:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _check_images(paths: Sequence[str]) -> None:
    """Every image file or folder named exists (what is in the folders is listed once torch is loaded)."""
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such image file or folder: {path}")


def _check_folder(folder: str) -> None:
    """A ``FOLDER/<product>/<image>`` argument is a folder (its layout is checked once torch is loaded)."""
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: not a folder; expected {folder}/<product>/<image>")


def _check_trained_on(path: str) -> None:
    """``--trained-on`` is a manifest with rows that train a backbone (``labelled`` or ``unlabelled``)."""
    from retailnb.data.manifest import TRAINING_ROLES, read_manifest

    if not read_manifest(path).select(*TRAINING_ROLES):
        raise ValueError(f"{path}: no {' or '.join(TRAINING_ROLES)} rows: this manifest trains no backbone")


def _check_bundle(path: str, *, with_products: bool = False) -> None:
    """``--bundle`` is a bundle file of this format version (``bundle.json`` alone is read)."""
    from retailnb.bundle.info import read_bundle_meta

    meta = read_bundle_meta(path)
    if with_products and meta.get("probe") is None:
        raise ValueError(f"{path}: this bundle has no products yet; fit them with `retailnb fit`")


def _check_backbone(args: argparse.Namespace) -> None:
    """fit's backbone options: ``--bundle`` or weights; the architecture and size filled in from ``backbone.json``."""
    given = [args.architecture, args.backbone_weights, args.image_size]
    if args.bundle is not None:
        if any(o is not None for o in given):
            raise ValueError("give either --bundle or --architecture/--backbone-weights/--image-size, not both")
        _check_bundle(args.bundle)
        return
    if args.backbone_weights is None:
        raise ValueError("without --bundle, fit needs --backbone-weights: a weights file (e.g. models/seeds/0/pretrain/"
                         "simclr_supcon/backbone.pt; the backbone.json beside it gives --architecture and "
                         "--image-size), or none for random weights with --architecture and --image-size")
    from retailnb.models.backbone_info import WEIGHTS_HUB, WEIGHTS_NONE, resolve_backbone

    if args.backbone_weights in (WEIGHTS_NONE, WEIGHTS_HUB) and (args.architecture is None or args.image_size is None):
        missing = [flag for flag, o in (("--architecture", args.architecture), ("--image-size", args.image_size))
                   if o is None]
        raise ValueError(f"--backbone-weights {args.backbone_weights} needs {' and '.join(missing)}")
    args.architecture, args.image_size, _ = resolve_backbone(args.architecture, args.backbone_weights,
                                                             args.image_size)


def _is_text(path: Path) -> bool:
    """Whether a file's first bytes read as UTF-8 text (a table, CSV or JSON that predict wrote)."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start > len(head) - 4  # a character cut at the end of the sample
    return b"\0" not in head


def _own_format(command: str, out: Path) -> bool:
    """Whether an existing ``out`` is a file of the command's own output format (so it may be replaced)."""
    import zipfile

    if command in BUNDLE_EDITS or command == "fit":  # a bundle: a zip holding bundle.json
        return zipfile.is_zipfile(out) and "bundle.json" in zipfile.ZipFile(out).namelist()
    if command == "embed":  # a .npz of features: a zip of .npy arrays, not a bundle
        return zipfile.is_zipfile(out) and all(n.endswith(".npy") for n in zipfile.ZipFile(out).namelist())
    from retailnb.data.listing import is_image_name

    return _is_text(out) and not is_image_name(out)  # predict: a table, CSV or JSON


def check_out(args: argparse.Namespace) -> None:
    """The output never replaces an input: ``--out`` naming the bundle read (embed, predict), an input image
    or folder, or an existing file that is not of the command's own output format is refused unless
    ``--force``. The bundle a bundle-editing command changes in place is its own output, and allowed.

    Raises:
        ValueError: the output would replace an input or another kind of file; the message names both.
    """
    out_arg = getattr(args, "out", None)
    if out_arg is None or getattr(args, "force", False):
        return
    from retailnb.data.listing import is_image_name  # Pillow, loaded here rather than by ``--help``

    out = Path(os.path.realpath(out_arg))  # os.path.realpath: a link loop stays itself, Path.resolve raises
    if args.command in ("embed", "predict") and out == Path(os.path.realpath(args.bundle)):
        raise ValueError(f"--out {out_arg} is the bundle read (--bundle {args.bundle}); name another file "
                         "(--force to replace it anyway)")
    inputs = [Path(p) for p in getattr(args, "images", None) or []] + (
        [Path(args.folder)] if getattr(args, "folder", None) else [])
    for given in inputs:
        source = Path(os.path.realpath(given))
        if out == source or (source.is_dir() and source in out.parents and is_image_name(out)):
            raise ValueError(f"--out {out_arg} is an input ({given}); name another file (--force to replace it anyway)")
    if out.is_file() and not _own_format(args.command, out):
        what = {"embed": "a .npz of features", "predict": "a text file (table, CSV or JSON)"}.get(args.command, "a bundle")
        raise ValueError(f"--out {out_arg} exists and is not {what}; name another file (--force to replace it anyway)")


def check_args(args: argparse.Namespace) -> None:
    """Check a command's paths and options before torch is imported, so that a wrong one answers at once.

    The bundle (a file of this format version; with products, for ``predict``), the images and folders
    (they exist), the output (writable), and ``fit``'s backbone: ``--architecture`` and ``--image-size``
    are filled in from the ``backbone.json`` beside ``--backbone-weights`` when not given, and one that
    differs from it is an error naming both. What needs torch (an unknown timm name, a device this
    machine lacks, an image that does not decode) is checked when the command runs.

    Raises:
        OSError, ValueError: a path or option is wrong; the message names it.
    """
    from retailnb.util.atomic import check_writable

    check_out(args)
    command = args.command
    if command in ("embed", "predict"):
        _check_bundle(args.bundle, with_products=command == "predict")
        _check_images(args.images)
        if args.out is not None:
            check_writable(args.out)
    elif command == "fit":
        _check_folder(args.folder)
        _check_backbone(args)
        if args.trained_on is not None:
            _check_trained_on(args.trained_on)
        check_writable(args.out)
    elif command in BUNDLE_EDITS:
        if command == "add-products":
            _check_folder(args.folder)
        if command == "add-negatives":
            _check_images(args.images)
        _check_bundle(args.bundle)
        check_writable(args.out or args.bundle)


def run_info(args: argparse.Namespace) -> None:
    """``retailnb info``: what a bundle holds (products and image counts) and where it came from.

    Reads the bundle's metadata and labels only (:func:`retailnb.bundle.info.bundle_info`): no torch, no backbone.
    """
    from retailnb.bundle.info import bundle_info, format_info

    info = {"bundle": str(args.bundle), **bundle_info(args.bundle)}
    if args.format == "json":
        sys.stdout.write(json.dumps(info, indent=1) + "\n")
    else:
        sys.stdout.write(f"{args.bundle}\n" + format_info(info))


def _user_error(args: argparse.Namespace, err: BaseException) -> int:
    print(f"retailnb {args.command}: error: {error_line(err)}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit status (0, or 2 for bad input).

    Args:
        argv: the arguments after the program name; None reads ``sys.argv``.
    """
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        if args.command == "info":
            run_info(args)
            return 0
    except (OSError, ValueError) as err:  # ValueError: BundleError and every other FileProblem too
        return _user_error(args, err)
    with Status(f"retailnb {args.command}") as status:
        status.show("loading torch, timm and scikit-learn")
        from retailnb.bundle import commands  # torch, timm, scikit-learn: only once a command runs

        args.status = status
        try:
            getattr(commands, args.run)(args)
        except commands.USER_ERRORS as err:
            status.close()
            return _user_error(args, err)
    return 0


def error_line(err: BaseException) -> str:
    """A user error in one line: an ``OSError`` as ``<path>: <what>``, any message's lines joined.

    ``str(OSError)`` reads ``[Errno 2] No such file or directory: 'x'``; the path first, as in every
    other message of the command line, reads better.
    """
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
