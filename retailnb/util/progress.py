"""Progress a person can read: a live bar in a terminal, one line per epoch everywhere else.

A training stage runs inside a notebook kernel (papermill), whose standard error is not a terminal: a
tqdm bar there is stored as one line per update in the executed notebook (hundreds of lines in a
report) and reaches the ``dvc repro`` terminal as nothing until the cell ends. So a step bar is drawn
only when standard error is a terminal, and every epoch ends with one line on standard error, with
the losses, the elapsed time and an estimate of the time left. :mod:`retailnb.stages.run_notebook` forwards the
kernel's standard error to the terminal of ``dvc repro`` as it arrives, so the same lines are the
stage's live progress there and its one-line-per-epoch log in the report.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from tqdm import tqdm


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (standard error by default) is a terminal that can redraw a bar in place."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def step_bar(total: int, desc: str, *, enabled: bool = True) -> tqdm[Any]:
    """A tqdm bar over the steps of one loop, drawn only in a terminal and erased when the loop ends."""
    return tqdm(total=total, desc=desc, disable=not (enabled and interactive()), leave=False, file=sys.stderr)


def format_seconds(seconds: float) -> str:
    """``'42 s'`` below a minute, ``'3 min 05 s'`` from there, ``'1 h 02 min'`` from an hour."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class EpochLog:
    """One line per finished epoch: what ran, the epoch, its mean losses, elapsed time, time left.

    The estimate assumes the remaining epochs take as long as the mean epoch of this run so far
    (epochs resumed from a checkpoint are not counted); with early stopping it is an upper bound.

    Attributes:
        label: what is training, e.g. ``"pretrain simclr_supcon"``; may be empty.
        epochs: the run's total number of epochs.
        first_epoch: the epoch (from 0) this process started at (after a resume, the next one).
    """

    label: str
    epochs: int
    first_epoch: int = 0
    started: float = field(default_factory=time.perf_counter)

    def line(self, epoch: int, losses: Mapping[str, float], now: float | None = None) -> str:
        """The line for epoch ``epoch`` (from 0) with its mean ``losses``."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self.started
        done = epoch + 1 - self.first_epoch
        left = (self.epochs - epoch - 1) * elapsed / max(done, 1)
        values = ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "lr")
        prefix = f"{self.label}: " if self.label else ""
        eta = f", about {format_seconds(left)} left" if epoch + 1 < self.epochs else ""
        return f"{prefix}epoch {epoch + 1}/{self.epochs}: {values}; {format_seconds(elapsed)} elapsed{eta}"

    def write(self, epoch: int, losses: Mapping[str, float]) -> None:
        """Print :meth:`line` on standard error at once (flushed, so it reaches the terminal live)."""
        print(self.line(epoch, losses), file=sys.stderr, flush=True)
