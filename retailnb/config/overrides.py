"""``params.yaml`` overrides as ``dvc exp run -S`` applies them, and recipes: named files of overrides.

An override is ``key.path=value``: the key must already be in ``params.yaml`` (as DVC's ``-S`` refuses a
new key) and the value is read as YAML 1.2, as DVC reads ``params.yaml`` (``8`` an int, ``0.5`` a float,
``resnet18`` a string). The benchmarks' studies apply lists of them to a copy of the parameters
(:func:`apply_overrides`).

A recipe is a YAML file that names a measured configuration for those with more time or a GPU::

    description: ...
    study: benchmarks/results/budget_synthetic.json   # where its measurements are
    config: rounds_8                                  # its configuration there
    overrides: [noisy.rounds=8]

``python -m retailnb.config.overrides recipes/more_time.yaml`` checks it against ``params.yaml`` and
prints its ``-S`` options, so that one command runs it as a DVC experiment::

    dvc exp run -n more-time $(python -m retailnb.config.overrides recipes/more_time.yaml)
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from retailnb.config.params_file import ParamsError, PathLike, lookup, read_mapping, read_params

NEW_KEYS_UNDER: tuple[str, ...] = ("pretrain.variants",)
"""Mappings whose keys are names the user chooses (a pretraining variant): an override may add one."""


def _yaml_value(text: str) -> Any:
    """``text`` read as one YAML 1.2 value (what DVC's ``-S`` and its ``params.yaml`` reader give)."""
    return YAML(typ="safe", pure=True).load(StringIO(text))


def _parent(params: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    """The mapping that holds ``dotted``'s last part, and that part (KeyError: a parent is missing)."""
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"no key {dotted} in params.yaml")
        node = node[part]
    if not isinstance(node, dict):
        raise KeyError(f"no key {dotted} in params.yaml")
    return node, last


def set_key(params: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``params["a"]["b"] = value`` for ``dotted = "a.b"``; the path must exist (a typo fails).

    Raises:
        KeyError: ``params`` has no ``dotted``.
    """
    node, last = _parent(params, dotted)
    if last not in node:
        raise KeyError(f"no key {dotted} in params.yaml")
    node[last] = value


def apply_overrides(params: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``params`` with ``key.path=value`` overrides applied, values parsed as YAML (like ``dvc exp run -S``).

    ``params`` itself is left alone. Under :data:`NEW_KEYS_UNDER` new keys are allowed (a variant's weights).

    Raises:
        ValueError: an override without ``=``, whose path does not exist in ``params`` or whose value is
            not YAML.
    """
    params = copy.deepcopy(params)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"-S {item!r}: expected key.path=value")
        try:
            node, last = _parent(params, key)
        except KeyError:
            raise ValueError(f"-S {item!r}: params.yaml has no {key!r}") from None
        if last not in node and key.rpartition(".")[0] not in NEW_KEYS_UNDER:
            raise ValueError(f"-S {item!r}: params.yaml has no {key!r}")
        try:
            node[last] = _yaml_value(text)
        except YAMLError as err:
            raise ValueError(f"-S {item!r}: the value is not YAML ({str(err).splitlines()[0]})") from None
    return params


@dataclass(frozen=True)
class Recipe:
    """A named configuration of a study, as ``params.yaml`` overrides.

    Attributes:
        path: the recipe file.
        description: what it is and what it was measured to give.
        study: the results file (relative to the repository) that holds its measurements.
        config: its configuration's name in that study.
        overrides: ``key.path=value`` items, as ``dvc exp run -S`` takes them.
    """

    path: Path
    description: str
    study: str
    config: str
    overrides: tuple[str, ...]

    def dvc_options(self) -> list[str]:
        """The ``-S`` options of ``dvc exp run`` that apply the recipe."""
        return [word for item in self.overrides for word in ("-S", item)]


RECIPE_KEYS: tuple[str, ...] = ("description", "study", "config", "overrides")


def read_recipe(path: PathLike, params_file: PathLike = "params.yaml") -> Recipe:
    """The recipe at ``path``, its overrides checked against ``params_file``.

    Raises:
        ParamsError: the file is missing or not YAML, a key is missing or unknown, or an override names a
            key ``params_file`` does not have or gives a value of another type than the one there (an int
            where a float is stands: YAML writes ``1`` for ``1.0``).
    """
    p = Path(path)
    data = read_mapping(p, missing="no such recipe file", expected="a mapping with " + ", ".join(RECIPE_KEYS))
    missing, unknown = [k for k in RECIPE_KEYS if k not in data], sorted(set(data) - set(RECIPE_KEYS))
    if missing or unknown:
        raise ParamsError(p, "; ".join([f"{k}: missing" for k in missing] + [f"{k}: unknown key" for k in unknown]))
    overrides = data["overrides"]
    if not isinstance(overrides, list) or not overrides or not all(isinstance(o, str) for o in overrides):
        raise ParamsError(p, "overrides: expected a non-empty list of key.path=value strings")
    params = read_params(params_file)
    try:
        applied = apply_overrides(params, overrides)
    except ValueError as err:
        raise ParamsError(p, f"overrides: {err}") from None
    for item in overrides:
        key = item.partition("=")[0]
        try:
            old = lookup(params, key, file=params_file)
        except ParamsError:
            continue  # a new key (a pretraining variant): nothing to compare its type with
        new = lookup(applied, key, file=params_file)
        if not _same_type(old, new):
            raise ParamsError(p, f"overrides: {item!r}: {params_file} holds {_kind(old)} at {key}, "
                                 f"the recipe gives {_kind(new)}")
    return Recipe(path=p, description=str(data["description"]).strip(), study=str(data["study"]),
                  config=str(data["config"]), overrides=tuple(overrides))


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _same_type(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return type(old) is type(new)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return isinstance(new, int) or isinstance(old, float)  # an int where a float is stands; not the reverse
    return old is None or type(old) is type(new)


def main(argv: list[str] | None = None) -> None:
    """``python -m retailnb.config.overrides RECIPE [--params params.yaml]``: print the recipe's ``-S`` options."""
    parser = argparse.ArgumentParser(description="Print a recipe's `dvc exp run -S` options, checked against "
                                                 "params.yaml: dvc exp run $(python -m retailnb.config.overrides RECIPE)")
    parser.add_argument("recipe", type=Path, help="a recipe file, e.g. recipes/more_time.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the parameters it overrides")
    args = parser.parse_args(argv)
    try:
        recipe = read_recipe(args.recipe, args.params)
    except ParamsError as err:
        sys.exit(f"error: {err}")
    print(shlex.join(recipe.dvc_options()))


if __name__ == "__main__":
    main()
