"""timm backbones that output pooled features, with random, local-file or hub weights.

Every stage builds its network through :func:`create_backbone`, so the same name and parameters always
give the same architecture, a wrong name or a missing weights file stops with one message that names
it, and a machine without network never tries (and hangs on) a download it cannot make.
"""

from __future__ import annotations

import difflib
import os
import pickle
from pathlib import Path
from typing import Any

import timm
from safetensors import SafetensorError
from torch import nn

from retailnb.models.backbone_info import WEIGHTS_HUB, WEIGHTS_NONE, read_backbone_info, same_architecture

_N_SUGGESTIONS = 5
_TRUE_ENV = frozenset({"1", "on", "yes", "true"})  # the values huggingface_hub reads as "set"


class WeightsUnavailableError(RuntimeError):
    """timm's pretrained weights cannot be fetched here (offline, or the download failed)."""


def suggest_models(name: str, n: int = _N_SUGGESTIONS) -> list[str]:
    """timm model names close to ``name``, best first.

    Names that contain ``name`` come first (a typo-free but partial name such as ``"convnext"``), then
    names that are close by edit similarity (a typo such as ``"resnt18"``).

    Args:
        name: a model name that may not exist.
        n: most names to return.

    Returns:
        Up to ``n`` registered timm model names.
    """
    available = timm.list_models()
    containing = timm.list_models(f"*{name}*") if name else []
    close = difflib.get_close_matches(name, available, n=n, cutoff=0.5)
    ordered = dict.fromkeys([*sorted(containing, key=len), *close])  # de-duplicated, order kept
    return list(ordered)[:n]


def check_model_name(name: str) -> None:
    """Raise a ValueError that suggests close matches when ``name`` is no timm model.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"resnet18.a1_in1k"``).

    Raises:
        ValueError: timm has no model of that name.
    """
    if timm.is_model(name):
        return
    suggestions = suggest_models(name.split(".", 1)[0])
    hint = f"; did you mean one of: {', '.join(suggestions)}?" if suggestions else ""
    raise ValueError(f"unknown timm model name {name!r}{hint} (see timm.list_models())")


def _hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set now (read at call time: huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_ENV


def _hub_hint(name: str) -> str:
    return (
        f"download the weights on a machine with network access, e.g. "
        f"`retailnb.models.checkpoint.save_backbone(path, timm.create_model({name!r}, pretrained=True, "
        f"num_classes=0))`, copy the file here and pass its path as the `weights` parameter"
    )


def _drop_kwargs(drop_rate: float, drop_path_rate: float) -> dict[str, float]:
    """timm keyword arguments for the dropout rates, leaving out zeros.

    Zero is every timm model's default, and some models (VGG, for one) take no ``drop_path_rate`` at all,
    so passing a zero would break them for nothing.
    """
    for label, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {rate}")
    kwargs = {"drop_rate": drop_rate, "drop_path_rate": drop_path_rate}
    return {k: v for k, v in kwargs.items() if v > 0.0}


def _file_state(path: Path) -> dict[str, Any]:
    """The state dict of a weights file, as timm reads it (a plain state dict, or one under ``state_dict``/``model``)."""
    return dict(timm.models.load_state_dict(str(path)))


def _missing_weights(model: nn.Module, state: dict[str, Any]) -> list[str]:
    """Names of ``model``'s weights that the file's ``state`` does not hold.

    timm loads a file non-strictly once it has dropped the classifier (we build with ``num_classes=0``),
    so a checkpoint of another architecture would otherwise load nothing, silently.
    """
    return [key for key in model.state_dict() if key not in state]


def _recorded(path: Path, name: str) -> str:
    """``; backbone.json beside it says 'resnet10t'`` when the weights' description names another model than
    ``name``, else nothing."""
    try:
        info = read_backbone_info(path)
    except ValueError:
        return ""
    if info is None or same_architecture(info.architecture, name):
        return ""
    return f"; {info.path.name} beside it says {info.architecture!r}"


def _short(err: BaseException, limit: int = 200) -> str:
    """An error's message on one line, cut at ``limit`` characters (torch lists every mismatch, one per line)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_error(name: str, path: Path, kwargs: dict[str, Any], err: Exception) -> str:
    """Why the weights file at ``path`` does not load into timm model ``name``, in one line.

    Weights of other shapes are counted and the first is named (torch's own message lists every one,
    hundreds of characters); a file that cannot be read at all gives the first words of its error.
    """
    try:
        file_state = _file_state(path)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, SafetensorError):
        return f"cannot load weights file {path} into timm model {name!r}: {_short(err)}"
    model_state = _create(name, kwargs).state_dict()
    differ = [key for key, tensor in model_state.items()
              if key in file_state and getattr(file_state[key], "shape", tensor.shape) != tensor.shape]
    if not differ:
        return f"cannot load weights file {path} into timm model {name!r}: {_short(err)}{_recorded(path, name)}"
    key = differ[0]
    shape, model_shape = ("x".join(map(str, s)) or "scalar" for s in (file_state[key].shape, model_state[key].shape))
    missing = sum(key not in file_state for key in model_state)
    return (f"weights file {path} does not fit timm model {name!r}: {len(differ)} of its {len(model_state)} weights "
            f"differ in shape (first: {key} is {shape} in the file, {model_shape} in the model)"
            + (f" and {missing} are missing" if missing else "") + f"{_recorded(path, name)}; is it another architecture?")


def _create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model`` with pooled-feature output, turning an unsupported argument into a ValueError."""
    try:
        return timm.create_model(name, num_classes=0, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ValueError(f"timm model {name!r} does not support this argument: {err}") from None
        raise


def _from_file(name: str, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    """A backbone initialised from a local checkpoint file, checked to hold every backbone weight.

    Weights that do not fit the model are one line naming the first tensor of another shape (and the
    architecture that the ``backbone.json`` beside the file records), not torch's list of every mismatch.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path} (for timm model {name!r}; `weights` takes "
            f"{WEIGHTS_NONE!r}, {WEIGHTS_HUB!r} or the path of a checkpoint file)"
        )
    info = read_backbone_info(path)
    if info is not None:
        info.check_weights(path)
    overlay = {"file": str(path)}
    try:
        model = _create(name, {**kwargs, "pretrained": True, "pretrained_cfg_overlay": overlay})
    except (RuntimeError, pickle.UnpicklingError, EOFError, SafetensorError) as err:  # other shapes, a corrupt file
        raise ValueError(_load_error(name, path, kwargs, err)) from None
    missing = _missing_weights(model, _file_state(path))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"weights file {path} does not fit timm model {name!r}: {len(missing)} of "
            f"{len(model.state_dict())} weights are missing ({shown}){_recorded(path, name)}; is it another architecture?"
        )
    return model


def _from_hub(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A backbone with timm's own pretrained weights, or a WeightsUnavailableError that says what to do."""
    if _hub_offline():
        raise WeightsUnavailableError(
            f"cannot download timm's pretrained weights for {name!r}: HF_HUB_OFFLINE is set; "
            f"{_hub_hint(name)}"
        )
    try:
        return _create(name, {**kwargs, "pretrained": True})
    except (OSError, RuntimeError) as err:  # network, hub and "no pretrained weights" failures
        raise WeightsUnavailableError(
            f"cannot download timm's pretrained weights for {name!r} ({type(err).__name__}: {err}); "
            f"{_hub_hint(name)}"
        ) from err


def create_backbone(
    name: str, *, drop_rate: float = 0.0, drop_path_rate: float = 0.0, weights: str = WEIGHTS_NONE
) -> nn.Module:
    """Build a timm model that maps an image batch (B, 3, H, W) to pooled features (B, feature_dim).

    The classifier is removed (``num_classes=0``), so the output is the globally pooled feature vector,
    the representation that contrastive pretraining shapes and the linear probe reads. The model is
    left on the CPU; move it where it is needed.

    Args:
        name: a timm model name (``"resnet18"``), optionally with a pretrained tag (``"resnet18.a1_in1k"``).
        drop_rate: dropout rate applied to the pooled features in training mode.
        drop_path_rate: stochastic depth rate (largest per-block rate) in training mode.
        weights: ``"none"`` for a random initialisation; ``"hub"`` for timm's own pretrained weights
            (needs network access); or the path of a local checkpoint file: a plain state dict (what
            :func:`retailnb.models.checkpoint.save_backbone` writes), a dict with the state dict under
            ``"state_dict"`` or ``"model"`` (what :func:`retailnb.models.checkpoint.save_checkpoint`
            writes), or a ``.safetensors`` file. A classifier in the file is ignored.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: unknown model name (the message suggests close matches), a rate outside [0, 1),
            an argument the model does not support, or a weights file that does not fit the model.
        FileNotFoundError: ``weights`` names a file that does not exist.
        WeightsUnavailableError: ``weights="hub"`` while HF_HUB_OFFLINE is set or the download fails.
    """
    check_model_name(name)
    kwargs: dict[str, Any] = _drop_kwargs(drop_rate, drop_path_rate)
    if weights == WEIGHTS_NONE:
        return _create(name, kwargs)
    if weights == WEIGHTS_HUB:
        return _from_hub(name, kwargs)
    return _from_file(name, Path(weights), kwargs)


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled features that a backbone from :func:`create_backbone` outputs.

    timm's ``num_features`` is the width of the last feature map; models with a hidden head layer after
    pooling (MobileNetV3, MambaOut, ...) output ``head_hidden_size`` instead, so that is used when set.

    Args:
        model: a timm model built with ``num_classes=0``.

    Returns:
        The number of features per image.

    Raises:
        TypeError: ``model`` is no timm model (it has no ``num_features``).
    """
    width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not isinstance(width, int):
        raise TypeError(f"{type(model).__name__} is no timm model: it has no integer num_features")
    return width

