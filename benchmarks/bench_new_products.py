"""How fast a bundle learns new products, and how fast it predicts from JPEG files.

(a) Enrolment, end to end: a bundle of 100 products (5 images each) is saved; then 10 new products
with 5 JPEG images each are added exactly as ``retailnb add-products`` does it: load the bundle,
decode and embed the 50 images, refit the probe on old + new features (with the bundle's C, as the
command does by default; ``--choose-c`` times choosing C again by cross-validation), save the bundle
atomically. Target: within 10 s on 2 CPU cores. The Python start-up
and imports of the command line (several seconds, mostly torch and timm) are not counted.

(b) Prediction throughput: images/s of prediction from JPEG files (decoding, resizing, the backbone
and the probe; what ``retailnb predict`` does) against the bare model's forward pass on the same
images already decoded, normalised and laid out channels_last (the floor), with the same batch size
and torch's default threads. Target: a ratio of at least 0.8. Decoding alone is timed too, for scale.

Data: the synthetic catalogue of :mod:`retailnb.data.synthetic`, 110 products, 5 training images each
(a packshot and 4 shelf crops), rendered into a temporary folder. Model: ``mobilenetv3_small_100`` at
64 px with random weights (timing does not depend on the weights; nothing is downloaded).

Usage:
    python benchmarks/bench_new_products.py [--architecture mobilenetv3_small_100] [--image-size 64]
        [--old 100] [--new 10] [--shots 5] [--test-images 20] [--batch-size 64] [--threads N] [--repeats 3]
    python benchmarks/bench_new_products.py --smoke   # 2 into 5 products, test_resnet at 32 px, once
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import add_smoke, apply_smoke
from retailnb.bundle.embed import default_embed_workers, embed_files
from retailnb.bundle.fit import add_products, fit_probe, new_bundle
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.predict import predict_features
from retailnb.config.data import SyntheticSpec
from retailnb.data.images import decode_images
from retailnb.data.manifest import Manifest, read_manifest
from retailnb.data.synthetic import generate
from retailnb.models.backbone import create_backbone

SMOKE = {"architecture": "test_resnet", "image_size": 32, "old": 5, "new": 2, "shots": 2, "test_images": 2,
         "batch_size": 8, "repeats": 1}
"""``--smoke``: a tiny bundle and model, timed once."""


def render_catalogue(out: Path, n_products: int, shots: int, test_images: int, image_size: int) -> Manifest:
    """A synthetic catalogue of ``n_products`` products with ``shots`` training and ``test_images`` test images each."""
    families = -(-n_products // 5)
    config = SyntheticSpec(
        n_source_families=1, n_monitor_families=0, n_target_families=families, skus_per_family=5,
        labelled_fraction=1.0, catalogue_per_sku=1, labelled_shelf_per_sku=0, unlabelled_shelf_per_sku=0,
        monitor_train_per_sku=0, monitor_test_per_sku=0, probe_train_shelf_per_sku=shots - 1,
        probe_test_per_sku=test_images, image_size=image_size, difficulty=0.3, seed=0,
    )
    return read_manifest(generate(config, out))


def bench_enrolment(manifest: Manifest, args: argparse.Namespace, folder: Path) -> None:
    """Time adding ``args.new`` products to an ``args.old``-product bundle file, end to end."""
    rows = manifest.select("probe_train")
    products = sorted({r.class_name for r in rows})[: args.old + args.new]
    old, new = products[: args.old], products[args.old :]
    old_rows = [r for r in rows if r.class_name in old]
    new_rows = [r for r in rows if r.class_name in new]

    bundle = new_bundle(args.architecture, image_size=args.image_size)
    features = embed_files(bundle, manifest.paths(old_rows)).features
    path = folder / "shop.bundle"
    save_bundle(fit_probe(bundle, features, [r.class_name for r in old_rows]), path)
    print(f"(a) enrolment: {len(new)} new products x {args.shots} images into a {len(old)}-product bundle "
          f"({len(old_rows)} stored training features, {bundle.feature_dim}-d), {args.architecture} at "
          f"{args.image_size} px, {torch.get_num_threads()} torch threads")

    totals = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        loaded = load_bundle(path, device="cpu")
        t1 = time.perf_counter()
        new_features = embed_files(loaded, manifest.paths(new_rows)).features
        t2 = time.perf_counter()
        enrolled = add_products(loaded, new_features, [r.class_name for r in new_rows], choose_c=args.choose_c)
        t3 = time.perf_counter()
        save_bundle(enrolled, path.with_name("shop_enrolled.bundle"))
        t4 = time.perf_counter()
        totals.append(t4 - t0)
        c = f"C={enrolled.probe.c:g} {enrolled.provenance['history'][-1]['c_from']}"
        print(f"  load {t1 - t0:5.2f} s | decode + embed {len(new_rows)} images {t2 - t1:5.2f} s | refit probe "
              f"({len(enrolled.class_names)} classes, {c}) {t3 - t2:5.2f} s | save {t4 - t3:5.2f} s | "
              f"total {t4 - t0:5.2f} s")
    print(f"  end to end: best {min(totals):.2f} s, median {float(np.median(totals)):.2f} s (target: <= 10 s)")


def bench_prediction(manifest: Manifest, args: argparse.Namespace) -> None:
    """Images/s of prediction from JPEG files against the bare forward pass on decoded images.

    The two are timed alternately, ``args.repeats`` times each after a warm-up, and the best of each
    is kept, so that both see the same load from anything else running on the machine.
    """
    paths = manifest.paths(manifest.select("probe_train", "probe_test"))
    bundle = new_bundle(args.architecture, image_size=args.image_size)
    rng = np.random.default_rng(0)
    bundle = fit_probe(bundle, rng.normal(size=(2 * args.old, bundle.feature_dim)),
                       [f"p{i}" for i in range(args.old) for _ in range(2)])
    batch = args.batch_size

    images = decode_images(paths, args.image_size, workers=0)
    x = bundle.preprocessing.normalize(torch.from_numpy(images).permute(0, 3, 1, 2))
    x = x.contiguous(memory_format=torch.channels_last)
    model = create_backbone(args.architecture).eval().to(memory_format=torch.channels_last)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                model(x[start : start + batch])

    def from_files() -> None:
        predict_features(bundle, embed_files(bundle, paths, batch_size=batch).features, k=5)

    def decode_only() -> None:
        decode_images(paths, args.image_size, workers=0)

    runs: dict[str, list[float]] = {"predict from JPEG files": [], "bare forward (decoded, normalised)": [],
                                    "decoding alone (one thread)": []}
    for i in range(args.repeats + 1):
        for name, fn in zip(runs, (from_files, bare, decode_only)):
            start = time.perf_counter()
            fn()
            if i > 0:  # the first round warms up
                runs[name].append(len(paths) / (time.perf_counter() - start))
    print(f"(b) prediction: {len(paths)} JPEG files ({args.image_size} px), batch {batch}, "
          f"{torch.get_num_threads()} torch threads, {default_embed_workers(model)} embedding threads, "
          f"best of {args.repeats} (alternated)")
    for name, rates in runs.items():
        print(f"  {name:36s} {max(rates):8.1f} images/s  (all: {', '.join(f'{r:.0f}' for r in rates)})")
    predicted, bare_rates = runs["predict from JPEG files"], runs["bare forward (decoded, normalised)"]
    pairs = [p / b for p, b in zip(predicted, bare_rates)]  # each from two runs timed back to back
    print(f"  ratio: {max(predicted) / max(bare_rates):.2f} best to best, {float(np.median(pairs)):.2f} median of "
          f"back-to-back pairs (target: >= 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="mobilenetv3_small_100")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--old", type=int, default=100, help="products of the bundle before enrolment")
    parser.add_argument("--new", type=int, default=10, help="products to enrol")
    parser.add_argument("--shots", type=int, default=5, help="images per product")
    parser.add_argument("--test-images", type=int, default=20, help="extra test images per product for (b)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass in (b)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--choose-c", action="store_true", help="choose C again by cross-validation in (a)")
    parser.add_argument("--repeats", type=int, default=3)
    add_smoke(parser, "2 new products into a 5-product bundle, test_resnet at 32 px, timed once")
    args = apply_smoke(parser.parse_args(), SMOKE)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same random backbone, hence the same features and the same C, every run
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = render_catalogue(Path(tmp) / "data", args.old + args.new, args.shots, args.test_images,
                                    args.image_size)
        print(f"rendered {len(manifest.records)} synthetic images in {time.perf_counter() - start:.1f} s")
        bench_enrolment(manifest, args, Path(tmp))
        bench_prediction(manifest, args)


if __name__ == "__main__":
    main()
