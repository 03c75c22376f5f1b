"""Progress: a bar only in a terminal, one readable line per epoch with elapsed time and time left."""

from __future__ import annotations

import io

import pytest

from retailnb.util.progress import EpochLog, format_seconds, interactive, step_bar


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (42.4, "42 s"), (65, "1 min 05 s"),
                                               (3725, "1 h 02 min")])
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_an_epoch_line_names_the_run_the_losses_elapsed_time_and_time_left() -> None:
    log = EpochLog("pretrain simclr", epochs=10, started=100.0)
    line = log.line(1, {"loss": 3.55123, "simclr": 2.0, "lr": 0.001}, now=120.0)
    # two epochs took 20 s, so eight more take about 80 s; the learning rate is not a loss
    assert line == "pretrain simclr: epoch 2/10: loss 3.551, simclr 2; 20 s elapsed, about 1 min 20 s left"


def test_after_a_resume_only_this_processs_epochs_time_the_estimate_and_the_last_has_none() -> None:
    log = EpochLog("", epochs=4, first_epoch=2, started=0.0)
    assert log.line(2, {"loss": 1.0}, now=30.0) == "epoch 3/4: loss 1; 30 s elapsed, about 30 s left"
    assert log.line(3, {"loss": 1.0}, now=60.0) == "epoch 4/4: loss 1; 1 min 00 s elapsed"


def test_no_bar_outside_a_terminal() -> None:
    assert not interactive(io.StringIO())
    assert step_bar(5, "x").disable  # pytest's stderr is not a terminal, nor is a notebook kernel's
