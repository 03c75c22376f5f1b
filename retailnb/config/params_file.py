"""Reading ``params.yaml`` as DVC reads it, and the one error a bad parameter raises.

DVC parses ``params.yaml`` with ruamel.yaml as YAML 1.2, so this module does too. PyYAML implements
YAML 1.1, under which the key ``on`` (``pretrain.views.on``) becomes the boolean ``True`` and the values
``yes``, ``no``, ``on`` and ``off`` become bools: a stage would then see other values than ``dvc params``
and ``dvc exp run -S`` show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from retailnb.util.errors import FileProblem

PathLike = str | os.PathLike[str]


class ParamsError(FileProblem):
    """A parameter is missing, unknown or has a bad value; the message is ``"<file>: <key path>: <why>"``.

    Attributes:
        path: the params file.
        problem: ``"<key path>: <why>"``, one line per bad key.
    """


def read_mapping(path: PathLike, *, missing: str, expected: str) -> dict[str, Any]:
    """A YAML file (1.2, as DVC reads it) whose top is a mapping, as plain Python values.

    Args:
        missing: what the error says when there is no file at ``path``.
        expected: what the top should be, for the error when it is not a mapping.

    Raises:
        ParamsError: the file is missing, is not valid YAML (its first line) or is not a mapping at the top.
    """
    p = Path(path)
    if not p.is_file():
        raise ParamsError(p, missing)
    try:
        data = YAML(typ="safe", pure=True).load(p.read_text())
    except YAMLError as error:
        raise ParamsError(p, f"not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ParamsError(p, f"expected {expected}, got {type(data).__name__}")
    return data


def read_params(path: PathLike) -> dict[str, Any]:
    """The whole params file as plain Python values (YAML 1.2, as DVC reads it).

    Raises:
        ParamsError: the file is missing, is not valid YAML or is not a mapping at the top.
    """
    return read_mapping(path, missing="no params file here (run from the repository root, or pass its path)",
                        expected="a mapping of sections at the top")


def lookup(params: Mapping[str, Any], key_path: str, *, file: PathLike) -> Any:
    """The value at a dotted key path such as ``pretrain.views``.

    Raises:
        ParamsError: a key along the path is missing (the message names the deepest key that exists).
    """
    node: Any = params
    walked: list[str] = []
    for part in key_path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(walked) or "the top level"
            known = f"; {where} has {', '.join(map(str, node))}" if isinstance(node, Mapping) and node else ""
            raise ParamsError(file, f"{key_path}: missing (no key {part!r} under {where}{known})")
        node = node[part]
        walked.append(part)
    return node
