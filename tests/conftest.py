"""Shared test fixtures: repository paths, the real dataset when present, and a papermill runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
GROCERY_ROOT = Path(os.environ.get("RETAILNB_GROCERY_ROOT", REPO.parent / "shared" / "data" / "GroceryStoreDataset"))

# Tiny synthetic dataset parameters shared by the notebook smoke runs: a few seconds to render.
TINY_DATA: dict[str, Any] = dict(
    n_source_families=3,
    n_monitor_families=1,
    n_target_families=2,
    skus_per_family=3,
    labelled_fraction=0.67,
    catalogue_per_sku=1,
    labelled_shelf_per_sku=3,
    unlabelled_shelf_per_sku=3,
    monitor_train_per_sku=2,
    monitor_test_per_sku=2,
    probe_train_shelf_per_sku=2,
    probe_test_per_sku=3,
    image_size=32,
    difficulty=0.5,
    seed=0,
)


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
