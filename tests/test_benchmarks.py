"""The transfer benchmark's and recipe study's pure parts: overrides as dvc exp run -S applies them, and
every recipe of benchmarks/recipes.yaml a valid pretraining spec (a typo would silently study nothing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_transfer import apply_overrides, paired_text  # noqa: E402
from recipe_study import load_recipes  # noqa: E402

from retailnb.config.params_file import read_params  # noqa: E402
from retailnb.config.evaluate import EvaluateStageSpec
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.stages import spec_from_params  # noqa: E402


def test_overrides_take_their_yaml_types_and_leave_the_input_alone() -> None:
    params = read_params(REPO / "params.yaml")
    before = repr(params)
    out = apply_overrides(params, ["pretrain.engine.lr=0.06", "pretrain.views.hflip_p=0.5",
                                   "backbone.architecture=resnet18", "pretrain.engine.optimizer=sgd"])
    assert out["pretrain"]["engine"]["lr"] == 0.06 and isinstance(out["pretrain"]["engine"]["lr"], float)
    assert out["backbone"]["architecture"] == "resnet18" and out["pretrain"]["engine"]["optimizer"] == "sgd"
    assert repr(params) == before


@pytest.mark.parametrize(("item", "words"), [("pretrain.engine.lrate=1", "no 'pretrain.engine.lrate'"),
                                             ("pretrain.engine.lr", "expected key.path=value"),
                                             ("nothing.here=1", "no 'nothing.here'")])
def test_a_bad_override_is_named(item: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        apply_overrides(read_params(REPO / "params.yaml"), [item])


def test_every_recipe_is_a_valid_spec_that_differs_from_the_defaults_as_it_says() -> None:
    params = read_params(REPO / "params.yaml")
    variant = params["noisy"]["teacher_variant"]
    default = spec_from_params(PretrainStageSpec, params, variant)
    recipes = load_recipes(REPO / "benchmarks" / "recipes.yaml")
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
    assert "no difference measured" in paired_text([0.30, 0.20, 0.25], [0.25, 0.24, 0.22])
    assert "above 0" in paired_text([0.30, 0.31, 0.32], [0.20, 0.20, 0.21])
    assert "one seed" in paired_text([0.3], [0.2])


def test_the_device_check_runs_its_throughput_comparison_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU check cannot run here; its smoke mode keeps the script from rotting between GPU sessions."""
    from device_check import main

    main(["--device", "cpu", "--smoke", "--skip-pipeline"])
    out = capsys.readouterr().out
    assert "(a) plain lightly loop" in out and "(b) retailnb engine" in out and "ratio (b)/(a)" in out


def test_the_device_checks_overrides_are_keys_of_params_yaml() -> None:
    from device_check import ONE_EPOCH, SMOKE_PIPELINE, set_key

    params = read_params(REPO / "params.yaml")
    for key, value in {**ONE_EPOCH, **SMOKE_PIPELINE}.items():
        set_key(params, key, value)
    spec_from_params(EvaluateStageSpec, params, "prepared")  # still a valid spec
    with pytest.raises(KeyError, match="pretrain.engine.epoch"):
        set_key(params, "pretrain.engine.epoch", 1)


def test_stage_seconds_reads_the_stamped_dvc_log() -> None:
    from device_check import stage_seconds

    log = "[0.5] Running stage 'data':\n[3.0] x\n[4.5] Running stage 'pretrain@simclr-0':\n[10.0] done"
    assert stage_seconds(log) == [("data", 4.0), ("pretrain@simclr-0", 5.5)]


def test_the_scale_benchmark_runs_every_configuration_in_smoke_mode(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Two sizes 10x apart, in memory and on disk, each in its own process; both give the same pseudolabels."""
    from bench_scale import main

    rows = main(["--smoke", "--work", str(tmp_path), "--out", str(tmp_path / "scale.json")])
    assert sorted((r["images"], r["storage"]) for r in rows) == [(12, "disk"), (12, "memory"), (120, "disk"),
                                                                 (120, "memory")]
    assert all(r["peak_rss_mib"] > 0 and r["train_images_per_second"] > 0 and r["pseudolabel_ms_per_image"] > 0
               for r in rows)
    out = capsys.readouterr().out
    assert "disk peak memory" in out and "DIFFER" not in out and out.count("pseudolabels identical") == 2
    assert len(list((tmp_path / ".cache" / "images").glob("*.npy"))) == 2  # one cache per set, reused
