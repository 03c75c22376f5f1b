"""Which ``params.yaml`` keys each stage reads, and the typed spec built from them.

Each entry of :data:`STAGES` maps the fields of a stage's spec model to key paths of ``params.yaml``;
``{key}`` stands for the ``foreach`` key of a stage that loops (a pretraining variant, an evaluation
target). The ``params:`` list of each stage in ``dvc.yaml`` is exactly these paths (a test checks it), so
DVC reruns a stage when, and only when, a value it reads changes.

:func:`load_stage` reads only those keys, checks that the sections they live in hold no key that no stage
reads (a typo such as ``pretrain.epoch`` would otherwise be ignored), and validates the values into the
stage's frozen model. Every problem is reported at once, each line naming its key path and bad value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from retailnb.config.base import Spec
from retailnb.config.params_file import ParamsError, PathLike, lookup, read_params


@dataclass(frozen=True)
class StageParams:
    """Where each field of a stage's spec comes from.

    The spec model itself is not named here: each stage's notebook imports its own spec class (whose
    ``stage`` names its entry of :data:`STAGES`), so this registry imports no stage's parameter module
    and a stage's code (its ``dvc.yaml`` deps) holds only its own spec's module, not the other stages'.

    Attributes:
        reads: spec field -> dotted ``params.yaml`` key path (``{key}``: the stage's foreach key).
        foreach: the key path whose entries the stage loops over (``""``: no loop).
    """

    reads: Mapping[str, str]
    foreach: str = ""

    def key_paths(self, key: str | None = None) -> dict[str, str]:
        """The field -> key path map with the foreach key filled in."""
        if self.foreach and not key:
            raise ValueError(f"this stage runs once per entry of {self.foreach}: name the entry")
        return {field: path.format(key=key) for field, path in self.reads.items()}


STAGES: dict[str, StageParams] = {
    "data": StageParams({"data": "data"}),
    "pretrain": StageParams(
        {
            "backbone": "backbone",
            "compute": "compute",
            "model": "pretrain.model",
            "sampler": "pretrain.sampler",
            "engine": "pretrain.engine",
            "views": "pretrain.views",
            "variant": "pretrain.variants.{key}",
        },
        foreach="pretrain.variants",
    ),
    "noisy": StageParams({"backbone": "backbone", "compute": "compute", "noisy": "noisy"}),
    "evaluate": StageParams(
        {
            "backbone": "backbone",
            "compute": "compute",
            "target": "evaluate.targets.{key}",
            "probe": "evaluate.probe",
            "finetune": "evaluate.finetune",
            "rejection": "evaluate.rejection",
            "extra_weights": "evaluate.extra_weights",
            "main_variant": "noisy.teacher_variant",
            "variants": "pretrain.variants",
            "on_overlap": "evaluate.on_overlap",
            "overlap_distance": "evaluate.overlap_distance",
            "on_error": "data.on_error",
            "min_size": "data.min_size",
        },
        foreach="evaluate.targets",
    ),
    "report": StageParams({"report": "report", "seeds": "evaluate.seeds", "variants": "pretrain.variants"}),
    "new_products": StageParams(
        {"backbone": "backbone", "new_products": "new_products", "main_variant": "noisy.teacher_variant",
         "recall": "evaluate.rejection.recall"},
    ),
}
"""Every stage of ``dvc.yaml`` and the parameters it reads."""


def known_keys() -> dict[str, set[str]]:
    """For each mapping that holds read keys (a section, ``""`` for the top), the keys read in it.

    ``pretrain.variants.{key}`` counts as reading ``pretrain.variants`` (any entry name is allowed).
    """
    known: dict[str, set[str]] = {}
    for stage in STAGES.values():
        for path in stage.reads.values():
            parts = path.split(".")
            if parts[-1] == "{key}":
                parts = parts[:-1]
            for i, part in enumerate(parts):
                known.setdefault(".".join(parts[:i]), set()).add(part)
    return known


def _unknown_keys(params: Mapping[str, Any], paths: Mapping[str, str], file: PathLike) -> list[str]:
    """Problems for keys, in the sections a stage reads from, that no stage reads."""
    known = known_keys()
    whole = {path for stage in STAGES.values() for path in stage.reads.values() if "{key}" not in path}
    problems = []
    # the top level ("") and every mapping along the stage's key paths
    sections = {".".join(p.split(".")[:i]) for p in paths.values() for i in range(len(p.split(".")))}
    for section in sorted(sections):
        if any(section == w or section.startswith(w + ".") for w in whole):
            continue  # read whole by some stage: its model rejects unknown keys itself
        node = lookup(params, section, file=file) if section else params
        if section in known and isinstance(node, Mapping):
            for extra in sorted(set(map(str, node)) - known[section]):
                key = f"{section}.{extra}" if section else extra
                problems.append(f"{key}: unknown key (known: {', '.join(sorted(known[section]))})")
    return problems


def _describe(error: Mapping[str, Any], paths: Mapping[str, str]) -> str:
    """One pydantic error as ``"<key path>: <why>, got <value>"``."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join([paths[loc[0]], *loc[1:]]) if loc else "?"
    why = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        why = "unknown key"
    elif error["type"] == "missing":
        return f"{key}: missing"
    return f"{key}: {why}, got {error.get('input')!r}"


SpecT = TypeVar("SpecT", bound=Spec)


def load_stage(spec: type[SpecT], params_path: PathLike = "params.yaml", key: str | None = None) -> SpecT:
    """The validated spec of a stage (and its foreach ``key``) from the params file.

    Args:
        spec: the stage's spec model (e.g. :class:`retailnb.config.pretrain.PretrainStageSpec`); its
            ``stage`` names its entry of :data:`STAGES`.
        params_path: the params file.
        key: the pretraining variant or evaluation target, for stages that loop.

    Raises:
        ParamsError: a key is missing or unknown, or a value has the wrong type or is out of range; the
            message lists every problem, each with its key path.
    """
    return spec_from_params(spec, read_params(params_path), key, file=params_path)


def spec_from_params(spec: type[SpecT], params: Mapping[str, Any], key: str | None = None, *,
                     file: PathLike = "params.yaml") -> SpecT:
    """The validated spec of a stage from params already read (see :func:`load_stage`).

    ``file`` only names the source in error messages.
    """
    stage = getattr(spec, "stage", None)
    if stage not in STAGES:
        raise ValueError(f"{spec.__name__} is not a stage's spec; stages are {', '.join(STAGES)}")
    entry = STAGES[stage]
    if entry.foreach:
        entries = lookup(params, entry.foreach, file=file)
        if not key or not isinstance(entries, Mapping) or key not in entries:
            names = ", ".join(map(str, entries)) if isinstance(entries, Mapping) else "none"
            raise ParamsError(file, f"{entry.foreach}: no entry {key!r} (entries: {names})")
    paths = entry.key_paths(key)
    problems = _unknown_keys(params, paths, file)
    values = {field: lookup(params, path, file=file) for field, path in paths.items()}
    result: SpecT | None = None
    try:
        result = spec.model_validate(values)
    except ValidationError as error:
        problems += [_describe(e, paths) for e in error.errors()]
    if problems or result is None:
        raise ParamsError(file, problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems))
    return result
