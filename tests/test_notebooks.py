"""Notebooks are the product: each runs end to end on tiny parameters, and the pipeline's wiring is checked.

The smoke runs use papermill exactly as `dvc repro` does and assert on what each stage records.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from pipeline_fixture import TINY, dvc, tiny_repo, write_params
from shared_fixtures import NOTEBOOKS, REPO, TINY_DATA, repo_params, with_overrides

from retailnb.config.params_file import lookup, read_params
from retailnb.config.stages import STAGES, spec_from_params

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


def test_every_stage_passes_its_notebook_exactly_the_params_file_its_key_and_paths() -> None:
    """No value travels on the command line: each notebook parameter is the params file, a key or a path.

    Every parameter the notebook declares is passed (a default in a notebook cell would be a second
    default), and nothing else is (papermill would silently add an unknown name).
    """
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGES), "dvc.yaml's stages and retailnb.config.stages.STAGES differ"
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]  # a foreach stage keeps its command under "do"
        match = re.search(r"papermill (notebooks/\S+\.ipynb)", cmd)
        assert match, f"stage {name} does not run a notebook with papermill"
        declared = parameter_names(REPO / match.group(1))
        passed = dict(re.findall(r"-p (\w+) (\S+)", cmd.replace("mkdir -p ", "mkdir ")))
        assert set(passed) == declared, f"stage {name}: passes {sorted(passed)}, notebook declares {sorted(declared)}"
        assert passed["params_file"] == "params.yaml"
        values = {k: v for k, v in passed.items() if k != "params_file"}
        not_paths = {k: v for k, v in values.items() if "/" not in v and v != "${key}"}
        assert not not_paths, f"stage {name} passes values that are neither paths nor its key: {not_paths}"


def test_every_stage_declares_exactly_the_params_it_reads() -> None:
    """dvc.yaml's params: of each stage are the key paths retailnb.config.stages says the stage reads."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, entry in STAGES.items():
        body = stages[name].get("do", stages[name])
        reads = [path.replace("{key}", "${key}") for path in entry.reads.values()]
        assert sorted(body["params"]) == sorted(set(reads)), f"stage {name}"
        if entry.foreach:
            assert stages[name]["foreach"] == "${" + entry.foreach + "}"


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key path -> value of every leaf of a nested mapping (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def test_every_params_key_is_read_by_some_stage() -> None:
    """A key no stage reads would be a setting that silently does nothing."""
    reads = {path.split(".{key}")[0] for entry in STAGES.values() for path in entry.reads.values()}
    unread = [key for key in leaves(repo_params()) if not any(key == r or key.startswith(r + ".") for r in reads)]
    assert not unread, f"params.yaml keys no stage reads: {unread}"


def spec_leaves(stage: str, key: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """params.yaml key path -> value of every leaf of a stage's spec, as the stage receives it."""
    spec = spec_from_params(stage, params, key)
    out: dict[str, Any] = {}
    for field, path in STAGES[stage].key_paths(key).items():
        out.update(leaves(getattr(spec, field).model_dump() if hasattr(getattr(spec, field), "model_dump")
                          else getattr(spec, field), path))
    return out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_value_arrives_in_the_spec_with_its_yaml_type(stage: str) -> None:
    """A bool stays a bool (the "false" bug), an int an int, a list a list, for every key a stage reads."""
    params = repo_params()
    entry = STAGES[stage]
    keys = list(lookup(params, entry.foreach, file="params.yaml")) if entry.foreach else [None]
    for key in keys:
        got = spec_leaves(stage, key, params)
        expected = {k: v for k, v in leaves(params).items() if k in got}
        assert set(got) == set(expected), f"{stage}: spec leaves without a params.yaml key: {set(got) - set(expected)}"
        for path, value in expected.items():
            assert got[path] == value and type(got[path]) is type(value), f"{path}: {got[path]!r} != {value!r}"


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
    run = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "dvc.yaml", "--queue", "-S", "noisy.pseudo.threshold=0.3"],
                         cwd=clone, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Queued experiment" in run.stdout + run.stderr




# --- the tiny pipeline, run once per session through `dvc repro` (see pipeline_fixture.py) ------------


def read(root: Path, path: str) -> Any:
    return json.loads((root / path).read_text())


def test_data_stage(pipeline: Path) -> None:
    summary = read(pipeline, "metrics/data.json")
    fams, skus = TINY_DATA["n_target_families"], TINY_DATA["skus_per_family"]
    assert summary["classes"]["probe_test"] == fams * skus
    assert summary["target_classes_in_source"] == 0  # synthetic target families are disjoint from the source
    assert summary["images"]["probe_test"] == fams * skus * TINY_DATA["probe_test_per_sku"]
    assert all(summary["images"][role] > 0 for role in ("labelled", "unlabelled", "monitor_train", "probe_train"))
    for name in ("catalogue_vs_shelf.png", "class_counts.png"):
        assert (pipeline / "reports" / "figures" / "01_data" / name).stat().st_size > 1000


def test_pretrain_stage_trains_every_variant(pipeline: Path) -> None:
    for variant in repo_params()["pretrain"]["variants"]:
        record = read(pipeline, f"metrics/pretrain/{variant}.json")
        losses = record["history"]["loss"]
        assert len(losses) == TINY["pretrain.engine.epochs"] and all(0 < v < 100 for v in losses), (variant, losses)
        assert record["train"]["images_per_second"] > 0
        assert (pipeline / "models" / "pretrain" / variant / "backbone.pt").is_file()
        assert (pipeline / "dvclive" / "pretrain" / variant / "metrics.json").is_file()
        for name in ("curves.png", "retrievals.png"):
            assert (pipeline / "reports" / "figures" / f"02_pretrain_{variant}" / name).stat().st_size > 1000


def test_pretrain_stage_received_every_value_with_its_yaml_type(pipeline: Path) -> None:
    """Through the real stage command: the spec the run recorded equals params.yaml, type for type."""
    params = read_params(pipeline / "params.yaml")
    for variant in params["pretrain"]["variants"]:
        used = read(pipeline, f"models/pretrain/{variant}/backbone.json")["spec"]
        expected = spec_leaves("pretrain", variant, params)
        got = {}
        for field, path in STAGES["pretrain"].key_paths(variant).items():
            got.update(leaves(used[field], path))
        assert got.keys() == expected.keys()
        for path, value in expected.items():
            assert got[path] == value and type(got[path]) is type(value), (path, got[path], value)


def test_noisy_stage(pipeline: Path) -> None:
    record = read(pipeline, "metrics/noisy.json")
    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and record["best_round"] in (0, 1, 2)
    for row in rounds[1:]:
        # params.yaml says soft: false, so every pseudolabel target is one-hot
        assert row["target_confidence"] == 1.0
        assert 0.0 < row["coverage"] <= 1.0 and row["n_selected"] > 0
        assert (pipeline / "models" / "noisy" / f"round_{row['round']}" / "pseudolabels.csv").is_file()
    accuracy = read(pipeline, "metrics/noisy_rounds.json")
    assert [r["round"] for r in accuracy] == [0, 1, 2]
    quality = read(pipeline, "metrics/noisy_pseudolabels.json")
    assert [r["round"] for r in quality] == [1, 2] and quality[0]["coverage"] == rounds[1]["coverage"]
    # dvc plots show renders a file only when all its rows have the same fields, its x and y among them
    plotted = [entry for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
               if next(iter(entry)).startswith("metrics/noisy")]
    assert len(plotted) == 2
    for entry in plotted:
        (file, plot), = entry.items()
        assert all(set(row) == {plot["x"], *plot["y"]} for row in read(pipeline, file)), file
    for name in ("threshold.png", "rounds.png"):
        assert (pipeline / "reports" / "figures" / "03_noisy_student" / name).stat().st_size > 1000


def test_evaluate_stage(pipeline: Path) -> None:
    record = read(pipeline, "metrics/evaluate/prepared.json")
    n_classes = TINY_DATA["n_target_families"] * TINY_DATA["skus_per_family"]
    assert set(record["methods"]) == {"random_init", "simclr", "simclr_supcon", "supcon", "noisy_round_1",
                                      "noisy_round_2"}
    for name, row in record["methods"].items():
        assert {"probe_1", "probe_2", "probe_all", "knn_all", "ratio_to_finetune"} <= set(row)
        assert 0.0 <= row["probe_all"] <= 1.0
    # the synthetic products differ by colour: the best frozen features beat chance
    assert max(row["probe_all"] for row in record["methods"].values()) > 1 / n_classes
    assert record["finetuned_accuracy"] > 1 / n_classes and record["finetune_seconds"] > 0
    assert record["n_test"] == n_classes * TINY_DATA["probe_test_per_sku"]
    shots = read(pipeline, "metrics/evaluate/prepared/shots.json")
    assert [p["shots"] for p in shots] == ["1", "2", "all"]
    assert len(read(pipeline, "metrics/evaluate/prepared/confusion.json")) == record["n_test"]
    assert len(list((pipeline / "features" / "prepared").glob("*.npz"))) == 6
    for name in ("shots.png", "embedding_map.png", "shelf_to_catalogue.png", "confusions.png"):
        assert (pipeline / "reports" / "figures" / "04_evaluate_prepared" / name).stat().st_size > 1000
    shop = read(pipeline, "metrics/evaluate/shop.json")  # a second target, read by the image-folder adapter
    assert (shop["n_classes"], shop["n_train"], shop["n_test"]) == (3, 9, 6)
    # three products of clearly different brightness: the all-image probe of random weights gets them right
    assert shop["methods"]["random_init"]["probe_all"] >= 5 / 6


def test_report_and_new_products_stages(pipeline: Path) -> None:
    table = (pipeline / "reports" / "results.md").read_text()
    assert "simclr_supcon" in table and "random_init" in table
    assert "### Target `prepared`" in table and "### Target `shop`, imagefolder: 3 products" in table
    record = read(pipeline, "metrics/new_products.json")
    n_products = TINY_DATA["n_target_families"] * TINY_DATA["skus_per_family"]
    assert [r["shots"] for r in record["enrolment"]] == [0, *TINY["new_products.shots"]]
    assert len(record["held_out"]) == record["n_new"] == TINY["new_products.n_new"]
    assert record["n_old"] == n_products - TINY["new_products.n_new"]
    new_test_images = TINY["new_products.n_new"] * TINY_DATA["probe_test_per_sku"]
    assert all(0.0 <= r["old_accuracy"] <= 1.0 and r["n_new"] == new_test_images for r in record["enrolment"])
    assert record["enrolment"][0]["new_accuracy"] == 0.0  # before enrolment no new product can be predicted
    assert (pipeline / "models" / "bundle" / "catalogue.bundle").is_file()
    assert (pipeline / "reports" / "figures" / "06_new_products" / "enrolment.png").stat().st_size > 1000


def copy_of(pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the run pipeline repository (git, DVC cache and outputs), to change without side effects."""
    shutil.copytree(pipeline, tmp_path / "repo", symlinks=True)
    return tmp_path / "repo"


def test_soft_and_balance_reach_the_noisy_stage_through_dvc_exp_run(pipeline: Path, tmp_path: Path) -> None:
    """`dvc exp run -S noisy.pseudo.soft=true` trains on soft targets; balance: false keeps every image once."""
    root = copy_of(pipeline, tmp_path)
    dvc(root, "exp", "run", "noisy", "-s", "-S", "noisy.pseudo.soft=true", "-S", "noisy.pseudo.balance=false")
    rounds = read(root, "metrics/noisy.json")["rounds"]
    for row in rounds[1:]:
        assert row["target_confidence"] < 1.0  # soft targets: the teacher's probabilities
        # threshold 0 and no balancing: every unlabelled image exactly once
        assert row["coverage"] == 1.0 and row["n_rows"] == row["n_selected"]
    default = read(pipeline, "metrics/noisy.json")["rounds"]
    assert all(row["target_confidence"] == 1.0 for row in default[1:])


def test_changing_one_variant_reruns_only_that_variant(pipeline: Path, tmp_path: Path) -> None:
    root = copy_of(pipeline, tmp_path)
    params = read_params(root / "params.yaml")
    write_params(root, with_overrides(params, {"pretrain.variants.simclr.simclr_weight": 0.5}))
    status = json.loads(dvc(root, "status", "--json").stdout)
    assert set(status) == {"pretrain@simclr"}, status


def test_a_bad_value_stops_the_stage_naming_its_key_and_leaves_no_output(tmp_path: Path) -> None:
    root = tiny_repo(tmp_path / "repo")
    write_params(root, with_overrides(read_params(root / "params.yaml"), {"data.synthetic.n_source_families": 0}))
    run = subprocess.run([sys.executable, "-m", "dvc", "repro", "data"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode != 0
    assert "data.synthetic.n_source_families: Input should be greater than or equal to 1, got 0" in run.stdout + run.stderr
    assert not (root / "data" / "prepared").exists() and not (root / "metrics" / "data.json").exists()
