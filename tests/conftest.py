"""Shared test fixtures: the real dataset when present, and the tiny pipeline run once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pipeline_fixture import TinyPipeline, run_pipeline
from shared_fixtures import GROCERY_ROOT


@pytest.fixture
def grocery_root() -> Path:
    """The real Grocery Store Dataset; the test is skipped cleanly when it is not on this machine."""
    if not (GROCERY_ROOT / "dataset" / "classes.csv").is_file():
        pytest.skip(f"Grocery Store Dataset not found at {GROCERY_ROOT}")
    return GROCERY_ROOT


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> TinyPipeline:
    """The tiny pipeline, run once per session (see :func:`pipeline_fixture.run_pipeline`)."""
    return run_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture
def pipeline(tiny_pipeline: TinyPipeline) -> Path:
    """A repository where ``dvc repro`` has run every stage on tiny parameters."""
    return tiny_pipeline.root


PIPELINE_TESTS = "test_pipeline.py"
"""The file whose tests share the session's tiny pipeline; the longest chain of the suite."""


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one compute thread per worker process and per process it starts.

    Two workers share this machine's two cores; a worker whose torch also starts two threads (and each
    notebook kernel or ``torchrun`` process it starts, likewise) oversubscribes the cores and spends the
    difference spinning. Results do not depend on the thread count.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that runs the tiny pipeline ``pipeline``; start with the pipeline's tests, so that
    their worker begins the longest chain first."""
    for item in items:
        if "tiny_pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pipeline)
    items.sort(key=lambda item: item.path.name != PIPELINE_TESTS)  # stable: each file keeps its order


@pytest.fixture
def torchrun_threads() -> Iterator[None]:
    """The in-process run computes with one thread, as each torchrun worker does (``OMP_NUM_THREADS=1``):
    oneDNN's convolutions sum in another order with another number of threads (features then differ in
    the last bit), and what is tested here is the sharding, not the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def training_manifest(tmp_path: Path) -> str:
    """A data stage manifest whose training images are none of a test's target images (a real target's
    evaluation reads it for the photos no training saw)."""
    from retailnb.data.manifest import ManifestRow, write_manifest

    rows = [ManifestRow(path=str(tmp_path / "elsewhere.png"), label=0, class_name="other", split="train",
                        role="labelled")]
    return str(write_manifest(rows, tmp_path / "training" / "manifest.csv"))
