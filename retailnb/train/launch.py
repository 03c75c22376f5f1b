"""Run a training run here or, for several devices, under ``torchrun`` with one process per device.

A notebook kernel cannot host several DDP processes, so with ``devices > 1`` the run is written as JSON
and the stage's command line module is started with ``python -m torch.distributed.run``; Fabric inside
each process picks up the rank and world size (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from retailnb.atomic import atomic_write_text
from retailnb.train.pretrain import PretrainRun, pretrain


def torchrun_command(module: str, spec_path: Path, nproc: int) -> list[str]:
    """The ``torchrun`` command line that runs ``module``'s ``main`` on ``spec_path`` in ``nproc`` processes."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", module, str(spec_path),
    ]


def run_pretrain(run: PretrainRun) -> dict[str, Any]:
    """Pretrain (in this process, or under torchrun when ``compute.devices > 1``) and return the run's info.

    Returns:
        The content of ``out_dir/backbone.json``: backbone, sizes, throughput and loss history.

    Raises:
        subprocess.CalledProcessError: a distributed run failed (its output names the cause).
    """
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    devices = run.spec.compute.devices
    if devices > 1 and "LOCAL_RANK" not in os.environ:
        run_path = atomic_write_text(out_dir / "run.json", run.model_dump_json(indent=2))
        subprocess.run(torchrun_command("retailnb.train.pretrain", run_path, devices), check=True)
    else:
        pretrain(run)
    info: dict[str, Any] = json.loads((out_dir / "backbone.json").read_text())
    return info
