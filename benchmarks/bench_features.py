"""How fast frozen features are extracted and a few-shot linear probe is fitted.

Feature extraction: images per second of :func:`retailnb.models.inference.extract_features` on a
uint8 (N, H, W, 3) batch, against the bare model's forward pass on the same batch already normalised
and on the device (the floor: no conversion, no transfer, no bookkeeping), and their ratio. The bare
pass is also timed on a channels_last input, the layout extract_features uses, to separate the gain of
the layout from the cost of the bookkeeping. Model: timm ``resnet18`` with ``num_classes=0``, random
weights. On CUDA the bare pass is timed in fp32 and under the same bf16 autocast that
``extract_features`` uses by default.

Probe: seconds to fit :func:`retailnb.evaluation.probe.fit_logistic_probe` (C chosen by 3-fold
cross-validation among 4 values) on a 25-class, 10-shot, 512-d problem.

Usage:
    python benchmarks/bench_features.py [--size 64] [--batch 256] [--repeats 3] [--device cpu|cuda]
    python benchmarks/bench_features.py --smoke    # 8 images of 32 px, once, on CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import timm
import torch

from common import add_smoke, apply_smoke, best_seconds
from retailnb.evaluation.probe import fit_logistic_probe, probe_accuracy
from retailnb.models.inference import extract_features, imagenet_normalize

SMOKE = {"size": 32, "batch": 8, "repeats": 1, "device": "cpu"}
"""``--smoke``: one small batch, timed once, on CPU."""


def bench_extraction(size: int, batch: int, repeats: int, device: torch.device) -> None:
    """Print images/s of extract_features and of the bare forward pass, and their ratio."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).to(device).eval()
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    x = imagenet_normalize(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device))

    x_cl = x.contiguous(memory_format=torch.channels_last)

    def bare(amp: bool = False, inputs: torch.Tensor = x) -> object:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model(inputs)

    extract = lambda: extract_features(model, images, batch_size=batch)  # noqa: E731
    rows = {"extract_features": best_seconds(extract, repeats, device)}
    rows["bare forward fp32"] = best_seconds(bare, repeats, device)
    rows["bare forward fp32 chan_last"] = best_seconds(lambda: bare(inputs=x_cl), repeats, device)
    if device.type == "cuda":
        rows["bare forward bf16 autocast"] = best_seconds(lambda: bare(True), repeats, device)
    print(f"feature extraction: resnet18, {batch} images of {size}x{size}, {device}, best of {repeats}")
    if device.type == "cpu":
        print(f"  torch threads: {torch.get_num_threads()}")
    for name, seconds in rows.items():
        print(f"  {name:28s} {batch / seconds:9.1f} images/s  ({seconds * 1000:.1f} ms/batch)")
    for name, seconds in rows.items():
        if name != "extract_features":
            print(f"  ratio extract_features / {name}: {seconds / rows['extract_features']:.2f}")


def bench_probe(repeats: int, threads: list[int | None]) -> None:
    """Print the fit time of a 25-class, 10-shot, 512-d logistic probe (and its test accuracy)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(25, 512))
    y, yt = np.repeat(np.arange(25), 10), np.repeat(np.arange(25), 20)
    x = centres[y] + 3 * rng.normal(size=(len(y), 512))
    xt = centres[yt] + 3 * rng.normal(size=(len(yt), 512))
    print("logistic probe: 25 classes x 10 shots, 512-d, C from (0.01, 0.1, 1, 10) by 3-fold CV")
    for n in threads:
        seconds = min(_timed_fit(x, y, n) for _ in range(repeats))
        print(f"  threads={n}: fit {seconds:.2f} s (best of {repeats}; 13 fits: 4 C x 3 folds + refit)")
    result = probe_accuracy(x, y, xt, yt)
    print(f"  test accuracy {result['accuracy']:.3f}, chosen C {result['c']}")


def _timed_fit(x: np.ndarray, y: np.ndarray, threads: int | None) -> float:
    start = time.perf_counter()
    fit_logistic_probe(x, y, threads=threads)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=256, help="images per batch (one batch is timed)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--probe-threads", default="1", help="comma-separated BLAS thread counts for the probe fit; 'all' = no limit"
    )
    add_smoke(parser, "8 images of 32 px, timed once, on CPU")
    args = apply_smoke(parser.parse_args(), SMOKE)
    threads = [None if t == "all" else int(t) for t in args.probe_threads.split(",")]
    bench_extraction(args.size, args.batch, args.repeats, torch.device(args.device))
    bench_probe(args.repeats, threads)


if __name__ == "__main__":
    main()
