"""The pipeline's wiring: notebooks, dvc.yaml and params.yaml agree, and a bad value stops a stage.

The smoke runs of every notebook through the real stage commands are in ``test_pipeline.py``.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from pipeline_fixture import TinyPipeline, copy_repo, tiny_repo, write_params
from shared_fixtures import NOTEBOOKS, REPO, jupyterlab_open_and_autosave, repo_params, with_overrides
from spec_paths import leaves, spec_leaves

from retailnb.config.params_file import lookup, read_params
from retailnb.config.stages import STAGES

SOURCE_NOTEBOOKS = sorted(NOTEBOOKS.glob("*.ipynb"))

CHECK_STAGE = "check"
"""The stage that validates every stage's parameters first (:mod:`retailnb.stages.check`); it runs no notebook."""


def notebook_stages() -> dict[str, Any]:
    """dvc.yaml's stages that run a notebook: all but :data:`CHECK_STAGE`."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage for name, stage in stages.items() if name != CHECK_STAGE}


def test_every_notebook_stage_runs_after_the_params_check() -> None:
    """Each stage depends on the check's output, so that a bad value stops dvc repro before any output goes."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    check = stages[CHECK_STAGE]
    assert check["params"] == [{"params.yaml": None}]  # every key of the file
    (out,) = [next(iter(o)) if isinstance(o, dict) else o for o in check["outs"]]
    for name, stage in notebook_stages().items():
        assert out in stage.get("do", stage)["deps"], f"stage {name} does not depend on {out}"


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


@pytest.mark.parametrize("notebook", SOURCE_NOTEBOOKS, ids=lambda p: p.name)
def test_opening_a_notebook_in_jupyterlab_and_saving_it_changes_no_byte(notebook: Path, tmp_path: Path) -> None:
    """The notebooks are committed as JupyterLab saves them (its kernel's spec and language_info), so opening
    one, running nothing, lets its autosave write the same bytes and marks no stage of dvc.yaml changed."""
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    assert not jupyterlab_open_and_autosave(copy), f"{notebook.name}: JupyterLab would rewrite its metadata"
    assert copy.read_bytes() == notebook.read_bytes()


def test_every_stage_passes_its_notebook_exactly_the_params_file_its_key_and_paths() -> None:
    """No value travels on the command line: each notebook parameter is the params file, a key or a path.

    Every parameter the notebook declares is passed (a default in a notebook cell would be a second
    default), and nothing else is (papermill would silently add an unknown name).
    """
    stages = notebook_stages()
    assert set(stages) == set(STAGES), "dvc.yaml's stages and retailnb.config.stages.STAGES differ"
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]  # a foreach stage keeps its command under "do", a matrix stage not
        match = re.search(r"^python -m retailnb\.stages\.run_notebook (notebooks/\S+\.ipynb) reports/\S+\.ipynb ", cmd)
        assert match, f"stage {name} does not run a notebook with python -m retailnb.stages.run_notebook"
        declared = parameter_names(REPO / match.group(1))
        passed = dict(re.findall(r"-p (\w+) (\S+)", cmd.replace("mkdir -p ", "mkdir ")))
        assert set(passed) == declared, f"stage {name}: passes {sorted(passed)}, notebook declares {sorted(declared)}"
        assert passed["params_file"] == "params.yaml"
        values = {k: v for k, v in passed.items() if k != "params_file"}
        keys = {"${key}", "${item.variant}", "${item.target}", "${item.seed}"}  # foreach or matrix keys
        not_paths = {k: v for k, v in values.items() if "/" not in v and v not in keys}
        assert not not_paths, f"stage {name} passes values that are neither paths nor its keys: {not_paths}"


def test_every_stage_declares_exactly_the_params_it_reads() -> None:
    """dvc.yaml's params: of each stage are the key paths retailnb.config.stages says the stage reads."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, entry in STAGES.items():
        body = stages[name].get("do", stages[name])
        matrix = stages[name].get("matrix", {})
        # a matrix stage names its foreach key after what it loops over (variant, target)
        key = next((f"${{item.{k}}}" for k, v in matrix.items() if v == "${" + entry.foreach + "}"), "${key}")
        reads = [path.replace("{key}", key) for path in entry.reads.values()]
        assert sorted(body["params"]) == sorted(set(reads)), f"stage {name}"
        if entry.foreach:
            assert "${" + entry.foreach + "}" in (stages[name].get("foreach"), *matrix.values()), name
        if name in ("pretrain", "noisy", "evaluate"):  # every training stage runs once per training seed
            assert matrix.get("seed") == "${evaluate.seeds}", name


def test_every_params_key_is_read_by_some_stage() -> None:
    """A key no stage reads would be a setting that silently does nothing."""
    reads = {path.split(".{key}")[0] for entry in STAGES.values() for path in entry.reads.values()}
    unread = [key for key in leaves(repo_params()) if not any(key == r or key.startswith(r + ".") for r in reads)]
    assert not unread, f"params.yaml keys no stage reads: {unread}"


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


def code_used_by(notebook: Path | None, also: tuple[str, ...] = ()) -> set[str]:
    """Repository paths of every retailnb file a notebook runs: its imports, transitively, and their packages.

    ``also`` names modules that run without the notebook importing them (the stage runner), followed the
    same way. A package's ``__init__.py`` that holds only its docstring runs nothing and is left out.
    """
    todo = list(also)
    if notebook is not None:
        nb = nbformat.read(notebook, as_version=4)
        todo += list(retailnb_imports("\n".join(c.source for c in nb.cells if c.cell_type == "code")))
    seen: set[str] = set()
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            module = ".".join(parts[:i])
            path = module_file(module)
            if path is not None and module not in seen:
                seen.add(module)
                todo.extend(retailnb_imports(path.read_text()))
    files = {module_file(m) for m in seen}
    return {f.relative_to(REPO).as_posix() for f in files if f is not None and not docstring_only(f)}


def docstring_only(path: Path) -> bool:
    """Whether a module is its docstring and nothing else (so a change to it changes no result)."""
    body = ast.parse(path.read_text()).body
    return len(body) <= 1 and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def covers(dep: str, file: str) -> bool:
    """Whether a dvc.yaml dep (a file or a folder) holds the file."""
    return file == dep or file.startswith(dep.rstrip("/") + "/")


def test_every_stage_depends_on_all_the_code_its_notebook_runs() -> None:
    """A code change reruns exactly the stages that run that code: no stale results, no needless retraining.

    A stage may depend on a whole folder of the lower layers; above them, on the modules it runs only, and
    on its own parameter module only: a change to ``retailnb/config/evaluate.py`` does not retrain the
    pretraining variants.
    """
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        if name == CHECK_STAGE:  # runs a module, not a notebook
            used = code_used_by(None, also=("retailnb.stages.check",))
        else:
            notebook = REPO / re.search(r"retailnb\.stages\.run_notebook (notebooks/\S+\.ipynb)", body["cmd"]).group(1)  # type: ignore[union-attr]
            used = code_used_by(notebook, also=("retailnb.stages.run_notebook",))
        assert "retailnb/__init__.py" in used and len(used) > 1
        deps = [d for d in body["deps"] if str(d).startswith("retailnb")]
        missing = {f for f in used if not any(covers(d, f) for d in deps)}
        assert not missing, f"stage {name} runs {sorted(missing)} but does not depend on them"
        unused = {d for d in deps if not any(covers(d, f) for f in used)}
        assert not unused, f"stage {name} depends on {sorted(unused)}, which its notebook never runs"
        for dep in deps:
            assert (REPO / dep).exists(), f"stage {name} depends on {dep}, which does not exist"
            if (REPO / dep).is_dir():
                layer = dep.split("/")[1]
                assert dep == f"retailnb/{layer}", f"stage {name}: a folder dep is a whole layer, not {dep}"
        for layer in ("config", "stages"):  # named module by module: each stage its own specs and function
            assert f"retailnb/{layer}" not in deps, f"stage {name} depends on all of retailnb/{layer}"
        if name in ("data", "pretrain", "noisy"):  # upstream stages never rerun for a downstream stage's settings
            downstream = {f"retailnb/config/{m}.py" for m in ("evaluate", "report", "new_products")}
            downstream |= {"retailnb/evaluation/compare.py", "retailnb/stages/evaluate.py"}
            assert not {f for f in downstream if any(covers(d, f) for d in deps)}, f"stage {name} reruns for evaluation code"


NETWORK_ERRORS = ("github.com", "Failed to clone", "ConnectionPool", "Name or service not known", "failed to download")
"""Words of DVC's errors when it reaches for a remote repository or URL that this offline machine cannot reach."""


def dvc_offline(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in ``root``, asserting that it reached for no network."""
    run = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, timeout=300)
    reached = [w for w in NETWORK_ERRORS if w in run.stdout + run.stderr]
    assert not reached, f"dvc {' '.join(args)} reached for the network ({reached}):\n{run.stdout}\n{run.stderr}"
    return run


def test_data_dvc_is_a_plain_tracked_folder_that_names_its_source() -> None:
    """No import: DVC checks an import's source repository on every status, exp run and pull (network)."""
    spec = yaml.safe_load((REPO / "data.dvc").read_text())
    assert "deps" not in spec and not spec.get("frozen"), "data.dvc must not be an import (it needs network)"
    (out,) = spec["outs"]
    assert out["path"] == "data/GroceryStoreDataset" and out["md5"].endswith(".dir")
    text = (REPO / "data.dvc").read_text()
    assert f"dvc get {spec['meta']['source']} {spec['meta']['folder']} --rev {spec['meta']['rev']} -o {out['path']}" in text


@pytest.mark.pipeline
def test_bare_dvc_commands_work_on_an_offline_fresh_clone(tmp_path: Path) -> None:
    """``dvc status``, ``dvc pull`` and ``dvc exp run`` without targets never reach for the Grocery data's source."""
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout of the repository")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    status = dvc_offline(clone, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "data.dvc" in status.stdout  # the Grocery data is not here: said, not an error
    dvc_offline(clone, "pull")  # no remote on a fresh clone: pull says so, and asks nothing of GitHub
    queued = dvc_offline(clone, "exp", "run", "--queue", "-S", "noisy.pseudo.threshold=0.3")
    assert queued.returncode == 0 and "Queued experiment" in queued.stdout + queued.stderr, queued.stdout + queued.stderr


def test_bare_dvc_status_and_dry_runs_work_offline_where_the_pipeline_ran(tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    """The tiny pipeline's repository with the project's data.dvc: status and dry runs plan without network."""
    root = copy_repo(tiny_pipeline.root, tmp_path / "repo")
    shutil.copy(REPO / "data.dvc", root / "data.dvc")
    # as in the repository: dvc.lock, the records (cache: false) and data.dvc committed
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "the pipeline's results and data.dvc"], cwd=root, check=True)
    status = dvc_offline(root, "status")
    assert status.returncode == 0 and "data.dvc" in status.stdout, status.stdout + status.stderr
    # DVC's dry run may stop at a stage whose input a dry run never writes (its run cache hashes the missing
    # input): that is DVC's, and says so; what matters here is that no command reached for the network
    for args in (("exp", "run", "--dry"), ("repro", "--dry")):
        run = dvc_offline(root, *args)
        assert run.returncode == 0 or "No such file or directory" in run.stdout + run.stderr, run.stdout + run.stderr


@pytest.mark.pipeline
def test_a_bad_value_stops_the_stage_naming_its_key_and_leaves_no_output(tmp_path: Path) -> None:
    root = tiny_repo(tmp_path / "repo")
    write_params(root, with_overrides(read_params(root / "params.yaml"), {"data.synthetic.n_source_families": 0}))
    run = subprocess.run([sys.executable, "-m", "dvc", "repro", "data"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode != 0
    assert "data.synthetic.n_source_families: Input should be greater than or equal to 1, got 0" in run.stdout + run.stderr
    assert not (root / "data" / "prepared").exists() and not (root / "metrics" / "data.json").exists()
