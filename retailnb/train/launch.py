"""Run a stage here or, for several devices or nodes, under ``torchrun`` with one process per device.

A notebook kernel cannot host several DDP processes, so with ``compute.devices > 1`` (or
``compute.nnodes > 1``) the stage's run is written as JSON and the stage's command line module is started
with ``python -m torch.distributed.run``; Fabric inside each process picks up the rank and world size
(NCCL on GPUs, gloo on CPUs). Every stage that runs a network goes through :func:`launch`: pretraining
(:mod:`retailnb.stages.pretrain`), the noisy student (:mod:`retailnb.stages.noisy`) and the
evaluation's feature extraction and finetuning baselines (:mod:`retailnb.stages.evaluate`). Rank 0 alone
writes the outputs; the calling process reads them back. The module knows no stage, so a stage's
code dependencies do not grow by another stage's.

Multi-node runs are configuration: ``compute.nnodes``, ``compute.node_rank`` and ``compute.rdzv_endpoint``
become torchrun's own arguments. Node 0 runs the stage; the other nodes join its rendezvous with torchrun on
the same run file (on a shared filesystem), their rank and world size coming from torchrun's environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

from retailnb.util.atomic import atomic_write_text
from retailnb.config.base import Spec
from retailnb.config.compute import ComputeSpec


RunT = TypeVar("RunT", bound=Spec)


def worker_run(run_type: type[RunT], argv: list[str] | None = None, description: str | None = None) -> RunT:
    """The run a torchrun worker was started for: ``python -m MODULE RUN.json`` (as :func:`launch` writes it),
    read and validated, with INFO logging set up; the command line of every stage's worker."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run", type=Path, help=f"JSON of a {run_type.__name__} ({run_type.__name__}.model_dump_json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return run_type.model_validate_json(args.run.read_text())


def under_torchrun() -> bool:
    """Whether this process is one of torchrun's workers (it then runs its share of the stage itself)."""
    return "LOCAL_RANK" in os.environ


def rendezvous_args(compute: ComputeSpec) -> list[str]:
    """torchrun's node arguments: ``--standalone`` on one node, else the c10d rendezvous of ``compute``.

    The rendezvous id names the run, so that nodes of another run meeting at the same endpoint are not
    mixed with it.
    """
    if compute.nnodes == 1 and not compute.rdzv_endpoint:
        return ["--standalone"]
    return [f"--nnodes={compute.nnodes}", f"--node-rank={compute.node_rank}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={compute.rdzv_endpoint}", "--rdzv-id=retailnb"]


def torchrun_command(module: str, spec_path: Path, compute: ComputeSpec) -> list[str]:
    """The ``torchrun`` command line that runs ``module``'s ``main`` on ``spec_path`` as ``compute`` places it."""
    return [
        sys.executable, "-m", "torch.distributed.run", *rendezvous_args(compute),
        f"--nproc-per-node={compute.devices}", "-m", module, str(spec_path),
    ]


def launch(module: str, run: Spec, run_path: Path, compute: ComputeSpec) -> None:
    """Write ``run`` to ``run_path`` and run ``python -m module run_path`` under torchrun; wait for it.

    Raises:
        subprocess.CalledProcessError: a distributed run failed (its output names the cause).
    """
    run_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_path, run.model_dump_json(indent=2))
    subprocess.run(torchrun_command(module, run_path, compute), check=True)
