"""Constants shared by the tests: repository paths, the real dataset's location, tiny synthetic parameters.

A plain module rather than ``conftest`` so test files can import it by a name no other folder uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

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


# Products that any backbone, even a random one, tells apart: noisy solid colours.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}


def colour_images(names: list[str], per_class: int, seed: int, size: int = 32) -> tuple[np.ndarray, list[str]]:
    """``per_class`` noisy solid-colour uint8 (size, size, 3) images of each product, and their product names."""
    rng = np.random.default_rng(seed)
    labels = [n for n in names for _ in range(per_class)]
    base = np.array([COLOURS[n] for n in labels], dtype=np.float64)[:, None, None, :]
    noise = rng.normal(0, 10, (len(labels), size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), labels


def write_colour_folder(root: Path, names: list[str], per_class: int, seed: int = 0, size: int = 32) -> Path:
    """``root/<colour>/<i>.jpg`` (i from 0 in each product) of :func:`colour_images`; returns ``root``."""
    images, labels = colour_images(names, per_class, seed, size)
    for i, (image, name) in enumerate(zip(images, labels)):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name / f"{i % per_class}.jpg", quality=95)
    return root


def repo_params() -> dict[str, Any]:
    """The repository's params.yaml, read as DVC reads it (YAML 1.2): every default lives there."""
    from retailnb.config.params_file import read_params

    return read_params(REPO / "params.yaml")


def with_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``params`` with ``{"pretrain.sampler.batch_size": 8, ...}`` set."""
    import copy

    out = copy.deepcopy(params)
    for path, value in overrides.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return out


def default_spec(stage: str, key: str | None = None, **overrides: Any) -> Any:
    """The spec of ``stage`` from the repository's params.yaml, with dotted-path overrides.

    Overrides are given with ``__`` for dots: ``default_spec("pretrain", "simclr", sampler__batch_size=8)``
    sets ``pretrain.sampler.batch_size``; the section prefix is taken from the stage's reads, so use the
    params.yaml path below the section (``sampler__batch_size``) or a full path (``compute__num_workers``).
    """
    from spec_paths import SPECS

    from retailnb.config.stages import spec_from_params

    params = repo_params()
    resolved = {}
    for name, value in overrides.items():
        path = name.replace("__", ".")
        top = path.split(".")[0]
        resolved[path if top in params else f"{stage}.{path}"] = value
    return spec_from_params(SPECS[stage], with_overrides(params, resolved), key)


def default_part(model: type, section: str, **fields: Any) -> Any:
    """One nested spec (e.g. ``ViewSpec`` from ``pretrain.views``) from params.yaml, with fields replaced."""
    from retailnb.config.params_file import lookup

    values = dict(lookup(repo_params(), section, file="params.yaml"))
    values.update(fields)
    return model.model_validate(values)


def tiny_synthetic_manifest(out: Path, **sizes: Any) -> Path:
    """A tiny synthetic dataset at 32 px: two source families of three SKUs (two labelled, one unlabelled-only
    per family), one monitor and one target family; ``sizes`` override ``data.synthetic`` values."""
    from retailnb.config.data import SyntheticSpec
    from retailnb.data.synthetic import generate

    base: dict[str, Any] = dict(
        n_source_families=2, n_monitor_families=1, n_target_families=1, skus_per_family=3, labelled_fraction=0.67,
        catalogue_per_sku=1, labelled_shelf_per_sku=3, unlabelled_shelf_per_sku=3, monitor_train_per_sku=1,
        monitor_test_per_sku=1, probe_train_shelf_per_sku=2, probe_test_per_sku=2, image_size=32,
    )
    return generate(default_part(SyntheticSpec, "data.synthetic", **{**base, **sizes}), out, workers=1)


def jupyterlab_open_and_autosave(path: Path) -> bool:
    """Do to a notebook what JupyterLab does when a user opens it and it autosaves; True when it saved.

    JupyterLab starts the notebook's kernel and writes that kernel's spec (name, display name, language)
    and its ``language_info`` into the notebook's metadata; a change marks the notebook dirty, and
    autosave writes it through the Jupyter server's contents manager (the code path used here).
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel
    from jupyter_server.services.contents.filemanager import FileContentsManager

    contents = FileContentsManager(root_dir=str(path.parent))
    model = contents.get(path.name, content=True, type="notebook")
    nb = model["content"]
    name = nb.metadata.kernelspec.name
    spec = KernelSpecManager().get_kernel_spec(name)
    manager, client = start_new_kernel(kernel_name=name)
    try:
        language_info = client.kernel_info(reply=True, timeout=60)["content"]["language_info"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    kernelspec = {"display_name": spec.display_name, "language": spec.language, "name": name}
    if nb.metadata.get("kernelspec") == kernelspec and nb.metadata.get("language_info") == language_info:
        return False
    nb.metadata["kernelspec"], nb.metadata["language_info"] = kernelspec, language_info
    contents.save({"type": "notebook", "format": "json", "content": nb}, path.name)
    return True
