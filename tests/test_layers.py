"""The package's layout is its architecture: no module imports from a layer above its own.

The order of the layers is written once, in :data:`retailnb.LAYERS`. Every ``import`` and ``from ... import``
of every module is read (at any depth: a function-level import counts too), resolved to the sub-package it
lands in, and compared.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from shared_fixtures import REPO

import retailnb

PACKAGE = REPO / "retailnb"
TOP_LEVEL = {"__init__.py", "__main__.py"}


def modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def layer_of(module: str) -> str | None:
    """The layer (sub-package) of a dotted ``retailnb.<layer>...`` name; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "retailnb" else None


def imported(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, dotted module) of every retailnb import in the file, relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base == "retailnb":  # from retailnb import x: x is the layer
                found += [(node.lineno, f"retailnb.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in found if name == "retailnb" or name.startswith("retailnb.")]


def upward_imports(root: Path = REPO) -> list[str]:
    """Every import, in the package under ``root``, of a layer above the importing module's own."""
    order = {layer: i for i, layer in enumerate(retailnb.LAYERS)}
    problems = []
    for path in modules(root / "retailnb"):
        rel = path.relative_to(root)
        if len(rel.parts) == 2:  # retailnb/__init__.py, retailnb/__main__.py: the top, above every layer
            continue
        own = rel.parts[1]
        for line, name in imported(path, root):
            target = layer_of(name)
            if target is not None and order[target] > order[own]:
                problems.append(f"{rel}:{line} imports {name} ({target} is above {own})")
    return problems


def test_every_sub_package_is_a_named_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(retailnb.LAYERS)


def test_no_module_imports_from_a_higher_layer() -> None:
    problems = upward_imports()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("line", ["    from retailnb.stages import display", "    import retailnb.bundle.cli",
                                  "    from ...noisy import rounds", "    from retailnb import results"])
def test_the_check_sees_an_upward_import(tmp_path: Path, line: str) -> None:
    """Any form of import, at any depth (here inside a function), of a higher layer is found."""
    (tmp_path / "retailnb" / "train" / "sub").mkdir(parents=True)
    bad = tmp_path / "retailnb" / "train" / "sub" / "probe.py"
    bad.write_text(f"def f() -> None:\n{line}\n")
    (tmp_path / "retailnb" / "train" / "ok.py").write_text("from retailnb.models import backbone\nfrom . import sub\n")
    problems = upward_imports(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("retailnb/train/sub/probe.py:2 imports retailnb."), problems


def test_the_top_level_holds_no_more_than_three_modules() -> None:
    top = {p.name for p in PACKAGE.glob("*.py")} - TOP_LEVEL
    assert len(top) <= 3, sorted(top)


def test_no_module_over_600_lines_but_the_synthetic_generator() -> None:
    long = {str(p.relative_to(REPO)): n for p in modules() if (n := len(p.read_text().splitlines())) > 600}
    assert set(long) <= {"retailnb/data/synthetic.py"}, long
