"""The training engine's early stop: ``on_epoch_end`` returning True ends the run after that epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from shared_fixtures import default_spec
from torch import nn

from retailnb.train.engine import fit, make_fabric
from retailnb.train.sampler import EpochBatchSampler


def test_on_epoch_end_returning_true_stops_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = default_spec("pretrain", "simclr_supcon")
    compute = spec.compute.model_copy(update={"num_workers": 0, "accelerator": "cpu", "channels_last": False})
    engine = spec.engine.model_copy(update={"epochs": 6, "warmup_epochs": 0.0})
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    dataset = torch.utils.data.TensorDataset(x, y)
    fabric = make_fabric(compute)
    sampler = EpochBatchSampler(np.full(16, -1), batch_size=8, images_per_class=2, supcon_fraction=0.0, seed=0)

    def loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(model(batch[0]), batch[1])}

    seen: list[int] = []

    def stop_after_two(epoch: int, model: nn.Module) -> bool:
        seen.append(epoch)
        return epoch == 1

    result = fit(fabric, nn.Linear(4, 2), dataset, sampler, loss, engine, compute, state_path=tmp_path / "state.pt",
                 on_epoch_end=stop_after_two, label="toy")
    assert seen == [0, 1] and result.epochs_run == 2 and len(result.history["loss"]) == 2
    # the progress on stderr: one line per epoch that ran, no bar (stderr is not a terminal)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(";")[0] for line in lines] == [f"toy: epoch {e}/6: loss {h:.4g}" for e, h in
                                                      zip((1, 2), result.history["loss"])]
    assert "about" in lines[0] and "left" in lines[0]


def toy_run(state: Path, resume: str = "auto") -> Any:
    """A two-epoch run of a linear model on random data that saves its state to ``state``: call it to train."""
    spec = default_spec("pretrain", "simclr_supcon")
    compute = spec.compute.model_copy(update={"num_workers": 0, "accelerator": "cpu", "channels_last": False,
                                              "resume": resume})
    engine = spec.engine.model_copy(update={"epochs": 2, "warmup_epochs": 0.0})
    dataset = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    sampler = EpochBatchSampler(np.full(16, -1), batch_size=8, images_per_class=2, supcon_fraction=0.0, seed=0)

    def loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(model(batch[0]), batch[1])}

    return lambda: fit(make_fabric(compute), nn.Linear(4, 2), dataset, sampler, loss, engine, compute, state_path=state,
                       run_key="k")


@pytest.mark.parametrize("resume", ["auto", "never"])
def test_compute_resume_never_trains_over_a_corrupt_state_that_auto_refuses(tmp_path: Path, resume: str) -> None:
    from retailnb.models.checkpoint import CheckpointError, load_checkpoint

    state = tmp_path / "state.pt"
    state.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # what a kill mid-copy leaves
    run = toy_run(state, resume)
    if resume == "auto":
        with pytest.raises(CheckpointError, match="compute.resume: never"):
            run()
    else:
        assert run().epochs_run == 2 and load_checkpoint(state)["epoch"] == 1  # trained from the start, overwritten


def test_a_finished_state_saved_by_other_code_is_trained_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DVC reruns a stage whose code changed but keeps its ``persist`` output: a finished training state of the
    old code must not be "resumed" with nothing left to train (the edit would silently return the old weights)."""
    from retailnb.models.checkpoint import load_checkpoint
    from retailnb.train import engine

    state = tmp_path / "state.pt"
    run = toy_run(state)
    assert run().epochs_run == 2
    assert load_checkpoint(state)["extra"]["code"] == engine.code_digest()
    assert engine.can_resume(state, "k") and run().epochs_run == 0  # the same code: the finished state stands
    monkeypatch.setattr(engine, "code_digest", lambda: "another version of retailnb")
    assert not engine.can_resume(state, "k")
    again = run()
    assert (again.start_epoch, again.epochs_run) == (0, 2)
    assert load_checkpoint(state)["extra"]["code"] == "another version of retailnb"
