"""Downstream targets: which catalogue the few-shot probes are trained and tested on.

The evaluation runs once per entry of ``evaluate.targets`` in ``params.yaml``. A target is either the
data stage's own target catalogue (``prepared``: the ``probe_train``/``probe_test`` rows of
``data/prepared/manifest.csv``) or any dataset an adapter reads (``grocery_store``, ``imagefolder``),
whose train split becomes ``probe_train`` and its test split ``probe_test``. The backbone's pretraining
data and a target may differ: that is how one asks whether features transfer to another product set.
"""

from __future__ import annotations

import os
from pathlib import Path

from retailnb.config.evaluate import TargetSpec
from retailnb.data.prepare import prepare_dataset

PREPARED = "prepared"
"""The source name of the data stage's own target catalogue."""


PathLike = str | os.PathLike[str]


def target_manifest(name: str, target: TargetSpec, prepared_manifest: PathLike, work_dir: PathLike, *,
                    on_error: str, min_size: int) -> Path:
    """The manifest whose ``probe_train``/``probe_test`` rows are ``target``'s images.

    Args:
        name: the target's key in ``evaluate.targets`` (named in errors).
        target: the target to evaluate.
        prepared_manifest: the data stage's manifest, used as is for a ``prepared`` target.
        work_dir: where a real dataset's manifest is written (replaced whole); its images stay where they are.
        on_error: what a bad image of a real dataset does (see :func:`retailnb.data.prepare.prepare_dataset`);
            the evaluate stage passes ``data.on_error``.
        min_size: smallest accepted shorter side of a real image, in pixels (``data.min_size``).

    Raises:
        FileNotFoundError: the prepared manifest or the dataset folder is missing; the message names it.
    """
    if target.source == PREPARED:
        path = Path(prepared_manifest)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest for target {name!r}; run the data stage first")
        return path
    if not Path(target.root).exists():
        raise FileNotFoundError(f"evaluate.targets.{name}.root: {target.root!r} does not exist")
    return prepare_dataset(target.source, work_dir, root=target.root, labels=target.labels, kinds=target.kinds,
                           on_error=on_error, min_size=min_size)
