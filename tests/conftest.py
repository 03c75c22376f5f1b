"""Shared test fixtures: repository paths, the real dataset when present, and a papermill runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from shared_fixtures import GROCERY_ROOT, NOTEBOOKS


@pytest.fixture
def grocery_root() -> Path:
    """The real Grocery Store Dataset; the test is skipped cleanly when it is not on this machine."""
    if not (GROCERY_ROOT / "dataset" / "classes.csv").is_file():
        pytest.skip(f"Grocery Store Dataset not found at {GROCERY_ROOT}")
    return GROCERY_ROOT


@pytest.fixture
def run_notebook(tmp_path: Path) -> Callable[..., Path]:
    """Execute ``notebooks/<name>`` with papermill in ``tmp_path`` (its working folder); return the output path."""
    import papermill as pm

    def run(name: str, **parameters: Any) -> Path:
        out = tmp_path / "reports" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        pm.execute_notebook(
            str(NOTEBOOKS / name),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(tmp_path),
            progress_bar=False,
        )
        return out

    return run
