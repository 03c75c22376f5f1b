"""The benchmarks: their shared helpers' pure parts (overrides as dvc exp run -S applies them, the figures'
text), every recipe of benchmarks/recipes.yaml a valid pretraining spec (a typo would silently study
nothing), the reference loop the same as lightly's example, and every script's ``--smoke`` mode.

The scripts import their sibling modules (``common``, ``reference_loop``) by name, as Python finds them when
it runs ``python benchmarks/<name>.py``; :func:`load` imports them by path, siblings first, so that nothing
is added to ``sys.path``. The smoke runs start the scripts exactly so, in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from tempfile import TemporaryDirectory
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from retailnb.config.evaluate import EvaluateStageSpec
from retailnb.config.overrides import apply_overrides, set_key
from retailnb.config.params_file import read_params
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.stages import spec_from_params

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SIBLINGS = ("common", "reference_loop")
"""The benchmarks' shared modules, in the order they import each other."""


def load(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``name`` (importlib's recipe for a source file), its siblings first."""
    path = BENCHMARKS / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    for sibling in SIBLINGS[: SIBLINGS.index(name) if name in SIBLINGS else None]:
        load(sibling)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def smoke(script: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run ``python benchmarks/<script>.py --smoke ARGS`` as a user would; its output (it must succeed)."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_no_benchmark_edits_sys_path() -> None:
    """The package is installed and Python puts benchmarks/ on the path of a script it runs."""
    for path in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("*.sh")]:
        text = path.read_text()
        assert not any(edit in text for edit in ("sys.path.", "sys.path[", "PYTHONPATH")), path.name


def test_every_recipe_is_a_valid_spec_that_differs_from_the_defaults_as_it_says() -> None:
    load_recipes = load("recipe_study").load_recipes
    params = read_params(REPO / "params.yaml")
    variant = params["noisy"]["teacher_variant"]
    default = spec_from_params(PretrainStageSpec, params, variant)
    recipes = load_recipes(BENCHMARKS / "recipes.yaml")
    assert len(recipes) >= 4
    for name, overrides in recipes.items():
        assert all(isinstance(o, str) and "=" in o for o in overrides), name
        spec = spec_from_params(PretrainStageSpec, apply_overrides(params, overrides), variant)
        assert spec != default or not overrides, f"{name} changes nothing"  # an empty recipe: the defaults
        for override in overrides:  # each value lands in the spec section it names
            key, _, text = override.partition("=")
            section, *rest = key.removeprefix("pretrain.").split(".")
            if section == "variants":
                section, rest = "variant", rest[1:]
            value = getattr(getattr(spec, section), rest[-1])
            assert str(value) == str(yaml.safe_load(text)), (name, override, value)


def test_paired_text_says_no_difference_when_the_interval_holds_zero() -> None:
    paired_text = load("common").paired_text
    assert "no difference measured" in paired_text([0.30, 0.20, 0.25], [0.25, 0.24, 0.22])
    assert "above 0" in paired_text([0.30, 0.31, 0.32], [0.20, 0.20, 0.21])
    assert "one seed" in paired_text([0.3], [0.2])


def test_the_smoke_overrides_are_keys_of_params_yaml() -> None:
    common = load("common")
    params = read_params(REPO / "params.yaml")
    for key, value in {**common.ONE_EPOCH, **common.SMOKE_PIPELINE}.items():
        set_key(params, key, value)
    spec_from_params(EvaluateStageSpec, params, "prepared")  # still a valid spec
    assert common.smoke_params(read_params(REPO / "params.yaml")) == params
    with pytest.raises(KeyError, match="pretrain.engine.epoch"):
        set_key(params, "pretrain.engine.epoch", 1)


def test_the_reference_loop_is_lightlys_example_step_for_step() -> None:
    """lightly's example written out (forward both views, NT-Xent, backward, step, zero_grad) against the
    reference loop on the same seeds and batches: the same losses and weights, across an epoch's end."""
    import torch
    from torch.utils.data import DataLoader

    common, ref = load("common"), load("reference_loop")
    images = common.random_images(24, 40)  # 3 batches an epoch

    def loader() -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        return DataLoader(ref.ReferenceViews(images, 32), batch_size=8, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))

    torch.manual_seed(0)
    expected, data = ref.timm_simclr("test_resnet"), loader()
    criterion, optimizer = ref.PLAIN_RECIPE.criterion(), ref.PLAIN_RECIPE.optimizer(expected)
    losses: list[float] = []
    while len(losses) < 5:
        expected.train()
        for x0, x1 in data:
            loss = criterion(expected(x0), expected(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if len(losses) == 5:
                break

    torch.manual_seed(0)
    model = ref.timm_simclr("test_resnet")
    steps = ref.reference_loop(model, loader(), ref.PLAIN_RECIPE)
    got = [next(steps) for _ in range(5)]
    steps.close()
    assert [s.out.item() for s in got] == losses
    assert [s.epoch for s in got] == [0, 0, 0, 1, 1] and [s.index for s in got] == list(range(5))
    assert all(s.seconds >= s.compute > 0 and s.cpu > 0 for s in got)
    for a, b in zip(expected.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_step_loop_refuses_a_loader_without_batches() -> None:
    with pytest.raises(ValueError, match="no batch"):
        next(load("common").timed_steps([], lambda batch: None))


@pytest.mark.pipeline
def test_the_device_check_runs_its_throughput_comparison_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU check cannot run here; its smoke mode keeps the script from rotting between GPU sessions."""
    load("device_check").main(["--device", "cpu", "--smoke", "--skip-pipeline"])
    out = capsys.readouterr().out
    assert "(a) plain lightly loop" in out and "(b) retailnb engine" in out and "ratio (b)/(a)" in out


def test_the_device_check_script_is_what_its_shell_wrapper_runs() -> None:
    script = (BENCHMARKS / "device_check.sh").read_text()
    assert "python benchmarks/device_check.py --device cuda" in script
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "device_check.sh")]).returncode == 0


def test_stage_seconds_reads_the_stamped_dvc_log() -> None:
    stage_seconds = load("common").stage_seconds
    log = "[0.5] Running stage 'data':\n[3.0] x\n[4.5] Running stage 'pretrain@simclr-0':\n[10.0] done"
    assert stage_seconds(log) == [("data", 4.0), ("pretrain@simclr-0", 5.5)]


@pytest.mark.pipeline
def test_the_scale_benchmark_runs_every_configuration_in_smoke_mode(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Two sizes 10x apart, in memory and on disk, each in its own process; both give the same pseudolabels."""
    rows = load("bench_scale").main(["--smoke", "--work", str(tmp_path), "--out", str(tmp_path / "scale.json")])
    assert sorted((r["images"], r["storage"]) for r in rows) == [(12, "disk"), (12, "memory"), (120, "disk"),
                                                                 (120, "memory")]
    assert all(r["peak_rss_mib"] > 0 and r["train_images_per_second"] > 0 and r["pseudolabel_ms_per_image"] > 0
               for r in rows)
    out = capsys.readouterr().out
    assert "disk peak memory" in out and "DIFFER" not in out and out.count("pseudolabels identical") == 2
    assert len(list((tmp_path / ".cache" / "images").glob("*.npy"))) == 2  # one cache per set, reused


@pytest.mark.pipeline
@pytest.mark.parametrize(("script", "args", "figures"), [
    ("bench_pretrain", (), ["(a) reference, lightly, 0 workers", "(d) ours, BatchViews in 1 worker",
                            "ratio (c) ours/(a)"]),
    ("bench_features", (), ["extract_features", "bare forward fp32 chan_last", "logistic probe"]),
    ("bench_new_products", (), ["end to end: best", "predict from JPEG files", "ratio:"]),
    ("bench_synthetic", (), ["32 px  generate default config", "img/s per core"]),
    ("bench_pipeline", (), ["stage                              seconds", "\ncheck ", "\nevaluate@prepared-0 ",
                            "\nnew_products ", "dvc repro from a fresh clone", "dvc repro with nothing changed"]),
])
def test_a_benchmarks_smoke_mode_prints_its_figures(script: str, args: tuple[str, ...], figures: list[str]) -> None:
    out = smoke(script, *args)
    for figure in figures:
        assert figure in out, (script, figure, out)


@pytest.mark.pipeline
def test_the_transfer_benchmark_and_the_recipe_study_run_in_smoke_mode(tmp_path: Path) -> None:
    """Both pretrain retailnb on tiny synthetic data; the transfer benchmark trains the reference loop against
    it for the same budget, the recipe study writes its results in the work folder, not in benchmarks/results."""
    out = smoke("bench_transfer", "--work", str(tmp_path / "transfer"), "--out", str(tmp_path / "transfer.json"))
    assert "| retailnb |" in out and "| plain |" in out and "retailnb minus plain" in out
    assert set(yaml.safe_load((tmp_path / "transfer.json").read_text())["rows"]) == {"retailnb", "plain"}
    out = smoke("recipe_study", "--work", str(tmp_path / "recipes"))
    first = next(iter(load("recipe_study").load_recipes(BENCHMARKS / "recipes.yaml")))
    assert f"| {first} | 1 |" in out
    assert (tmp_path / "recipes" / "recipe_study_smoke.json").is_file()


def installed_by_pip_install_dot() -> set[str]:
    """The distributions ``pip install .`` installs: the package's own dependencies, theirs, and so on (no extras)."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def applies(requirement: Requirement, extras: set[str]) -> bool:
        """Whether a requirement of a distribution installed with ``extras`` is installed with it."""
        marker = requirement.marker
        return marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras})

    wanted = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen = {"retailnb"}
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in seen and not requirement.extras:
            continue
        seen.add(name)
        try:
            wanted += [r for r in map(Requirement, metadata.requires(requirement.name) or [])
                       if applies(r, requirement.extras)]
        except metadata.PackageNotFoundError:  # not installed here: nothing of it to allow
            continue
    return seen


BLOCKER = """\
import sys
sys.modules.update(dict.fromkeys({blocked!r}))  # None: `import` fails, importlib.util.find_spec answers None
"""
"""A ``sitecustomize`` that makes every module ``pip install .`` would not install absent, as there."""


def package_only_env(folder: Path) -> dict[str, str]:
    """An environment whose Python processes (and their children) import only what ``pip install .`` installs."""
    import os
    from importlib import metadata

    from packaging.utils import canonicalize_name

    allowed = installed_by_pip_install_dot()
    blocked = sorted(module for module, dists in metadata.packages_distributions().items()
                     if not module.startswith("_") and not {canonicalize_name(d) for d in dists} & allowed)
    assert {"ruamel", "dvc", "papermill", "lightly", "matplotlib", "pytest"} <= set(blocked), blocked
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER.format(blocked=blocked))
    return {**os.environ, "PYTHONPATH": str(folder)}


def test_the_package_only_environment_refuses_the_pipelines_packages(tmp_path: Path) -> None:
    """The environment the CLI benchmark runs in below: the pipeline's packages fail to import, torch does not."""
    env = package_only_env(tmp_path / "site")
    for module, status in (("ruamel.yaml", 1), ("dvc", 1), ("papermill", 1), ("torch", 0), ("timm", 0)):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert done.returncode == status, (module, done.stderr[-500:])


@pytest.mark.pipeline
def test_the_cli_benchmark_times_every_command_in_smoke_mode(tmp_path: Path) -> None:
    """A tiny bundle built with ``retailnb fit``, then every command in a fresh process: wall time and peak memory.

    It runs where only ``pip install .`` is installed, as CI runs it: no pipeline package is imported.
    """
    out = smoke("bench_cli", env=package_only_env(tmp_path / "site"))
    for figure in ("built ", "--help", "--version", "info, missing bundle", "predict, 12 images", "max RSS MiB"):
        assert figure in out, (figure, out)
    assert len([line for line in out.splitlines() if line.startswith("info")]) == 2


def test_the_cli_benchmark_measures_the_commands_own_memory() -> None:
    """Each command is started by a small process of its own, so its peak memory is not this one's (torch loaded)."""
    seconds, rss, status, err = load("bench_cli").run(["--version"])
    assert status == 0 and err == "" and seconds > 0
    assert 0 < rss < 200, rss


@pytest.mark.pipeline
def test_the_rejection_benchmark_measures_every_score_in_smoke_mode(tmp_path: Path) -> None:
    """A tiny pipeline's main backbone and last noisy round: every score, the two that use negatives with
    them and the one that needs them, in the printed table and the JSON it writes."""
    from retailnb.config.score_names import BACKGROUND_SCORES, NEGATIVE_SCORES, SCORES

    out = smoke("bench_rejection", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "rejection"),
                "--recalls", "0.5", "0.95", "1")
    results = json.loads((tmp_path / "rejection.json").read_text())
    rows = results["datasets"]["synthetic"]
    assert set(rows) == {"main", "student"}
    for backbone in rows.values():
        assert set(backbone) == {*SCORES, *(f"{s}+neg" for s in NEGATIVE_SCORES), *BACKGROUND_SCORES}
        assert all(len(values) == 1 for cells in backbone.values() for values in cells.values())  # one seed
        # the held-out products measured apart by brand family: siblings of enrolled products, or new families
        assert all({"sibling_auroc", "new_group_auroc"} & set(cells) for cells in backbone.values())
    assert "| main | relative_mahalanobis |" in out and "| student | knn+neg |" in out
    assert "| main | background |" in out
    assert (tmp_path / "rejection.md").read_text().startswith("Unknown-product rejection; seeds [0]")
    # the trade-off: the bundle's default score, alone and with the negatives, and background, at every recall
    assert results["params"]["recall"] == 0.95 and results["tradeoff_scores"] == ["prototype", "background"]
    costs = results["tradeoff"]["synthetic"]
    for backbone, scores in costs.items():
        assert set(scores) == {"prototype", "prototype+neg", "background"}
        for score, recalls in scores.items():
            assert list(recalls) == ["0.5", "0.95", "1"]
            # at the protocol's recall it is the main table's row, measure for measure
            assert {m: recalls["0.95"][m] for m in ("unknown_rejection", "known_acceptance", "accuracy_drop")} == {
                m: rows[backbone][score][m] for m in ("unknown_rejection", "known_acceptance", "accuracy_drop")}
            accepted = [recalls[r]["known_acceptance"][0] for r in recalls]
            rejected = [recalls[r]["unknown_rejection"][0] for r in recalls]
            drops = [recalls[r]["accuracy_drop"][0] for r in recalls]
            # a higher recall lowers the threshold: more known and unknown images pass, less accuracy is lost
            assert accepted == sorted(accepted) and rejected == sorted(rejected, reverse=True), (accepted, rejected)
            assert drops == sorted(drops, reverse=True) and accepted[0] < accepted[-1], (drops, accepted)
    assert "### synthetic: the threshold's recall against what it costs (prototype, background)" in out
    assert "| student | prototype+neg | 0.5 |" in out


@pytest.mark.pipeline
def test_the_budget_study_applies_each_configuration_and_reports_its_ratio(tmp_path: Path) -> None:
    """Two configurations of a tiny run: each override changes what it says (two noisy rounds instead of
    one), every ratio is the probe over finetuning, and the table and figure are written beside the JSON; a
    configuration that changes only finetuning shares the noisy student's rounds; a rerun measures nothing
    again."""
    configs = tmp_path / "budget.yaml"
    configs.write_text("configs:\n  default: []\n  two_rounds: [noisy.rounds=2]\n"
                       "  tuned: [\"evaluate.finetune.lrs=[0.01]\"]\n")
    args = ("--work", str(tmp_path / "work"), "--configs-file", str(configs), "--configs", "default", "two_rounds",
            "tuned", "--out", str(tmp_path / "budget.json"))
    smoke("budget_study", *args)
    results = {r["config"]: r for r in json.loads((tmp_path / "budget.json").read_text())}
    assert set(results) == {"default", "two_rounds", "tuned"}
    assert results["default"]["rounds"] == ["noisy_round_1"]
    assert results["two_rounds"]["rounds"] == ["noisy_round_1", "noisy_round_2"]
    assert results["two_rounds"]["overrides"] == ["noisy.rounds=2"]
    # the same pretraining (and so the same main backbone and finetuning baseline) is trained once
    default, two = results["default"], results["two_rounds"]
    assert two["pretrain_minutes"] == default["pretrain_minutes"] and two["finetune_accuracy"] == default["finetune_accuracy"]
    assert two["probes"][two["main"]] == default["probes"][default["main"]]
    assert len(list((tmp_path / "work" / "runs" / "pretrain").iterdir())) == 1
    # the same noisy student too (only finetuning changes): its rounds are trained once, their minutes shared
    tuned = results["tuned"]
    assert (tuned["noisy_minutes"], tuned["noisy_images"]) == (default["noisy_minutes"], default["noisy_images"])
    assert tuned["probes"] == default["probes"]
    pretrain_root = next((tmp_path / "work" / "runs" / "pretrain").iterdir())
    assert len(list(pretrain_root.glob("noisy-*"))) == 2  # default's and two_rounds'
    study = load("budget_study")
    for row in results.values():
        assert set(row["probes"]) == {row["main"], *row["rounds"]}
        assert all(set(probes) == set(study.LEVERS) for probes in row["probes"].values())
        assert study.ratios(row, row["main"]) == row["probes"][row["main"]]["probe"] / row["finetune_accuracy"]
        assert row["pretrain_images"] > 0 and row["noisy_images"] > 0
    table = (tmp_path / "budget.md").read_text()
    assert "| default | 1 |" in table and "| two_rounds | 1 |" in table
    rounds = table[table.index("| configuration | main | round 1 | round 2 |"):].splitlines()
    assert rounds[2].startswith("| default |") and rounds[2].endswith(" | – |")  # one round: no second
    two_ratios = [study.ratios(two, b) for b in (two["main"], *two["rounds"])]
    assert rounds[3] == "| two_rounds | " + " | ".join(f"{r:.3f}" for r in two_ratios) + " | – |"  # no trend: < 4 rounds
    assert (tmp_path / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = smoke("budget_study", *args)
    assert " seed 0: ratio" not in again  # both were measured: nothing runs again


@pytest.mark.pipeline
def test_the_budget_studys_work_folder_trains_afresh_after_an_edit_of_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The work folder keeps each pretraining (with its noisy student and finetuning) under a key that holds
    the package's code: a new results file over the same folder reuses it under the same code, and trains
    afresh under another (an edit of ``retailnb/``), as the pipeline's own training states do."""
    import retailnb.train.engine as engine

    study = load("budget_study")
    configs = tmp_path / "budget.yaml"
    configs.write_text("configs:\n  default: []\n")

    def run(name: str) -> dict[str, Any]:
        out = tmp_path / f"{name}.json"
        study.main(["--smoke", "--work", str(tmp_path / "work"), "--configs-file", str(configs), "--out", str(out)])
        return json.loads(out.read_text())[0]

    def pretrained() -> list[str]:
        return sorted(path.name for path in (tmp_path / "work" / "runs" / "pretrain").iterdir())

    first = run("first")
    folders = pretrained()
    assert run("same_code")["pretrain_minutes"] == first["pretrain_minutes"] and pretrained() == folders
    monkeypatch.setattr(engine, "code_digest", lambda: "another version of the package")
    edited = run("edited")
    assert edited["pretrain_minutes"] != first["pretrain_minutes"]
    assert len(pretrained()) == 2 and set(folders) < set(pretrained())


def test_the_budget_study_will_not_pair_runs_of_two_cpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A results file made on another CPU (or one that did not record its CPU) gets no new rows: the two
    machines' runs differ from the first epoch, so a row paired with or sharing the other's pretraining
    would be wrong. The study stops before it trains anything and leaves the file as it was."""
    study = load("budget_study")
    assert "torch" in study.cpu_fingerprint() and study.cpu_fingerprint() == study.cpu_fingerprint()
    configs = tmp_path / "budget.yaml"
    configs.write_text("configs:\n  default: []\n")
    out = tmp_path / "budget.json"
    # seed 1 of the default, made elsewhere; the smoke run asks for seed 0, which the file does not hold
    made_elsewhere = {"config": "default", "seed": 1, "overrides": [], "cpu": "another CPU; torch 0, DEFAULT"}
    out.write_text(json.dumps([made_elsewhere]))
    args = ["--smoke", "--work", str(tmp_path / "work"), "--configs-file", str(configs), "--out", str(out)]
    with pytest.raises(SystemExit) as stopped:
        study.main(args)
    assert stopped.value.code == 2
    message = capsys.readouterr().err
    assert str(out) in message and "another CPU; torch 0, DEFAULT" in message and study.cpu_fingerprint() in message
    assert json.loads(out.read_text()) == [made_elsewhere] and not (tmp_path / "work" / "runs").exists()


@pytest.mark.parametrize(("name", "target"), [("synthetic", "synthetic"), ("grocery", "grocery"),
                                             ("grocery_levers", "grocery")])
def test_the_committed_budget_table_is_the_one_its_json_gives(name: str, target: str, tmp_path: Path) -> None:
    """``benchmarks/results/budget_<name>.md`` (which the docs show) is what ``--render`` writes from the
    committed JSON: the table cannot drift from the results."""
    results = REPO / "benchmarks" / "results" / f"budget_{name}.json"
    copy = tmp_path / results.name
    copy.write_text(results.read_text())
    load("budget_study").main(["--render", "--target", target, "--out", str(copy)])
    assert copy.with_suffix(".md").read_text() == results.with_suffix(".md").read_text()
    assert copy.with_suffix(".png").stat().st_size > 10_000


def levers_module() -> ModuleType:
    load("bench_rejection")  # the study's sibling: imported by name, as when the script runs
    return load("rejection_levers")


def test_the_rejection_levers_study_measures_each_lever_in_smoke_mode(tmp_path: Path) -> None:
    """Every lever of the smoke run measures every score on both backbones, and each changes what it measures:
    flip and layers the features of the same backbones, enrolled the backbones themselves; enrolled_split trains
    without its calibration share."""
    from retailnb.data.manifest import read_manifest

    out = smoke("rejection_levers", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "levers"))
    results = json.loads((tmp_path / "levers.json").read_text())
    assert results["target"] == "synthetic" and results["seeds"] == [0]
    levers = results["levers"]
    assert list(levers) == ["default", "flip", "layers", "colour", "colour_only", "enrolled", "enrolled_split"]
    for backbones in levers.values():
        assert set(backbones) == {"main", "student"}
        for scores in backbones.values():
            assert set(scores) == {"prototype", "knn", "mahalanobis", "prototype+neg", "knn+neg", "background"}
            assert all(len(values) == 1 for cells in scores.values() for values in cells.values())
    for lever in ("flip", "layers", "colour", "colour_only", "enrolled", "enrolled_split"):
        assert levers[lever]["student"]["prototype"]["auroc"] != levers["default"]["student"]["prototype"]["auroc"]
    # the histogram alone does not depend on the backbone; beside the backbone's features it does
    assert levers["colour_only"]["main"] == levers["colour_only"]["student"]
    assert levers["colour"]["main"] != levers["colour"]["student"]
    # the enrolled products' photos joined the pretraining data: a manifest per seed and split, then its backbones
    manifests = sorted((tmp_path / "work" / "enrolled").glob("seed0-*/manifest.csv"), key=lambda m: m.stat().st_size)
    assert len(manifests) == 2 and all(list(m.parent.glob("seed0-*/noisy/round_*/backbone.pt")) for m in manifests)
    split, enrolled = ({r.path for r in read_manifest(m).select("labelled")} for m in manifests)
    assert split < enrolled  # the split's training photos: the enrolled ones less its calibration share
    assert "| enrolled | background |" in out and "Paired with `default`" in out
    assert (tmp_path / "levers.md").read_text().startswith("Rejection levers on the synthetic target; seeds [0]")


def test_each_training_lever_changes_the_setting_it_names() -> None:
    levers = levers_module()
    params = read_params(REPO / "params.yaml")
    assert params["backbone"]["image_size"] == 64 and params["noisy"]["rounds"] == 2
    size, rounds = levers.lever_params("size_96", params), levers.lever_params("rounds_4", params)
    assert size["backbone"]["image_size"] == 96 and type(size["backbone"]["image_size"]) is int
    assert rounds["noisy"]["rounds"] == 4 and type(rounds["noisy"]["rounds"]) is int
    assert levers.lever_params("flip", params) == params and set(levers.TRAINING) <= set(levers.LEVERS)


def test_the_feature_levers_mirror_and_stack_what_they_say() -> None:
    import torch

    from retailnb.models.backbone import create_backbone
    from retailnb.models.checkpoint import save_backbone

    levers = levers_module()
    with TemporaryDirectory() as folder:
        path = Path(folder) / "backbone.pt"
        torch.manual_seed(0)
        save_backbone(path, create_backbone("resnet10t"))
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
        mirrored = np.ascontiguousarray(images[:, :, ::-1])
        plain = levers.lever_features("default", path, "resnet10t", images)
        flip = levers.lever_features("flip", path, "resnet10t", images)
        np.testing.assert_allclose(flip, (plain + levers.lever_features("default", path, "resnet10t", mirrored)) / 2,
                                   rtol=1e-5, atol=1e-6)
        assert not np.allclose(flip, plain)
        symmetric = np.concatenate([images[:, :, :16], images[:, :, :16][:, :, ::-1]], axis=2)
        np.testing.assert_allclose(levers.lever_features("flip", path, "resnet10t", symmetric),
                                   levers.lever_features("default", path, "resnet10t", symmetric), rtol=1e-4, atol=1e-5)
        stacked = levers.lever_features("layers", path, "resnet10t", images)
        assert stacked.shape == (4, 256 + 512)  # the third and fourth stages' widths
        np.testing.assert_allclose(np.linalg.norm(stacked[:, :256], axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(stacked[:, 256:], axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(stacked[:, 256:], plain / np.linalg.norm(plain, axis=1, keepdims=True), rtol=1e-4,
                                   atol=1e-6)  # the last stage's part is the default features, unit length


def test_the_enrolled_lever_adds_only_the_enrolled_products_photos_as_labelled(tmp_path: Path) -> None:
    from retailnb.data.manifest import ManifestRow, read_manifest, write_manifest

    levers = levers_module()
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"")
    def row(path: str, label: int, name: str, role: str) -> ManifestRow:
        return ManifestRow(path=path, label=label, class_name=name, split="train", role=role, domain="shelf",
                           group=name)
    source = write_manifest([row(str(tmp_path / "a.png"), 0, "jam", "labelled"),
                             row(str(tmp_path / "a.png"), 0, "jam", "unlabelled")], tmp_path / "src" / "manifest.csv")
    target = write_manifest([row(str(tmp_path / "b.png"), 1, "milk", "probe_train"),
                             row(str(tmp_path / "b.png"), 1, "milk", "probe_test"),
                             row(str(tmp_path / "c.png"), 2, "oats", "probe_train"),
                             row(str(tmp_path / "c.png"), 2, "oats", "unlabelled")], tmp_path / "tgt" / "manifest.csv")
    merged = read_manifest(levers.enrolled_manifest(levers.Target(source, target, synthetic=False), ["milk"],
                                                    tmp_path / "deep" / "er" / "out"))
    assert [(r.class_name, r.role) for r in merged.records] == [("jam", "labelled"), ("jam", "unlabelled"),
                                                                ("milk", "labelled")]
    assert [merged.resolve(r).name for r in merged.records] == ["a.png", "a.png", "b.png"]
    assert all(merged.resolve(r).is_file() for r in merged.records)
    held = read_manifest(levers.enrolled_manifest(levers.Target(source, target, synthetic=False), ["milk", "oats"],
                                                  tmp_path / "held", held=[read_manifest(target).records[0].path]))
    assert [(r.class_name, r.role) for r in held.records][2:] == [("oats", "labelled")]  # milk's photo held back


def test_the_calibration_share_is_whole_look_alike_groups_of_the_known_products() -> None:
    levers = levers_module()
    rng = np.random.default_rng(0)
    # 4 products, each photographed in 9 sessions of 3 near-copies (a session: one colour and pattern)
    sessions = rng.integers(0, 256, size=(4, 9, 1, 16, 16, 3))
    images = np.clip(sessions + rng.normal(0, 2, size=(4, 9, 3, 16, 16, 3)), 0, 255).astype(np.uint8)
    images, labels = images.reshape(-1, 16, 16, 3), np.repeat(np.arange(4), 27)
    session = np.tile(np.repeat(np.arange(9), 3), 4)
    share = levers.known_share(images, labels, np.array([0, 2, 3]), folds=3, seed=0)
    assert not share[labels == 1].any()  # an unknown product's photos are never enrolled
    for product in (0, 2, 3):
        mine = labels == product
        assert 0 < share[mine].sum() < mine.sum()
        for s in range(9):  # a session's near-copies stay together: all held back or all trained on
            assert len(set(share[mine & (session == s)])) == 1
    assert 0.2 < share[labels != 1].mean() < 0.5
    assert np.array_equal(share, levers.known_share(images, labels, np.array([0, 2, 3]), folds=3, seed=0))


def test_the_split_lever_trains_without_its_calibration_share_and_chooses_the_thresholds_on_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_seed`` hands ``enrolled_split``'s share to both ends: its paths stay out of the backbones' training
    and its mask reaches the measures; the other levers pass neither."""
    from types import SimpleNamespace

    from retailnb.evaluation.rejection import split_known_unknown

    levers = levers_module()
    params = read_params(REPO / "params.yaml")
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(8), 9)
    images = rng.integers(0, 256, size=(len(y_train), 16, 16, 3), dtype=np.uint8)
    data = SimpleNamespace(x_train=images, x_test=images[:8], y_train=y_train, y_test=np.arange(8),
                           classes=[f"p{i}" for i in range(8)],
                           train=[SimpleNamespace(path=f"img{i}.png") for i in range(len(y_train))])
    seen: dict[str, Any] = {}

    def backbones(lever: str, spec: Any, seed: int, target: Any, known: Any, work: Any, held: Any = ()) -> Any:
        seen["held"] = list(held)
        return {"student": Path("unused.pt")}

    def measure(*args: Any, calibrate: Any = None, **kwargs: Any) -> Any:
        seen["calibrate"] = calibrate
        return {}

    monkeypatch.setattr(levers, "lever_backbones", backbones)
    monkeypatch.setattr(levers, "measure", measure)
    monkeypatch.setattr(levers, "lever_features", lambda lever, path, arch, x: np.zeros((len(x), 4)))
    monkeypatch.setattr(levers, "probe_c", lambda f, y, seed: 1.0)
    cache = {params["backbone"]["image_size"]: (data, {}, ["g"] * 8)}
    levers.run_seed("enrolled_split", params, 1, None, Path("unused"), cache)
    spec = params["evaluate"]["rejection"]
    known = split_known_unknown(y_train, float(spec["unknown_fraction"]), 1)[0]
    share = levers.known_share(images, y_train, known, int(spec["folds"]), 1)
    assert share.any() and np.array_equal(seen["calibrate"], share)
    assert seen["held"] == [f"img{i}.png" for i in np.flatnonzero(share)]
    levers.run_seed("enrolled", params, 1, None, Path("unused"), cache)
    assert seen["calibrate"] is None and seen["held"] == []


def test_the_rejection_levers_study_needs_the_grocery_data_unless_smoke(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=f"no Grocery Store Dataset at {tmp_path}"):
        levers_module().main(["--grocery", str(tmp_path), "--work", str(tmp_path / "work")])


def test_the_committed_rejection_table_is_the_one_its_json_gives(tmp_path: Path) -> None:
    """``benchmarks/results/rejection.md`` is what ``--render`` writes from the committed JSON (its heading's
    seeds and protocol included), and ``--render`` without results names the file it looked for."""
    results = REPO / "benchmarks" / "results" / "rejection.json"
    copy = tmp_path / results.name
    copy.write_text(results.read_text())
    load("bench_rejection").main(["--render", "--out", str(copy.with_suffix(""))])
    assert copy.with_suffix(".md").read_text() == results.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match=str(tmp_path / "absent.json")):
        load("bench_rejection").main(["--render", "--out", str(tmp_path / "absent")])
    assert not (tmp_path / "absent.md").exists()


def committed_levers(name: str, tmp_path: Path) -> tuple[ModuleType, dict[str, Any]]:
    """The levers study and its committed ``benchmarks/results/<name>.json``, after checking that the committed
    ``.md`` is what ``--render`` writes from it and that it measured the Grocery target over three seeds."""
    results = REPO / "benchmarks" / "results" / f"{name}.json"
    copy = tmp_path / results.name
    copy.write_text(results.read_text())
    levers = levers_module()
    levers.main(["--render", "--out", str(copy.with_suffix(""))])
    assert copy.with_suffix(".md").read_text() == results.with_suffix(".md").read_text()
    committed = json.loads(results.read_text())
    assert committed["target"] == "grocery_disjoint" and len(committed["seeds"]) == 3
    return levers, committed


def test_the_committed_colour_levers_table_is_the_one_its_json_gives(tmp_path: Path) -> None:
    """``benchmarks/results/rejection_colour.md`` (the colour levers, with their own run's default) is what
    ``--render`` writes from the committed JSON, measured on the Grocery target over three seeds."""
    levers, committed = committed_levers("rejection_colour", tmp_path)
    assert list(committed["levers"]) == ["default", *levers.COLOUR_LEVERS]


def test_the_colour_histogram_is_a_unit_length_histogram_of_the_centre() -> None:
    """Each row is the square root of a distribution over the hue-saturation-value bins (unit length), made of
    the image's central half only: a border of another colour leaves it as it was."""
    levers = levers_module()
    red = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    red[..., 0] = 200
    framed = np.full_like(red, 255)
    framed[:, 4:12, 4:12] = red[:, 4:12, 4:12]
    blue = red[..., ::-1].copy()
    h = levers.colour_histogram(np.concatenate([red, framed, blue]))
    assert h.shape == (3, int(np.prod(levers.COLOUR_BINS))) and h.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(h[0], h[1])
    assert float(h[0] @ h[2]) == 0.0  # pure red and pure blue share no bin


def test_the_committed_rejection_levers_table_is_the_one_its_json_gives(tmp_path: Path) -> None:
    """``benchmarks/results/rejection_levers.md`` is what ``--render`` writes from the committed JSON, and the
    committed study measured every lever on the Grocery target over three seeds."""
    levers, committed = committed_levers("rejection_levers", tmp_path)
    assert list(committed["levers"]) == [lever for lever in levers.LEVERS if lever not in levers.COLOUR_LEVERS]
    with pytest.raises(SystemExit, match=str(tmp_path / "absent.json")):
        levers.main(["--render", "--out", str(tmp_path / "absent")])
