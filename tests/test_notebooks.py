"""Notebooks are the product: each runs end to end on tiny parameters, and the pipeline's wiring is checked.

The smoke runs use papermill exactly as `dvc repro` does and assert on what each stage records.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import nbformat
import numpy as np
import pytest
import yaml
from PIL import Image
from shared_fixtures import NOTEBOOKS, REPO, TINY_DATA

SOURCE_NOTEBOOKS = sorted(NOTEBOOKS.glob("*.ipynb"))


def parameter_names(notebook: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{notebook.name} must have exactly one cell tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


@pytest.mark.parametrize("notebook", SOURCE_NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebooks_have_no_outputs(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs; strip them before committing"


def test_every_stage_passes_only_parameters_its_notebook_declares() -> None:
    """A `-p name` that the notebook does not declare would be silently ignored by the notebook."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages, "dvc.yaml has no stages"
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]  # a foreach stage keeps its command under "do"
        match = re.search(r"papermill (notebooks/\S+\.ipynb)", cmd)
        assert match, f"stage {name} does not run a notebook with papermill"
        declared = parameter_names(REPO / match.group(1))
        passed = set(re.findall(r"-p (\w+) ", cmd.replace("mkdir -p ", "mkdir ")))
        assert passed, f"stage {name} passes no parameters"
        assert passed <= declared, f"stage {name} passes undeclared parameters {sorted(passed - declared)}"


def retailnb_imports(source: str) -> set[str]:
    """Modules of retailnb that Python source imports (``from retailnb.x import y`` counts x and x.y if a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "retailnb":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "retailnb")
    return found


def module_file(module: str) -> Path | None:
    """The source file of a retailnb module or package, None when it is not one (an imported name)."""
    path = REPO.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def code_used_by(notebook: Path) -> set[str]:
    """Repository paths of every retailnb file a notebook runs: its imports, transitively, and their packages."""
    nb = nbformat.read(notebook, as_version=4)
    todo = list(retailnb_imports("\n".join(c.source for c in nb.cells if c.cell_type == "code")))
    seen: set[str] = set()
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            module = ".".join(parts[:i])
            path = module_file(module)
            if path is not None and module not in seen:
                seen.add(module)
                todo.extend(retailnb_imports(path.read_text()))
    return {module_file(m).relative_to(REPO).as_posix() for m in seen}  # type: ignore[union-attr]


def test_every_stage_depends_on_all_the_code_its_notebook_runs() -> None:
    """A code change reruns exactly the stages that run that code: no stale results, no needless retraining."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        notebook = REPO / re.search(r"papermill (notebooks/\S+\.ipynb)", body["cmd"]).group(1)  # type: ignore[union-attr]
        used = code_used_by(notebook)
        assert "retailnb/__init__.py" in used and len(used) > 1
        deps = [d for d in body["deps"] if str(d).startswith("retailnb")]
        missing = {f for f in used if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)}
        assert not missing, f"stage {name} runs {sorted(missing)} but does not depend on them"
        unused = {d for d in deps if not any(f == d or f.startswith(d.rstrip("/") + "/") for f in used)}
        assert not unused, f"stage {name} depends on {sorted(unused)}, which its notebook never runs"


def test_the_readme_runs_experiments_with_the_dvc_yaml_target() -> None:
    """Without it, ``dvc exp run`` clones data.dvc's import from GitHub first, which fails offline."""
    texts = [(REPO / f).read_text() for f in ("README.md", "params.yaml", "data.dvc")]
    commands = [m for t in texts for m in re.findall(r"dvc exp run[^\n`]*", t)]
    assert len(commands) >= 5
    untargeted = [c for c in commands if " -S " in c and not c.startswith("dvc exp run dvc.yaml")]
    assert not untargeted, f"experiments without the dvc.yaml target: {untargeted}"


def test_an_experiment_can_be_queued_without_network(tmp_path: Path) -> None:
    """``dvc exp run dvc.yaml -S ...`` records only dvc.yaml's stages: data.dvc's import is never opened."""
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout of the repository")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    run = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "dvc.yaml", "--queue", "-S", "noisy.threshold=0.3"],
                         cwd=clone, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Queued experiment" in run.stdout + run.stderr


def test_data_notebook_smoke(run_notebook: Callable[..., Path], tmp_path: Path) -> None:
    run_notebook("01_data.ipynb", **TINY_DATA)
    manifest = tmp_path / "data" / "prepared" / "manifest.csv"
    assert manifest.is_file()
    summary = json.loads((tmp_path / "metrics" / "data.json").read_text())
    fams, skus = TINY_DATA["n_target_families"], TINY_DATA["skus_per_family"]
    assert summary["classes"]["probe_test"] == fams * skus
    assert summary["target_classes_in_source"] == 0  # synthetic target families are disjoint from the source
    assert summary["images"]["probe_test"] == fams * skus * TINY_DATA["probe_test_per_sku"]
    assert all(summary["images"][role] > 0 for role in ("labelled", "unlabelled", "monitor_train", "probe_train"))
    figures = tmp_path / "reports" / "figures" / "01_data"
    assert (figures / "catalogue_vs_shelf.png").stat().st_size > 1000
    assert (figures / "class_counts.png").stat().st_size > 1000


def test_pretrain_notebook_smoke(run_notebook: Callable[..., Path], tmp_path: Path) -> None:
    run_notebook("01_data.ipynb", **TINY_DATA)
    run_notebook(
        "02_pretrain.ipynb",
        backbone="test_resnet",
        image_size=32,
        epochs=2,
        batch_size=8,
        images_per_class=2,
        proj_hidden_dim=32,
        proj_dim=16,
        warmup_epochs=0.5,
        num_workers=0,
    )
    metrics = json.loads((tmp_path / "metrics" / "pretrain" / "simclr_supcon.json").read_text())
    for model in ("pretrained", "random_init"):
        assert 0.0 <= metrics["monitor"][model]["knn_accuracy"] <= 1.0
        assert 0.0 <= metrics["monitor"][model]["probe_accuracy"] <= 1.0
    assert metrics["train"]["images_per_second"] > 0
    assert (tmp_path / "models" / "pretrain" / "simclr_supcon" / "backbone.pt").is_file()
    assert (tmp_path / "dvclive" / "pretrain" / "simclr_supcon" / "metrics.json").is_file()
    for name in ("curves.png", "retrievals.png"):
        assert (tmp_path / "reports" / "figures" / "02_pretrain_simclr_supcon" / name).stat().st_size > 1000


def test_noisy_student_notebook_smoke(run_notebook: Callable[..., Path], tmp_path: Path) -> None:
    run_notebook("01_data.ipynb", **TINY_DATA)
    tiny = dict(image_size=32, batch_size=8, warmup_epochs=0.5, num_workers=0)
    run_notebook("02_pretrain.ipynb", backbone="test_resnet", epochs=1, images_per_class=2, proj_hidden_dim=32,
                 proj_dim=16, **tiny)
    run_notebook("03_noisy_student.ipynb", teacher_architecture="test_resnet", rounds=2, epochs=1, threshold=0.0,
                 **tiny)
    metrics = json.loads((tmp_path / "metrics" / "noisy.json").read_text())
    assert set(metrics) == {"round_0", "round_1", "round_2", "best_round"}
    for r in (1, 2):
        row = metrics[f"round_{r}"]
        assert 0.0 <= row["probe_accuracy"] <= 1.0 and 0.0 < row["coverage"] <= 1.0
        assert (tmp_path / "models" / "noisy" / f"round_{r}" / "pseudolabels.csv").is_file()
    rounds = json.loads((tmp_path / "metrics" / "noisy_rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    quality = json.loads((tmp_path / "metrics" / "noisy_pseudolabels.json").read_text())
    assert [r["round"] for r in quality] == [1, 2] and quality[0]["coverage"] == metrics["round_1"]["coverage"]
    # dvc plots show renders a file only when all its rows have the same fields, its x and y among them
    plotted = [entry for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
               if next(iter(entry)).startswith("metrics/noisy")]
    assert len(plotted) == 2
    for entry in plotted:
        (file, spec), = entry.items()
        data = json.loads((tmp_path / file).read_text())
        assert all(set(row) == {spec["x"], *spec["y"]} for row in data), file
    for name in ("threshold.png", "rounds.png"):
        assert (tmp_path / "reports" / "figures" / "03_noisy_student" / name).stat().st_size > 1000


def test_evaluate_and_report_notebooks_smoke(run_notebook: Callable[..., Path], tmp_path: Path) -> None:
    run_notebook("01_data.ipynb", **TINY_DATA)
    tiny = dict(image_size=32, batch_size=8, warmup_epochs=0.5, num_workers=0)
    pretrain = dict(backbone="test_resnet", epochs=1, images_per_class=2, proj_hidden_dim=32, proj_dim=16, **tiny)
    for variant, (w_simclr, w_supcon) in {"simclr_supcon": (1.0, 1.0), "simclr": (1.0, 0.0)}.items():
        run_notebook("02_pretrain.ipynb", out_dir=f"models/pretrain/{variant}", metrics_path=f"metrics/pretrain/{variant}.json",
                     live_dir=f"dvclive/pretrain/{variant}", simclr_weight=w_simclr, supcon_weight=w_supcon, **pretrain)
    run_notebook("03_noisy_student.ipynb", teacher_architecture="test_resnet", rounds=1, epochs=1, threshold=0.3,
                 teacher_backbone="models/pretrain/simclr_supcon/backbone.pt", **tiny)
    run_notebook("04_evaluate.ipynb", architecture="test_resnet", image_size=32, shots="1,2,all", draws=2,
                 finetune_epochs=1, finetune_batch_size=8, num_workers=0)
    metrics = json.loads((tmp_path / "metrics" / "evaluate" / "prepared.json").read_text())
    assert set(metrics["methods"]) == {"random_init", "simclr", "simclr_supcon", "noisy_round_1"}
    for row in metrics["methods"].values():
        assert {"probe_1", "probe_2", "probe_all", "knn_all", "ratio_to_finetune"} <= set(row)
        assert 0.0 <= row["probe_all"] <= 1.0
    assert 0.0 <= metrics["finetuned_accuracy"] <= 1.0
    n_test = TINY_DATA["n_target_families"] * TINY_DATA["skus_per_family"] * TINY_DATA["probe_test_per_sku"]
    assert metrics["target"] == "prepared" and metrics["n_test"] == n_test
    shots = json.loads((tmp_path / "metrics" / "evaluate" / "prepared" / "shots.json").read_text())
    assert [p["shots"] for p in shots] == ["1", "2", "all"]
    confusion = json.loads((tmp_path / "metrics" / "evaluate" / "prepared" / "confusion.json").read_text())
    assert len(confusion) == n_test
    assert len(list((tmp_path / "features" / "prepared").glob("*.npz"))) == 4
    figures = tmp_path / "reports" / "figures" / "04_evaluate_prepared"
    for name in ("shots.png", "embedding_map.png", "shelf_to_catalogue.png", "confusions.png"):
        assert (figures / name).stat().st_size > 1000
    # a second target read by an adapter: an image-folder dataset with train and test splits
    shop = tmp_path / "shop"
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for c, name in enumerate(("tea", "jam", "oil")):
            (shop / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(60 + 70 * c, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(shop / split / name / f"{i}.png")
    run_notebook("04_evaluate.ipynb", target="shop", target_source="imagefolder", target_root=str(shop),
                 features_dir="features/shop", metrics_path="metrics/evaluate/shop.json", plots_dir="metrics/evaluate/shop",
                 figures_dir="reports/figures/04_evaluate_shop", architecture="test_resnet", image_size=32, shots="1,all",
                 draws=1, finetune_epochs=1, finetune_batch_size=8, num_workers=0)
    shop_metrics = json.loads((tmp_path / "metrics" / "evaluate" / "shop.json").read_text())
    assert (shop_metrics["n_classes"], shop_metrics["n_train"], shop_metrics["n_test"]) == (3, 9, 6)
    run_notebook("05_report.ipynb")
    table = (tmp_path / "reports" / "results.md").read_text()
    assert "simclr_supcon" in table and "random_init" in table
    assert "### Target `prepared`" in table and "### Target `shop`, imagefolder: 3 products" in table
