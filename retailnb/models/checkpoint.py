"""Checkpoints: backbone weights that timm loads directly, and resumable training states.

Three kinds of file, all written atomically (a crash mid-write leaves the previous file intact, never a
truncated one) and all readable with ``torch.load(..., weights_only=True)``, so loading a checkpoint
never runs code from the file:

* :func:`save_backbone` writes just ``model.state_dict()``. timm loads it as pretrained weights,
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=0)``,
  and so does :func:`retailnb.models.backbone.create_backbone` with ``weights=path``.
* :func:`save_checkpoint` writes ``{"state_dict": weights, "extra": metadata}``; timm reads the
  ``"state_dict"`` key of such a dict, so this loads the same way.
* :func:`save_training_state` writes everything a training loop needs to continue from a step exactly
  as if it had never stopped: model, optimiser, scheduler, step, epoch and the torch, numpy and Python
  random number generator states. Its weights sit under ``"model"``, which timm also reads.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from retailnb.util.atomic import atomic_write
from retailnb.util.errors import FileProblem

PathLike = str | os.PathLike[str]

TRAINING_STATE_FORMAT = "retailnb.training_state/1"
"""Marker stored in every training state, so a weights-only file is not mistaken for one."""


class Stateful(Protocol):
    """Anything with ``state_dict`` / ``load_state_dict``: an optimiser, an LR scheduler, a grad scaler."""

    def state_dict(self) -> dict[str, Any]: ...  # noqa: D102

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...  # noqa: D102


class CheckpointError(FileProblem):
    """A checkpoint file is unreadable, corrupt, or not the kind of checkpoint expected."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: object, path: PathLike) -> Path:
    """``torch.save`` that never leaves a partial file at ``path``.

    The object is written to a temporary file in the same folder, flushed to disk, then renamed over
    ``path`` (``os.replace`` is atomic within one file system). Readers, and a DVC stage interrupted
    halfway, see either the old file or the complete new one.

    Args:
        obj: what to save.
        path: destination; missing parent folders are created.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)
    _fsync_dir(path.parent)
    return path


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
_PICKLE_PROTOCOL = b"\x80"  # the first byte of a pickle of protocol 2 or later (torch's legacy format)


def _not_a_torch_file(path: Path) -> str | None:
    """What ``path`` is not, when its first bytes show it is no file of ``torch.save``; else None."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        return "not a checkpoint: an empty file (0 bytes)"
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL):
        return None
    return ("not a checkpoint: torch.save writes a zip archive (or a pickle), and this file is neither "
            f"(it starts with {head!r})")


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load any checkpoint this module writes, onto the CPU, without running code from the file.

    Args:
        path: a file written by :func:`save_backbone`, :func:`save_checkpoint` or
            :func:`save_training_state`.

    Returns:
        The saved dict (for :func:`save_backbone`, the state dict itself).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is truncated, corrupt, holds objects other than tensors and plain
            Python values, or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    not_torch = _not_a_torch_file(path)
    if not_torch:
        raise CheckpointError(path, not_torch)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False: unsafe for a file of unknown origin, so not repeated
        raise CheckpointError(path, "not a checkpoint of tensors and plain values: torch's safe loader refused "
                              "it (objects that would run code when loaded, or corrupt data)") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError) as err:
        first = str(err).split(". ")[0].splitlines()[0] if str(err) else ""
        problem = f"truncated or corrupt checkpoint ({type(err).__name__}: {first})"
        raise CheckpointError(path, problem) from None
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict, found {type(obj).__name__}")
    return obj


def save_backbone(path: PathLike, model: nn.Module) -> Path:
    """Save just ``model.state_dict()``, the weights file that timm and :func:`create_backbone` load.

    Args:
        path: destination file (``.pth``).
        model: the backbone.

    Returns:
        ``path`` as a Path.
    """
    return atomic_torch_save(model.state_dict(), path)


def save_checkpoint(
    path: PathLike, *, model_state: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> Path:
    """Save weights with metadata as ``{"state_dict": model_state, "extra": extra}``.

    timm reads the ``"state_dict"`` key of such a file, so it loads as pretrained weights too.

    Args:
        path: destination file.
        model_state: a state dict (``model.state_dict()``).
        extra: metadata to keep with the weights (model name, params, metrics). Tensors and plain
            Python values only (numbers, strings, lists, tuples, dicts), so the file loads with
            ``weights_only=True``.

    Returns:
        ``path`` as a Path.
    """
    return atomic_torch_save({"state_dict": dict(model_state), "extra": dict(extra or {})}, path)


def capture_rng_state() -> dict[str, Any]:
    """The global random number generator states of torch (CPU and CUDA), numpy and Python.

    numpy's state is stored as a tensor and plain values, so the result saves with ``weights_only``
    loading intact.

    Returns:
        A dict for :func:`restore_rng_state`.
    """
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": bit_generator,
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global random number generators back to a state from :func:`capture_rng_state`.

    CUDA states are restored when CUDA is available; they are skipped when the state was saved without
    CUDA or on a different number of devices (the CPU generators are restored regardless).

    Args:
        state: the captured state.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("torch_cuda")
    if cuda_states is not None and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@dataclass(frozen=True)
class ResumePoint:
    """Where a restored training run continues.

    Attributes:
        step: optimiser steps taken before the state was saved.
        epoch: the epoch recorded with it (the caller's convention: completed, or current).
        extra: the metadata saved with it.
    """

    step: int
    epoch: int
    extra: dict[str, Any] = field(default_factory=dict)


def save_training_state(
    path: PathLike,
    *,
    model: nn.Module,
    optimizer: Stateful,
    scheduler: Stateful | None = None,
    step: int,
    epoch: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save everything needed to continue training from ``step`` exactly.

    Call it between optimiser steps, after any logging that draws random numbers. Resuming reproduces
    the run bit for bit when the rest of the loop is deterministic given these states: data order
    drawn from the global torch generator (a plain shuffling ``DataLoader``, restarted at an epoch
    boundary) or derived from (seed, epoch), and the same hardware and library versions.

    Args:
        path: destination file.
        model: the model being trained (its weights are stored under ``"model"``).
        optimizer: its optimiser.
        scheduler: its learning-rate scheduler, if any.
        step: optimiser steps taken so far.
        epoch: epoch counter to resume from.
        extra: further plain values to keep (params, best metric so far).

    Returns:
        ``path`` as a Path.
    """
    state = {
        "format": TRAINING_STATE_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "rng": capture_rng_state(),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(state, path)


def load_training_state(
    path: PathLike,
    *,
    model: nn.Module,
    optimizer: Stateful,
    scheduler: Stateful | None = None,
    restore_rng: bool = True,
) -> ResumePoint:
    """Restore a state from :func:`save_training_state` into freshly built training objects.

    Build ``model``, ``optimizer`` and ``scheduler`` exactly as for the original run (moving the model
    to its device first), then call this; the random number generators are restored last, so nothing
    here consumes random numbers after them.

    Args:
        path: the training state file.
        model: a model of the same architecture; its weights are overwritten.
        optimizer: an optimiser over ``model``'s parameters; its state is overwritten.
        scheduler: the scheduler, when the run had one.
        restore_rng: set the global random number generators back to the saved states.

    Returns:
        The step, epoch and metadata to continue from.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is unreadable, is no training state, or lacks a scheduler state that
            ``scheduler`` needs.
    """
    state = load_checkpoint(path)
    if state.get("format") != TRAINING_STATE_FORMAT:
        raise CheckpointError(path, f"not a training state (no format marker {TRAINING_STATE_FORMAT!r})")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if state["scheduler"] is None:
            raise CheckpointError(path, "saved without a scheduler state, but a scheduler was given")
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        restore_rng_state(state["rng"])
    return ResumePoint(step=state["step"], epoch=state["epoch"], extra=state["extra"])
