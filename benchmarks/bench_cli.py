"""How fast the ``retailnb`` command line answers, and how much memory it takes: each command in a fresh process.

Every command runs as a user runs it, the ``retailnb`` script beside this Python (else ``python -m retailnb``),
in a new process, and is timed from start to exit (best of ``--repeats``), with the process's peak resident
memory (``ru_maxrss``, as ``/usr/bin/time`` reports it):

(a) ``--help``; (b) ``--version``; (c) ``info`` on a missing bundle (a path error); (d) ``info`` on a real
bundle; (e) ``predict`` on N images (``--format csv``, on the CPU).

(a) to (c) answer before torch is imported (target: well under 1 s) and (d) reads the bundle's metadata
without building its backbone (target: under 2 s); (e) loads torch, timm, scikit-learn and the bundle
(several seconds), then predicts. Without ``--bundle`` the benchmark builds one in a temporary folder with
``retailnb fit`` (``--architecture`` at ``--image-size`` with random weights, the pipeline's backbone by
default: timing does not depend on the weights), on N generated JPEG images of ``--products`` products, which
are also what (e) predicts unless ``--images`` names others.

Usage:
    python benchmarks/bench_cli.py [--bundle models/bundle/catalogue.bundle] [--images FOLDER] [--n-images 281]
        [--products 10] [--architecture resnet10t] [--image-size 64] [--repeats 3]
    python benchmarks/bench_cli.py --smoke   # test_resnet at 32 px, 12 images, once
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from common import add_smoke, apply_smoke

SMOKE = {"architecture": "test_resnet", "image_size": 32, "n_images": 12, "products": 3, "repeats": 1}
"""``--smoke``: a tiny bundle and a dozen images, each command timed once."""


def command() -> list[str]:
    """How a user starts the command line here: the ``retailnb`` script of this Python's environment, else ``-m``."""
    script = Path(sys.executable).parent / "retailnb"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "retailnb"]


MEASURE = """\
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""
"""Runs ``argv[1:]`` and prints its wall seconds, peak memory and exit status: a small Python process starts the
command so that its peak memory is its own (a process forked from this one, which has imported torch, would
count this one's memory too, as ``/usr/bin/time`` would not)."""


def run(args: Sequence[str]) -> tuple[float, float, int, str]:
    """``retailnb ARGS`` in a fresh process: its wall seconds, peak memory in MiB, exit status and stderr."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *command(), *args], capture_output=True, text=True,
                          check=True)
    seconds, rss, status = done.stdout.split()
    rss_mib = int(rss) / (2**20 if sys.platform == "darwin" else 2**10)  # ru_maxrss: bytes on macOS, KiB elsewhere
    return float(seconds), rss_mib, int(status), done.stderr


def write_images(folder: Path, n_images: int, products: int, size: int, seed: int = 0) -> Path:
    """``n_images`` JPEG images in ``folder/<product>/``: one colour per product, with noise (about 2x the model's
    input size, so that prediction decodes and resizes as it does on photos)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (products, 3))
    for i in range(n_images):
        product = i % products
        pixels = np.clip(colours[product] + rng.normal(0, 25, (2 * size, 2 * size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"product_{product:02d}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
    return folder


def tiny_bundle(work: Path, *, architecture: str, image_size: int, n_images: int, products: int) -> tuple[Path, Path]:
    """A bundle fitted by ``retailnb fit`` on generated images (random backbone weights), and those images."""
    images = write_images(work / "images", n_images, products, image_size)
    bundle = work / "tiny.bundle"
    seconds, _, status, err = run(["fit", str(images), "--architecture", architecture, "--backbone-weights", "none",
                                   "--image-size", str(image_size), "--out", str(bundle)])
    if status != 0:
        raise SystemExit(f"retailnb fit failed (exit {status}):\n{err}")
    print(f"built {bundle}: {architecture} at {image_size} px, {products} products, {n_images} images "
          f"({seconds:.1f} s)")
    return bundle, images


def best(args: Sequence[str], repeats: int, expect: int = 0) -> tuple[float, float]:
    """The shortest wall time of ``repeats`` runs and the peak memory of that run; an unexpected exit stops here."""
    runs = []
    for _ in range(repeats):
        seconds, rss, status, err = run(args)
        if status != expect:
            raise SystemExit(f"retailnb {' '.join(args)}: exit {status}, expected {expect}:\n{err}")
        runs.append((seconds, rss))
    return min(runs)


def main(argv: Sequence[str] | None = None) -> list[dict[str, float | str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to time info and predict on (default: a tiny one, built)")
    parser.add_argument("--images", type=Path, help="images or folder to predict (default: the generated images)")
    parser.add_argument("--n-images", type=int, default=281, help="images to generate (default 281)")
    parser.add_argument("--products", type=int, default=10, help="products of the generated images (default 10)")
    parser.add_argument("--architecture", default="resnet10t", help="backbone of the built bundle (default resnet10t)")
    parser.add_argument("--image-size", type=int, default=64, help="its input size in pixels (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command; the best is kept (default 3)")
    add_smoke(parser, "a tiny bundle, a dozen images, each command once")
    args = apply_smoke(parser.parse_args(argv), SMOKE)
    with tempfile.TemporaryDirectory(prefix="retailnb-bench-cli-") as tmp:
        work = Path(tmp)
        bundle, images = args.bundle, args.images
        if bundle is None:
            bundle, generated = tiny_bundle(work, architecture=args.architecture, image_size=args.image_size,
                                            n_images=args.n_images, products=args.products)
            images = images or generated
        elif images is None:
            images = write_images(work / "images", args.n_images, args.products, args.image_size)
        n = sum(1 for p in Path(images).rglob("*") if p.is_file()) if Path(images).is_dir() else 1
        cases = [
            ("--help", ["--help"], 0),
            ("--version", ["--version"], 0),
            ("info, missing bundle", ["info", str(work / "missing.bundle")], 2),
            ("info", ["info", str(bundle)], 0),
            (f"predict, {n} images", ["predict", str(images), "--bundle", str(bundle), "--format", "csv",
                                      "--device", "cpu", "--out", str(work / "predictions.csv")], 0),
        ]
        rows: list[dict[str, float | str]] = []
        size = Path(bundle).stat().st_size / 2**20
        print(f"{' '.join(command())}: best of {args.repeats}; bundle {bundle} ({size:.1f} MiB)")
        print(f"{'command':<24} {'wall s':>8} {'max RSS MiB':>12}")
        for name, case, expect in cases:
            seconds, rss = best(case, args.repeats, expect)
            rows.append({"command": name, "seconds": round(seconds, 3), "max_rss_mib": round(rss, 1)})
            print(f"{name:<24} {seconds:>8.2f} {rss:>12.1f}")
    return rows


if __name__ == "__main__":
    main()
