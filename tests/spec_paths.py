"""params.yaml and stage specs flattened to dotted key paths, to compare them leaf by leaf."""

from __future__ import annotations

from typing import Any

from retailnb.config.base import Spec
from retailnb.config.stages import STAGES, spec_from_params
from retailnb.stages.check import STAGE_SPECS

SPECS: dict[str, type[Spec]] = {spec.stage: spec for spec in STAGE_SPECS}  # type: ignore[attr-defined]
"""Every stage's spec model by its stage name (the name of its ``dvc.yaml`` stage)."""


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key path -> value of every leaf of a nested mapping (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def spec_leaves(stage: str, key: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """params.yaml key path -> value of every leaf of a stage's spec, as the stage receives it."""
    spec = spec_from_params(SPECS[stage], params, key)
    out: dict[str, Any] = {}
    for field, path in STAGES[stage].key_paths(key).items():
        value = getattr(spec, field)
        if isinstance(value, dict):  # a mapping of specs, such as pretrain.variants
            value = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in value.items()}
        out.update(leaves(value.model_dump() if hasattr(value, "model_dump") else value, path))
    return out
