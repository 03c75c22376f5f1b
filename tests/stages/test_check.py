"""The params check stage: every stage's parameters validated at once, the same output whatever the values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_fixture import write_params
from shared_fixtures import repo_params, with_overrides

from retailnb.stages.check import CHECKED, main, problems


def test_the_projects_params_are_valid_and_the_output_does_not_depend_on_them(tmp_path: Path) -> None:
    outs = []
    for difficulty in (0.3, 0.9):  # a valid change: the output stays byte for byte, so no stage reruns for it
        folder = tmp_path / str(difficulty)
        folder.mkdir()
        write_params(folder, with_overrides(repo_params(), {"data.synthetic.difficulty": difficulty}))
        assert main([str(folder / "params.yaml"), str(folder / "out.txt")]) == 0
        outs.append((folder / "out.txt").read_text())
    assert outs == [CHECKED, CHECKED]


def test_bad_values_of_several_stages_are_all_named_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = with_overrides(repo_params(), {"data.synthetic.difficulty": 2, "report.confidence": 1.5,
                                            "backbone.image_size": 100000})
    found = problems(params)
    assert any(p.startswith("data.synthetic.difficulty:") for p in found)
    assert any(p.startswith("report.confidence:") for p in found)
    assert any(p.startswith("backbone.image_size:") for p in found)
    assert len(found) == len(set(found))  # a key several stages read is named once
    write_params(tmp_path, params)
    assert main([str(tmp_path / "params.yaml"), str(tmp_path / "out.txt")]) == 2
    err = capsys.readouterr().err
    assert "data.synthetic.difficulty" in err and "no stage ran" in err
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize(("key", "value"), [("backbone.image_size", 8), ("backbone.image_size", 4096),
                                            ("pretrain.sampler.batch_size", 1_000_000_000)])
def test_sizes_that_cannot_be_meant_stop_at_the_check(key: str, value: int) -> None:
    assert any(p.startswith(f"{key}:") for p in problems(with_overrides(repo_params(), {key: value})))
