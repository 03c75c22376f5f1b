"""The training layer knows no stage: it takes the config pieces it trains with, never a stage's spec."""

from __future__ import annotations

import ast

from shared_fixtures import REPO


def test_no_training_module_imports_a_stage_spec() -> None:
    found = []
    for path in sorted((REPO / "retailnb" / "train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(REPO)}:{node.lineno} {alias.name}" for alias in node.names
                          if alias.name.endswith("StageSpec")]
    assert not found, found
