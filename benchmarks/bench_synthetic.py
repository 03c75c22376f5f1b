"""How fast the synthetic dataset is generated, in images per second.

Times :func:`retailnb.data.synthetic.generate` end to end (rendering, JPEG encoding, file writing,
manifest) on the default config (``data.synthetic`` of ``params.yaml``) at each requested image size, plus single-process rendering alone.
Wall-clock rates depend on what else the machine runs, so the CPU time of this process and its
workers is reported too: ``per core`` is images per CPU-second, the rate of one unshared core.

Usage:
    python benchmarks/bench_synthetic.py [--sizes 96 64] [--workers N] [--repeats 1] [--params params.yaml]
    python benchmarks/bench_synthetic.py --smoke   # the smoke runs' tiny config at 32 px: checks the script runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import PARAMS, SMOKE_SYNTHETIC, add_smoke, cpu_seconds
from retailnb.config.data import DataStageSpec, SyntheticSpec
from retailnb.config.params_file import read_params
from retailnb.config.stages import spec_from_params
from retailnb.data.synthetic import (
    design_catalogue,
    generate,
    pick_neighbours,
    render_catalogue,
    render_shelf,
)


def time_generate(config: SyntheticSpec, workers: int | None) -> tuple[int, float, float]:
    """Generate ``config`` into a temporary folder; returns the image count, wall and CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu, start = cpu_seconds(), time.perf_counter()
        manifest = generate(config, Path(tmp) / "synthetic", workers=workers)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        n_images = sum(1 for _ in manifest.open()) - 1
    return n_images, seconds, cpu


def time_render(config: SyntheticSpec, n: int = 300) -> tuple[float, float]:
    """Single-process images/s of :func:`render_catalogue` and :func:`render_shelf` (no file I/O)."""
    designs = design_catalogue(config)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(n):
        render_catalogue(designs[i % len(designs)], rng, config.image_size)
    catalogue = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(n):
        sku = designs[i % len(designs)]
        render_shelf(sku, pick_neighbours(sku, designs, rng), rng, config.image_size, config.difficulty)
    shelf = n / (time.perf_counter() - start)
    return catalogue, shelf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="image sizes (default: 96 and the default config's image_size)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--params", type=Path, default=PARAMS, help="params file of the default config")
    add_smoke(parser, "the smoke runs' tiny config (common.SMOKE_SYNTHETIC) at 32 px")
    args = parser.parse_args()
    default = spec_from_params(DataStageSpec, read_params(args.params), file=args.params).data.synthetic
    if args.smoke:
        default = SyntheticSpec.model_validate({**default.model_dump(), **SMOKE_SYNTHETIC})
    default_size = default.image_size
    for size in args.sizes or sorted({96, default_size}, reverse=True):
        config = SyntheticSpec.model_validate({**default.model_dump(), "image_size": size})
        catalogue, shelf = time_render(config)
        print(f"{size:4d} px  render only, 1 process: catalogue {catalogue:6.0f} img/s, shelf {shelf:6.0f} img/s")
        for _ in range(args.repeats):
            n_images, seconds, cpu = time_generate(config, args.workers)
            tag = "default" if size == default_size else "       "
            print(
                f"{size:4d} px  generate {tag} config (workers={args.workers or 'all'}): {n_images} images in "
                f"{seconds:5.1f} s = {n_images / seconds:6.0f} img/s wall; {cpu:5.1f} CPU-s = "
                f"{n_images / cpu:6.0f} img/s per core"
            )


if __name__ == "__main__":
    main()
