"""Does memory stay flat as the data grows? In-memory images against the on-disk cache, at two scales.

For each set size (default 5k and 50k images at 64 px, 10x apart) and each way of holding decoded
images (``compute.images``: ``memory``, one uint8 tensor; ``disk``, the cache of
:mod:`retailnb.data.cache`), one fresh subprocess:

1. decodes the set (``disk``: builds the cache, in bounded chunks; a cache left by an earlier run of the
   same images is reused, as a stage would);
2. trains a classifier for ``--steps`` steps through the training path (``TargetDataset``,
   ``EpochBatchSampler``, ``DataLoader``), and times images/s after ``--warmup`` steps;
3. pseudolabels the whole set as the noisy student's teacher does (``network_probabilities``, in
   batches), and times seconds per image;

and reports its peak resident memory (``ru_maxrss`` of itself and of the decoding pool's processes, the
larger). A fresh process per configuration keeps one configuration's memory out of the next one's peak.
The two holdings must give the same pseudolabels (checked: a hash of the probabilities).

Targets (issue 16): the on-disk peak within 20% between the two sizes; on-disk training throughput at
least 0.9 of in-memory.

The images are smooth random pictures (upsampled noise, so the JPEGs are of realistic size), written once
under ``--work`` and reused; the smaller set is the first images of the larger one.

Usage:
    python benchmarks/bench_scale.py [--sizes 5000 50000] [--image-size 64] [--steps 40] [--work DIR]
    python benchmarks/bench_scale.py --smoke      # tiny sizes, a few steps: checks the script runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common import add_smoke, apply_smoke

STORAGES = ("memory", "disk")

SMOKE = {"sizes": [12, 120], "image_size": 16, "steps": 2, "warmup": 1, "batch_size": 8, "decode_workers": 0}
"""``--smoke``: two tiny sets, 10x apart, of 16 px images, and a few steps."""


def write_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of smooth random pictures, about ``size`` px (reused when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # drawn for every i: the same images each run
        if not path.exists():
            side = size + int(rng.integers(0, size // 4 + 1))
            Image.fromarray(coarse).resize((side, size), Image.Resampling.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def peak_rss_mib() -> float:
    """Peak resident memory of this process or of any waited-for child (the decoding pool), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def run_configuration(paths: list[Path], storage: str, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in this (fresh) process: decode, train, pseudolabel; the figures.

    The on-disk cache goes where a stage puts it, ``.cache/images`` under the current folder.
    """
    import timm
    import torch
    from torch.utils.data import DataLoader

    from retailnb.models.classifier import network_probabilities, soft_cross_entropy
    from retailnb.models.inference import imagenet_normalize
    from retailnb.train.datasets import TargetDataset, load_images
    from retailnb.train.sampler import EpochBatchSampler

    torch.manual_seed(0)
    started = time.perf_counter()
    images = load_images(paths, args.image_size, storage, workers=args.decode_workers)
    decode_s = time.perf_counter() - started

    n_classes = 10
    targets = torch.eye(n_classes)[torch.arange(len(paths)) % n_classes]
    sampler = EpochBatchSampler(np.full(len(paths), -1), batch_size=min(args.batch_size, len(paths)),
                                images_per_class=2, supcon_fraction=0.0, seed=0)
    loader = DataLoader(TargetDataset(images, targets), batch_sampler=sampler, num_workers=args.num_workers)
    model = timm.create_model(args.architecture, num_classes=n_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps, seen, t0 = 0, 0, time.perf_counter()
    while steps < args.warmup + args.steps:
        for x, y in loader:
            loss = soft_cross_entropy(model(imagenet_normalize(x).contiguous(memory_format=torch.channels_last)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == args.warmup:
                t0 = time.perf_counter()
            elif steps > args.warmup:
                seen += len(x)
            if steps == args.warmup + args.steps:
                break
        sampler.set_epoch(sampler.epoch + 1)
    timed_s = time.perf_counter() - t0

    started = time.perf_counter()
    probs = network_probabilities(model, images, batch_size=args.batch_size)
    infer_s = time.perf_counter() - started
    return {
        "images": len(paths),
        "storage": storage,
        "decode_seconds": round(decode_s, 3),
        "train_images_per_second": round(seen / timed_s, 2) if timed_s > 0 else 0.0,
        "pseudolabel_ms_per_image": round(1000 * infer_s / len(paths), 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "probabilities_hash": hashlib.blake2b(probs.astype(np.float64).tobytes(), digest_size=8).hexdigest(),
    }


def child_main(argv: list[str]) -> None:
    """Entry of one configuration's subprocess: prints its figures as one JSON line."""
    args = parse_args(argv)
    paths = sorted(Path(args.work, "images").resolve().glob("*.jpg"))[: args.child_images]
    os.chdir(args.work)  # the cache goes in WORK/.cache/images
    print(json.dumps(run_configuration(paths, args.child_storage, args)), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000], help="numbers of images")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--architecture", default="resnet10t", help="timm model trained and run as teacher")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (compute.num_workers)")
    parser.add_argument("--decode-workers", type=int, default=None, help="decoding processes (default: all cores)")
    parser.add_argument("--work", type=Path, default=None, help="images and cache (default: a new temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    add_smoke(parser, "tiny sizes and few steps")
    parser.add_argument("--child-storage", choices=STORAGES, help=argparse.SUPPRESS)
    parser.add_argument("--child-images", type=int, help=argparse.SUPPRESS)
    args = apply_smoke(parser.parse_args(argv), SMOKE)
    if len(args.sizes) < 2 or max(args.sizes) < 10 * min(args.sizes):
        parser.error("--sizes needs at least two sizes, the largest at least 10x the smallest")
    return args


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The table, the two targets and whether both holdings gave the same pseudolabels."""
    lines = [f"{'images':>8} {'storage':>7} {'decode s':>9} {'train img/s':>12} {'pseudolabel ms/img':>19} "
             f"{'peak RSS MiB':>13}"]
    for r in rows:
        lines.append(f"{r['images']:>8} {r['storage']:>7} {r['decode_seconds']:>9.2f} "
                     f"{r['train_images_per_second']:>12.1f} {r['pseudolabel_ms_per_image']:>19.3f} "
                     f"{r['peak_rss_mib']:>13.1f}")
    by = {(r["images"], r["storage"]): r for r in rows}
    small, large = min(r["images"] for r in rows), max(r["images"] for r in rows)
    growth = by[(large, "disk")]["peak_rss_mib"] / by[(small, "disk")]["peak_rss_mib"]
    lines.append(f"disk peak memory, {large} against {small} images: x{growth:.2f} (target: at most x1.20)")
    for n in sorted({r["images"] for r in rows}):
        ratio = by[(n, "disk")]["train_images_per_second"] / max(by[(n, "memory")]["train_images_per_second"], 1e-9)
        same = by[(n, "disk")]["probabilities_hash"] == by[(n, "memory")]["probabilities_hash"]
        lines.append(f"{n} images: disk/memory training throughput {ratio:.2f} (target: at least 0.90); "
                     f"pseudolabels {'identical' if same else 'DIFFER'}")
    return lines


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every configuration in its own subprocess; print the table; return the rows."""
    args = parse_args(argv)
    if args.child_storage:
        child_main(argv if argv is not None else sys.argv[1:])
        return []
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench_scale_"))).resolve()
    started = time.perf_counter()
    write_images(work / "images", max(args.sizes), args.image_size)
    print(f"{max(args.sizes)} images in {work / 'images'} ({time.perf_counter() - started:.0f}s)", flush=True)
    base = list(argv if argv is not None else sys.argv[1:])
    rows = []
    for n in sorted(args.sizes):
        for storage in STORAGES:
            cmd = [sys.executable, str(Path(__file__).resolve()), *base, "--work", str(work),
                   "--child-storage", storage, "--child-images", str(n)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n".join(summary(rows)))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
