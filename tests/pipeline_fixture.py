"""The tiny pipeline, run once per test session through the real stage commands (``dvc repro``).

A throwaway DVC repository gets the project's ``dvc.yaml``, notebooks and package sources, and a
``params.yaml`` that is the project's own with tiny sizes set (:data:`TINY`) and two of the pretraining
variants (two are enough to show that a change to one reruns only that one). ``dvc repro`` then runs every
stage exactly as a user's run does: papermill passes each notebook only the params file, its foreach key
and paths.

:func:`run_pipeline` also runs the soft-pseudolabel experiment (``dvc exp run -S noisy.pseudo.soft=true``)
in a copy, beside the stages after ``noisy``, so that the session's longest chain stays short.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from ruamel.yaml import YAML
from shared_fixtures import REPO, TINY_DATA, repo_params, with_overrides

TINY: dict[str, Any] = {
    "backbone.architecture": "test_resnet",
    "backbone.image_size": 32,
    "compute.num_workers": 0,
    **{f"data.synthetic.{k}": v for k, v in TINY_DATA.items()},
    "pretrain.model.proj_hidden_dim": 32,
    "pretrain.model.proj_dim": 16,
    "pretrain.sampler.batch_size": 8,
    "pretrain.sampler.images_per_class": 2,
    "pretrain.engine.epochs": 2,
    "pretrain.engine.warmup_epochs": 0.5,
    "noisy.rounds": 2,
    "noisy.batch_size": 8,
    "noisy.pseudo.threshold": 0.0,
    "noisy.engine.epochs": 1,
    "noisy.engine.warmup_epochs": 0.5,
    "evaluate.probe.shots": [1, 2, "all"],
    "evaluate.probe.draws": 2,
    "evaluate.finetune.batch_size": 8,
    "evaluate.seeds": [0, 1],
    "evaluate.finetune.lrs": [0.0003, 0.003],
    "evaluate.finetune.patience": 1,
    "evaluate.finetune.random_init": True,  # the report's rows and comparisons of both baselines
    "evaluate.finetune.engine.max_epochs": 2,
    "evaluate.finetune.engine.warmup_epochs": 0.5,
    "new_products.n_new": 2,
    "new_products.shots": [1, 2],
}
"""Overrides of the project's params.yaml for the tiny pipeline."""

TINY_VARIANTS = ("simclr_supcon", "simclr")
"""The pretraining variants of the tiny pipeline (the main one first)."""

TINY_SEEDS = (0, 1)
"""The training seeds of the tiny pipeline (``evaluate.seeds``): two, the fewest that give an interval."""

SOFT_EXPERIMENT = ("-S", "noisy.pseudo.soft=true", "-S", "noisy.pseudo.balance=false")
"""The experiment run on a copy of the tiny pipeline: soft targets, no class balancing."""

SHOP = (("tea", 60), ("jam", 130), ("oil", 200))
"""The image-folder target: three products told apart by brightness; 3 training and 2 test images each."""


def write_params(root: Path, params: dict[str, Any]) -> Path:
    """Write ``params`` as ``root/params.yaml`` (YAML 1.2, as DVC reads it)."""
    path = root / "params.yaml"
    with path.open("w") as fh:
        YAML().dump(params, fh)
    return path


def make_shop(root: Path) -> Path:
    """A tiny image-folder dataset with train and test splits."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for name, level in SHOP:
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(level, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def dvc(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` in ``root``; fail with its output when it fails."""
    run = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, f"dvc {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run


def copy_repo(root: Path, dest: Path) -> Path:
    """A copy of a repository (git, DVC cache and outputs), to change without side effects."""
    shutil.copytree(root, dest, symlinks=True)
    return dest


@dataclass(frozen=True)
class TinyPipeline:
    """The session's tiny pipeline.

    Attributes:
        root: the repository where ``dvc repro`` ran every stage with the project's params (tiny sizes).
        soft: a copy of it after the ``noisy`` stage, where :data:`SOFT_EXPERIMENT` ran the noisy stage again.
        soft_run: that ``dvc exp run``'s exit code and output.
    """

    root: Path
    soft: Path
    soft_run: subprocess.CompletedProcess[str]


def run_pipeline(base: Path) -> TinyPipeline:
    """Run the tiny pipeline under ``base``, and the soft experiment in a copy beside its last stages."""
    root = tiny_repo(base / "repo")
    dvc(root, "repro", "noisy")  # data, pretraining, the noisy student
    soft = copy_repo(root, base / "soft")
    experiment = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "noisy", "-s", *SOFT_EXPERIMENT],
                                  cwd=soft, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        dvc(root, "repro")  # evaluation, new products, report
    finally:
        out, err = experiment.communicate(timeout=900)
    return TinyPipeline(root, soft, subprocess.CompletedProcess(experiment.args, experiment.returncode, out, err))


def tiny_repo(root: Path) -> Path:
    """A git + DVC repository with the project's pipeline and the tiny params, not yet run."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for folder in ("notebooks", "retailnb"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    params = with_overrides(repo_params(), TINY)
    # the main variant and SimCLR alone (commented out in params.yaml for the default's time budget)
    params["pretrain"]["variants"] = {name: {"simclr_weight": 1.0, "supcon_weight": float(name == "simclr_supcon"),
                                             "simsiam_weight": 0.0} for name in TINY_VARIANTS}
    write_params(root, params)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"]):
        subprocess.run(cmd, cwd=root, check=True)
    dvc(root, "init", "-q")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "tiny pipeline"], cwd=root, check=True)
    return root
