"""Time the whole default pipeline from a fresh clone, then a second ``dvc repro`` with nothing changed, and
say whether the run reproduced the committed baseline byte for byte.

Usage: python benchmarks/bench_pipeline.py [--keep] [--smoke]
Clones the current commit into a temporary folder (outputs of this checkout are not reused), runs
``dvc repro`` there with this environment's Python, and prints both wall times, the first run's seconds per
stage, and the tracked files the run changed (``git status --porcelain``): none when the commit's dvc.lock, metrics and dvclive curves are
exactly what the pipeline computes (no timing is versioned). ``--smoke`` first sets
the clone's params.yaml to the smoke runs' tiny data and model, one epoch per training stage
(``common.ONE_EPOCH``, ``common.SMOKE_PIPELINE``), and commits it there.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import REPO, add_smoke, run_stamped, smoke_params, stage_seconds, write_params
from retailnb.config.params_file import read_params


def timed(cmd: list[str], cwd: Path) -> float:
    """Run ``cmd`` in ``cwd`` (failing loudly) and return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the clone and print its path")
    add_smoke(parser, "tiny data and model, one epoch per training stage")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retailnb-bench-"))
    clone = work / "retailnb"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    if args.smoke:
        write_params(clone / "params.yaml", smoke_params(read_params(clone / "params.yaml")))
        subprocess.run(["git", "-c", "user.email=smoke@retailnb", "-c", "user.name=smoke", "commit", "-qam",
                        "smoke parameters"], cwd=clone, check=True)
    start = time.perf_counter()
    status, log = run_stamped(["dvc", "repro"], clone, timeout=24 * 3600)
    first = time.perf_counter() - start
    if status:
        raise SystemExit(f"dvc repro failed (exit {status}) in {clone}")
    second = timed(["dvc", "repro"], clone)
    print("\nstage                              seconds")
    for stage, seconds in stage_seconds(log):
        print(f"{stage:<34} {seconds:8.0f}")
    print(f"dvc repro from a fresh clone: {first:.0f} s")
    print(f"dvc repro with nothing changed: {second:.1f} s")
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    if args.smoke:
        print(f"tracked files the smoke run changed (its results are not the baseline's): {len(changed)}")
    elif changed:
        print(f"the run changed {len(changed)} tracked files: it does not reproduce the committed baseline")
        print("\n".join(changed))
    else:
        print("git status --porcelain is empty: the committed baseline reproduced byte for byte")
    if args.keep:
        print(f"clone kept at {clone}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
