"""params.yaml overrides (``dvc exp run -S``) and the recipes of ``recipes/``: what they set, as DVC sets it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

from retailnb.config.overrides import Recipe, apply_overrides, read_recipe
from retailnb.config.params_file import ParamsError, lookup, read_params
from retailnb.config.stages import STAGES, spec_from_params
from retailnb.stages.check import STAGE_SPECS, problems

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_overrides_take_their_yaml_types_and_leave_the_input_alone() -> None:
    params = read_params(PARAMS)
    before = repr(params)
    out = apply_overrides(params, ["pretrain.engine.lr=0.06", "pretrain.views.hflip_p=0.5",
                                   "backbone.architecture=resnet18", "noisy.rounds=8", "pretrain.views.on=true"])
    assert out["pretrain"]["engine"]["lr"] == 0.06 and isinstance(out["pretrain"]["engine"]["lr"], float)
    assert out["noisy"]["rounds"] == 8 and type(out["noisy"]["rounds"]) is int
    assert out["backbone"]["architecture"] == "resnet18"
    assert out["pretrain"]["views"]["on"] is True
    assert repr(params) == before


@pytest.mark.parametrize(("item", "words"), [("pretrain.engine.lrate=1", "no 'pretrain.engine.lrate'"),
                                             ("pretrain.engine.lr", "expected key.path=value"),
                                             ("nothing.here=1", "no 'nothing.here'"),
                                             ("pretrain.engine.lr.x=1", "no 'pretrain.engine.lr.x'"),
                                             ("noisy.rounds=[1", "not YAML")])
def test_a_bad_override_is_named(item: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        apply_overrides(read_params(PARAMS), [item])


def test_a_new_variant_may_be_added_by_override() -> None:
    params = apply_overrides(read_params(PARAMS), ["pretrain.variants.simsiam={simsiam_weight: 1.0}"])
    assert params["pretrain"]["variants"]["simsiam"] == {"simsiam_weight": 1.0}


# --- recipes -------------------------------------------------------------------------------------


def spec_value(params: dict[str, Any], key: str) -> list[Any]:
    """The value every stage's spec built from ``params`` holds at the params key path ``key``."""
    found = []
    for spec in STAGE_SPECS:
        entry = STAGES[spec.stage]
        loop = list(lookup(params, entry.foreach, file=PARAMS)) if entry.foreach else [None]
        for name in loop:
            for field, path in entry.key_paths(name).items():
                if key == path or key.startswith(path + "."):
                    node: Any = getattr(spec_from_params(spec, params, name), field)
                    for part in key.removeprefix(path).strip(".").split(".") if key != path else []:
                        node = getattr(node, part)
                    found.append(node)
    return found


def test_there_is_a_recipe() -> None:
    assert RECIPES, "recipes/ holds no recipe"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_recipe_sets_what_dvc_exp_run_sets_and_each_stage_reads_it(path: Path, tmp_path: Path) -> None:
    recipe = read_recipe(path, PARAMS)
    ours = apply_overrides(read_params(PARAMS), list(recipe.overrides))
    copy = tmp_path / "params.yaml"
    shutil.copy(PARAMS, copy)
    dvc_apply_overrides(copy, list(recipe.overrides))  # what `dvc exp run -S` does to params.yaml
    assert read_params(copy) == ours
    assert problems(ours) == []
    for item in recipe.overrides:
        key, _, _ = item.partition("=")
        value = lookup(ours, key, file=copy)
        seen = spec_value(ours, key)
        assert seen, f"{path.name}: no stage reads {key}"
        assert all(v == value and type(v) is type(value) for v in seen), (key, value, seen)
        assert all(v != default for v in seen for default in spec_value(read_params(PARAMS), key)), \
            f"{path.name}: {item} is the default: it changes nothing"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_recipe_is_a_configuration_its_study_measured_on_three_seeds(path: Path) -> None:
    recipe = read_recipe(path, PARAMS)
    study = json.loads((REPO / recipe.study).read_text())
    runs = [r for r in study if r["config"] == recipe.config]
    assert sorted(r["seed"] for r in runs) == [0, 1, 2], f"{recipe.study} lacks seeds of {recipe.config}"
    assert all(r["overrides"] == list(recipe.overrides) for r in runs)


def last_round_ratio(run: dict[str, Any]) -> float:
    """A budget-study run's probe/finetune ratio after its last noisy round (the main backbone without one)."""
    backbone = run["rounds"][-1] if run["rounds"] else run["main"]
    return float(run["probes"][backbone]["probe"]) / float(run["finetune_accuracy"])


def test_the_more_time_recipe_is_the_best_configuration_its_study_measured() -> None:
    recipe = read_recipe(REPO / "recipes" / "more_time.yaml", PARAMS)
    study = json.loads((REPO / recipe.study).read_text())
    means = {config: sum(last_round_ratio(r) for r in runs) / len(runs)
             for config in {r["config"] for r in study}
             if len(runs := [r for r in study if r["config"] == config]) >= 3}
    assert max(means, key=means.__getitem__) == recipe.config, means


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


RECIPE = "description: more rounds\nstudy: s.json\nconfig: rounds_8\noverrides: [noisy.rounds=8]\n"


def test_the_command_prints_the_dvc_options(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", RECIPE)
    out = subprocess.run([sys.executable, "-m", "retailnb.config.overrides", str(recipe), "--params", str(PARAMS)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["-S", "noisy.rounds=8"]
    assert read_recipe(recipe, PARAMS) == Recipe(recipe, "more rounds", "s.json", "rounds_8", ("noisy.rounds=8",))


@pytest.mark.parametrize(("text", "words"), [
    (RECIPE.replace("noisy.rounds=8", "noisy.round=8"), "params.yaml has no 'noisy.round'"),
    (RECIPE.replace("noisy.rounds=8", "noisy.rounds=8.5"), "holds an integer at noisy.rounds, the recipe gives a number"),
    (RECIPE.replace("noisy.rounds=8", "noisy.pseudo.balance=1"), "holds a boolean at noisy.pseudo.balance"),
    (RECIPE.replace("overrides: [noisy.rounds=8]", "overrides: []"), "non-empty list"),
    (RECIPE.replace("config: rounds_8\n", ""), "config: missing"),
    (RECIPE + "seeds: 3\n", "seeds: unknown key"),
    ("overrides: [", "not valid YAML"),
])
def test_a_bad_recipe_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str, words: str) -> None:
    recipe = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ParamsError, match=words) as error:
        read_recipe(recipe, PARAMS)
    assert str(error.value).startswith(str(recipe))
    out = subprocess.run([sys.executable, "-m", "retailnb.config.overrides", str(recipe), "--params", str(PARAMS)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert str(recipe) in out.stderr
