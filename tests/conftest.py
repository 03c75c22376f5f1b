"""Shared test fixtures: the real dataset when present, and the tiny pipeline run once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_fixture import dvc, tiny_repo
from shared_fixtures import GROCERY_ROOT


@pytest.fixture
def grocery_root() -> Path:
    """The real Grocery Store Dataset; the test is skipped cleanly when it is not on this machine."""
    if not (GROCERY_ROOT / "dataset" / "classes.csv").is_file():
        pytest.skip(f"Grocery Store Dataset not found at {GROCERY_ROOT}")
    return GROCERY_ROOT


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository where ``dvc repro`` has run every stage on tiny parameters (once per session)."""
    root = tiny_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    dvc(root, "repro")
    return root
