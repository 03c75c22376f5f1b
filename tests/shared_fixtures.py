"""Constants shared by the tests: repository paths, the real dataset's location, tiny synthetic parameters.

A plain module rather than ``conftest`` so test files can import it by a name no other folder uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
