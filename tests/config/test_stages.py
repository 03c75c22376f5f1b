"""The typed parameter route: bad values stop with one message naming their params.yaml key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from shared_fixtures import REPO, repo_params, with_overrides
from spec_paths import SPECS

from retailnb.config.params_file import ParamsError, read_params
from retailnb.config.data import DataStageSpec
from retailnb.config.evaluate import EvaluateStageSpec
from retailnb.config.noisy import NoisyStageSpec
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.report import ReportStageSpec
from retailnb.config.stages import load_stage

BAD: list[tuple[str, str | None, str, Any, str]] = [
    ("pretrain", "simclr_supcon", "pretrain.sampler.batch_size", 0, "greater than or equal to 2"),
    ("pretrain", "simclr_supcon", "pretrain.model.proj_dim", 0, "greater than or equal to 1"),
    ("pretrain", "simclr_supcon", "pretrain.engine.epochs", 2.5, "valid integer"),
    ("pretrain", "simclr_supcon", "pretrain.model.weights", "None", "must be 'none'"),
    ("pretrain", "simclr_supcon", "pretrain.model.temperature", -1, "greater than 0"),
    ("pretrain", "simclr_supcon", "pretrain.views.on", "gpu", "'batch' or 'worker'"),
    ("pretrain", "simclr_supcon", "pretrain.variants.simclr_supcon.simclr_weight", "1", "valid number"),
    ("pretrain", "simclr_supcon", "pretrain.variants.simclr_supcon.simsiam_weight", -0.5, "greater than or equal to 0"),
    ("pretrain", "simclr_supcon", "pretrain.variants.simclr_supcon",
     {"simclr_weight": 0.0, "supcon_weight": 0.0, "simsiam_weight": 0.0}, "at least one objective"),
    ("pretrain", "simclr_supcon", "pretrain.model.pred_hidden_dim", 0, "greater than or equal to 1"),
    ("noisy", None, "noisy.pseudo.soft", "false", "valid boolean"),
    ("noisy", None, "noisy.pseudo.balance", "true", "valid boolean"),
    ("noisy", None, "noisy.pseudo.threshold", 1.5, "less than or equal to 1"),
    ("noisy", None, "compute.devices", 0, "greater than or equal to 1"),
    ("evaluate", "prepared", "evaluate.probe.shots", "1,five", "YAML list"),
    ("evaluate", "prepared", "evaluate.probe.shots", [1, "five"], "'all'"),
    ("evaluate", "prepared", "evaluate.probe.shots", [0, 5], "greater than or equal to 1"),
    ("evaluate", "prepared", "evaluate.on_overlap", "skip", "'raise' or 'drop'"),
    ("evaluate", "prepared", "evaluate.overlap_distance", 1.0, "less than 1"),
    ("evaluate", "prepared", "evaluate.overlap_distance", -0.01, "greater than or equal to 0"),
    ("evaluate", "prepared", "evaluate.overlap_distance", "0.01", "valid number"),
    ("evaluate", "prepared", "evaluate.finetune.val_fraction", 1.0, "less than 1"),
    ("evaluate", "prepared", "evaluate.finetune.lrs", [], "at least 1 item"),
    ("evaluate", "prepared", "evaluate.finetune.lrs", [0.001, -0.1], "greater than 0"),
    ("evaluate", "prepared", "evaluate.finetune.patience", 0, "greater than or equal to 1"),
    ("evaluate", "prepared", "evaluate.finetune.random_init", "no", "valid boolean"),
    ("evaluate", "prepared", "data.on_error", "ignore", "'raise' or 'skip'"),
    ("new_products", None, "new_products.shots", "1,5", "YAML list"),
    ("new_products", None, "new_products.rejection_score", "softmax", "'mahalanobis' or 'relative_mahalanobis'"),
    ("new_products", None, "evaluate.rejection.recall", "0.5", "valid number"),
    ("new_products", None, "evaluate.rejection.recall", 1.5, "less than or equal to 1"),
    ("data", None, "data.synthetic.n_source_families", 0, "greater than or equal to 1"),
    ("report", None, "report.confidence", 1.0, "less than 1"),
    ("report", None, "evaluate.seeds", [0, 1, 1], "every training seed must be different"),
    ("report", None, "evaluate.seeds", [], "at least 1 item"),
    ("report", None, "evaluate.seeds", [0, -1], "greater than or equal to 0"),
]


def write(tmp_path: Path, params: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    with path.open("w") as fh:
        YAML().dump(params, fh)
    return path


@pytest.mark.parametrize(("stage", "key", "path", "value", "why"), BAD, ids=[f"{b[2]}={b[3]!r}" for b in BAD])
def test_a_bad_value_names_its_key_path_and_value(tmp_path: Path, stage: str, key: str | None, path: str,
                                                  value: Any, why: str) -> None:
    params_file = write(tmp_path, with_overrides(repo_params(), {path: value}))
    with pytest.raises(ParamsError) as error:
        load_stage(SPECS[stage], params_file, key)
    message = str(error.value)
    assert str(params_file) in message and f"{path}" in message and why in message, message


@pytest.mark.parametrize("value", [5, "all"])
def test_a_single_shot_count_is_a_list_of_one(tmp_path: Path, value: Any) -> None:
    params_file = write(tmp_path, with_overrides(repo_params(), {"evaluate.probe.shots": value}))
    assert load_stage(EvaluateStageSpec, params_file, "prepared").probe.shots == [value]


def test_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    params = repo_params()
    params["pretrain"]["epochs"] = 3  # a typo of pretrain.engine.epochs
    params["noisy"]["pseudo"]["sofft"] = True
    with pytest.raises(ParamsError, match=r"pretrain\.epochs: unknown key"):
        load_stage(PretrainStageSpec, write(tmp_path, params), "simclr_supcon")
    with pytest.raises(ParamsError, match=r"noisy\.pseudo\.sofft: unknown key"):
        load_stage(NoisyStageSpec, write(tmp_path, params))


def test_an_unknown_section_is_an_error(tmp_path: Path) -> None:
    params = repo_params()
    params["evalute"] = {"probe": {"draws": 3}}  # a typo of evaluate
    with pytest.raises(ParamsError, match=r"evalute: unknown key \(known: backbone, compute, data, evaluate"):
        load_stage(ReportStageSpec, write(tmp_path, params))


def test_an_unknown_variant_names_the_entries(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"pretrain\.variants: no entry 'simclr2' \(entries: simclr_supcon\)"):
        load_stage(PretrainStageSpec, write(tmp_path, repo_params()), "simclr2")


@pytest.mark.parametrize("variant", ["simclr", "supcon", "simsiam"])
def test_the_commented_out_variants_of_params_yaml_load_when_uncommented(tmp_path: Path, variant: str) -> None:
    """The ablation's extra variants sit commented out in params.yaml; uncommenting one line enables one."""
    line = f"    # {variant}: {{"
    text = (REPO / "params.yaml").read_text()
    assert line in text
    params_file = tmp_path / "params.yaml"
    params_file.write_text(text.replace(line, line.replace("# ", "", 1)))
    weights = load_stage(PretrainStageSpec, params_file, variant).variant
    assert getattr(weights, f"{variant}_weight") == 1.0
    assert [name for name, weight in weights.model_dump().items() if weight > 0] == [f"{variant}_weight"]


def test_params_are_read_as_yaml_1_2_like_dvc(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) would read the key `on` as True and `yes`/`off` as bools."""
    path = tmp_path / "p.yaml"
    path.write_text("views:\n  on: batch\nflag: yes\nother: off\n")
    assert read_params(path) == {"views": {"on": "batch"}, "flag": "yes", "other": "off"}


def test_a_missing_params_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="no params file"):
        load_stage(DataStageSpec, tmp_path / "nowhere.yaml")


@pytest.mark.parametrize(("text", "words"), [("data: [\n  x: 1\n", "not valid YAML: "),
                                             ("- data\n", "expected a mapping of sections at the top, got list")])
def test_a_params_file_that_is_not_a_mapping_of_yaml_is_one_line_naming_it(tmp_path: Path, text: str,
                                                                           words: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=words) as error:
        read_params(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_a_training_seed_from_the_stage_command_is_a_non_negative_integer() -> None:
    """The seed arrives as a string (``-p seed 2``); anything but digits stops the stage naming it."""
    from retailnb.config.base import training_seed

    assert training_seed("2") == 2 and training_seed(0) == 0
    for bad in ("-1", "1.5", "two", ""):
        with pytest.raises(ValueError, match="seed: a training seed is a non-negative integer"):
            training_seed(bad)


@pytest.mark.parametrize("stage", ["pretrain", "noisy", "evaluate"])
def test_each_training_stage_offsets_its_seeds_by_the_training_seed(stage: str) -> None:
    key = {"pretrain": "simclr_supcon", "evaluate": "prepared"}.get(stage)
    base = load_stage(SPECS[stage], REPO / "params.yaml", key)
    moved = base.with_seed(3)
    engine = {"pretrain": lambda s: s.engine, "noisy": lambda s: s.noisy.engine,
              "evaluate": lambda s: s.finetune.engine}[stage]
    assert engine(moved).seed == engine(base).seed + 3
    if stage == "evaluate":  # the shot draws and the random-init backbone are repeated too
        assert moved.probe.seed == base.probe.seed + 3


def test_the_params_check_validates_every_stage_of_the_table() -> None:
    """``stages/check.STAGE_SPECS`` (what ``dvc repro`` validates first, and what these tests use) holds
    the spec of every stage of :data:`STAGES`, each once, in the pipeline's order."""
    from retailnb.config.stages import STAGES
    from retailnb.stages.check import STAGE_SPECS

    assert [spec.stage for spec in STAGE_SPECS] == list(STAGES)  # type: ignore[attr-defined]
