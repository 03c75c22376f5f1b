"""The params check: the first stage, every stage's parameters validated before any stage runs.

``dvc repro`` removes a stage's outputs just before it runs the stage, so a bad value that only the
stage's notebook caught would cost the previous outputs (``data/prepared`` gone, ``metrics/data.json``
not in the cache). Every stage depends on this stage's output: a bad value anywhere in ``params.yaml``
stops ``dvc repro`` here, naming the key, before any output is touched. Its output is the same line
whatever the values, so that a valid change reruns only the stages that read it.

Usage: ``python -m retailnb.stages.check params.yaml metrics/params_check.txt``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retailnb.config.data import DataStageSpec
from retailnb.config.evaluate import EvaluateStageSpec
from retailnb.config.new_products import NewProductsStageSpec
from retailnb.config.noisy import NoisyStageSpec
from retailnb.config.params_file import ParamsError, lookup, read_params
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.report import ReportStageSpec
from retailnb.config.stages import STAGES, spec_from_params
from retailnb.util.atomic import atomic_write_text

STAGE_SPECS = (DataStageSpec, PretrainStageSpec, NoisyStageSpec, EvaluateStageSpec, ReportStageSpec,
               NewProductsStageSpec)
"""The spec of every stage that reads ``params.yaml``, in pipeline order."""

CHECKED = "every stage's parameters are valid\n"
"""What the check writes: the same line whatever the values."""


def problems(params: Mapping[str, Any], file: str | Path = "params.yaml") -> list[str]:
    """Every problem of ``params``, each ``"<key path>: <why>"``, for every stage and foreach key; [] when valid."""
    found: list[str] = []
    for spec in STAGE_SPECS:
        entry = STAGES[spec.stage]
        try:
            keys = list(lookup(params, entry.foreach, file=file)) if entry.foreach else [None]
            for key in keys:
                spec_from_params(spec, params, key, file=file)
        except ParamsError as error:
            found += [p.strip() for p in error.problem.splitlines() if p.strip() and p.strip() not in found]
    return found


def check(params_path: str | Path, out: str | Path) -> Path:
    """Validate the params file and write :data:`CHECKED` to ``out`` (atomically).

    Raises:
        ParamsError: a key is missing or unknown, or a value is bad; one line per problem, each with its key.
    """
    found = problems(read_params(params_path), params_path)
    if found:
        raise ParamsError(params_path, found[0] if len(found) == 1 else "\n  " + "\n  ".join(found))
    return atomic_write_text(Path(out), CHECKED)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; 2 with the problems on standard error when a value is bad."""
    parser = argparse.ArgumentParser(prog="python -m retailnb.stages.check", description=__doc__.splitlines()[0])
    parser.add_argument("params", help="the params file, e.g. params.yaml")
    parser.add_argument("out", help="the file written when every value is valid")
    args = parser.parse_args(argv)
    try:
        check(args.params, args.out)
    except ParamsError as error:
        print(f"error: {error}\n(no stage ran: every output is as it was)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
