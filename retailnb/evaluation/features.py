"""Frozen features of a backbone, extracted in batches and cached as one ``.npz`` file.

Every probe in :mod:`retailnb.evaluation` works on features, not images: the backbone runs once over
each split (:func:`extract_features`), the arrays are written next to the stage's other outputs
(:func:`save_features`), and later stages and notebooks reload them (:func:`load_features`) instead of
running the network again.

The features are those of the FROZEN network: the model runs in eval mode (batch-norm running
statistics, no dropout) under :func:`torch.inference_mode`, so the same images always give the same
features whatever state training left the model in.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch import nn

from retailnb.atomic import atomic_write

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet RGB images in [0, 1]: timm's pretrained backbones expect inputs centred on it."""

IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet RGB images in [0, 1]."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Accepted values of ``precision``: ``auto`` is bf16 autocast on CUDA and plain fp32 elsewhere."""

_FILE_KEYS = ("features", "labels", "class_names", "meta_json")

PathLike = str | os.PathLike[str]
BatchTransform = Callable[[torch.Tensor], torch.Tensor]


class FeatureSet(NamedTuple):
    """Cached features of one split, as :func:`load_features` returns them.

    Attributes:
        features: float32 array of shape (N, D), one row per image.
        labels: int64 array of shape (N,), indices into ``class_names`` (-1 for an unlabelled image).
        class_names: the name of each class index.
        meta: whatever keyword arguments were given to :func:`save_features` (JSON values).
    """

    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: dict[str, Any]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model that has neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that ``precision`` asks for on ``device``; None means plain fp32.

    ``auto`` picks bf16 on CUDA, where tensor cores run it several times faster than fp32 and its fp32
    exponent range keeps activations from overflowing, and fp32 elsewhere, where reduced precision
    rarely pays off.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@contextlib.contextmanager
def borrowed_for_inference(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Lend ``model`` for inference: on ``device``, channels_last, eval mode; all undone on exit.

    Moving a module (``model.to``) replaces the data of its parameters and its buffers in place, so the
    caller's model would otherwise stay channels_last (or on another device) after feature extraction.
    Instead, the original parameter data, buffers and every submodule's train/eval flag are kept and put
    back when the block ends, even on an error. The parameter objects themselves are never replaced, so an
    optimizer that holds them keeps working. While the block runs the model must not be used elsewhere
    (another thread would see it in eval mode).

    Args:
        model: the network to lend.
        device: where to run it.

    Yields:
        ``model`` itself, converted.
    """
    params = [(p, p.data) for p in model.parameters()]
    buffers = [(m, name, b) for m in model.modules() for name, b in m.named_buffers(recurse=False)]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.to(device=device, memory_format=torch.channels_last)
        model.eval()
        yield model
    finally:
        for p, data in params:
            p.data = data
        for m, name, b in buffers:
            setattr(m, name, b)
        for m, training in modes:
            m.training = training


def _check_images(images: torch.Tensor | np.ndarray, has_transform: bool) -> None:
    """Reject inputs that are not a non-empty batch of RGB images in the layout their type implies."""
    layout = "(N, 3, H, W) torch tensor" if isinstance(images, torch.Tensor) else "(N, H, W, 3) numpy array"
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        raise TypeError(f"images must be a torch tensor or a numpy array, got {type(images).__name__}")
    channels = images.shape[1] if isinstance(images, torch.Tensor) else images.shape[-1]
    if images.ndim != 4 or channels != 3:
        raise ValueError(f"images must be a {layout} of RGB images, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty: there is nothing to extract features from")
    is_uint8 = images.dtype == (torch.uint8 if isinstance(images, torch.Tensor) else np.uint8)
    if not has_transform and not is_uint8:
        raise ValueError(
            f"images must be uint8 (0-255) for the built-in ImageNet normalisation, got {images.dtype}; "
            "pass a transform to feed other inputs"
        )


def _batch_nchw(images: torch.Tensor | np.ndarray, start: int, stop: int) -> torch.Tensor:
    """Images ``start:stop`` as an (B, 3, H, W) CPU tensor, without copying a torch input.

    A numpy (N, H, W, 3) batch is permuted, not copied, so the result is already channels_last in memory.
    """
    if isinstance(images, torch.Tensor):
        return images[start:stop]
    return torch.from_numpy(np.ascontiguousarray(images[start:stop])).permute(0, 3, 1, 2)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) images to float32, scaled to [0, 1] and standardised by the ImageNet mean/std.

    The memory format of ``x`` is kept.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def extract_features(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    transform: BatchTransform | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Features of the frozen ``model`` for every image, in batches.

    Each batch is moved to the device as uint8 (a quarter of the bytes of float32), converted there,
    laid out channels_last (the layout cuDNN and oneDNN convolutions run fastest on) and passed through
    the model in eval mode under :func:`torch.inference_mode`, with bf16 autocast on CUDA when
    ``precision`` is ``auto``. The model is borrowed, not changed: its device, memory format and the
    train/eval flag of every submodule are restored afterwards (see :func:`borrowed_for_inference`).

    Args:
        model: a network that maps a (B, 3, H, W) float batch to features, e.g. a timm backbone created
            with ``num_classes=0``. An output with more than two dimensions is flattened per image.
        images: uint8 images, either a (N, 3, H, W) torch tensor or a (N, H, W, 3) numpy array as
            :func:`retailnb.data.images.decode_images` returns them (a memory-mapped array works too:
            only one batch is in memory at a time). Other dtypes need a ``transform``.
        batch_size: images per forward pass.
        device: where to run the model; defaults to the device of the model's parameters.
        transform: a batched tensor transform that replaces the built-in ImageNet normalisation; it gets
            each (B, 3, H, W) batch on ``device`` with the dtype of ``images`` and returns the float
            batch to feed the model.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :func:`autocast_dtype`). Under bf16
            autocast the features are returned as float32 but carry bf16 precision (about three
            significant digits), plenty for a probe; pass ``fp32`` where exact features matter.

    Returns:
        A float32 array of shape (N, D), row i the features of image i.

    Raises:
        TypeError: ``images`` is neither a tensor nor an array, or the model does not return a tensor.
        ValueError: ``images`` is empty, not RGB in the layout of its type, not uint8 without a
            ``transform``; ``batch_size`` is not positive; ``precision`` is unknown.
    """
    _check_images(images, transform is not None)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images, got {batch_size}")
    device = model_device(model) if device is None else torch.device(device)
    amp_dtype = autocast_dtype(precision, device)
    prepare = transform if transform is not None else imagenet_normalize
    n = images.shape[0]
    out: np.ndarray | None = None
    with borrowed_for_inference(model, device):
        for start in range(0, n, batch_size):
            feats = forward_batch(model, _batch_nchw(images, start, start + batch_size), device, prepare, amp_dtype)
            if out is None:
                out = np.empty((n, feats.shape[1]), dtype=np.float32)
            out[start : start + len(feats)] = feats
    assert out is not None  # images is non-empty, so at least one batch ran
    return out


def forward_batch(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    prepare: BatchTransform,
    amp_dtype: torch.dtype | None,
) -> np.ndarray:
    """Features of one (B, 3, H, W) batch under a model lent out by :func:`borrowed_for_inference`.

    The batch is moved to ``device``, prepared (``prepare``: uint8 to normalised float), laid out
    channels_last and run under :func:`torch.inference_mode` and, when ``amp_dtype`` is set, autocast.
    Both are thread-local, so threads may call this concurrently on one lent model.

    Raises:
        TypeError: the model does not return a tensor.
    """
    with torch.inference_mode():
        x = prepare(images.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            y = model(x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"the model returned {type(y).__name__}, expected a tensor of features")
        return y.flatten(1).float().cpu().numpy()


def _json_default(value: Any) -> Any:
    """Make numpy scalars and arrays and paths JSON-serialisable for :func:`save_features`."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _check_feature_set(features: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
    """Reject arrays that do not describe one labelled feature row per image."""
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},) to match features, got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < -1 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must lie in [-1, {len(class_names)}) for {len(class_names)} class names, "
            f"got values from {labels.min()} to {labels.max()}"
        )


def save_features(
    path: PathLike,
    features: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    **meta: Any,
) -> Path:
    """Write one split's features, labels and class names to a single ``.npz`` file, atomically.

    The file is written to a temporary name in the same folder and then renamed over ``path``, so a
    reader (or DVC) never sees half a file, and an interrupted run leaves any previous file intact.
    The arrays are stored uncompressed: float features barely compress, and loading stays fast.

    Args:
        path: the file to write; its folder is created if needed.
        features: (N, D) features; stored as float32.
        labels: (N,) integer class indices into ``class_names``; -1 marks an unlabelled image.
        class_names: the name of each class index.
        **meta: anything else worth keeping with the features (model name, checkpoint, image size,
            split...); JSON values, numpy scalars, arrays and paths.

    Returns:
        ``path``.

    Raises:
        ValueError: the shapes do not match, or a label is outside [-1, len(class_names)).
        TypeError: a ``meta`` value cannot be written as JSON (nothing is written then).
    """
    path = Path(path)
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    names = [str(c) for c in class_names]
    _check_feature_set(features, labels, names)
    meta_json = json.dumps(meta, default=_json_default, sort_keys=True)  # fails before any file is touched
    arrays = {
        "features": features,
        "labels": labels.astype(np.int64),
        "class_names": np.asarray(names, dtype=np.str_),
        "meta_json": np.asarray(meta_json),
    }
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)  # to a file object: numpy adds no .npz suffix to the temporary name
    return path


def load_features(path: PathLike) -> FeatureSet:
    """Read a file written by :func:`save_features`.

    Args:
        path: the ``.npz`` file.

    Returns:
        The features, labels, class names and metadata, as a :class:`FeatureSet`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a feature file written by :func:`save_features`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: feature file not found")
    arrays = _read_npz(path)
    missing = [k for k in _FILE_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: not a retailnb feature file (missing {', '.join(missing)})")
    return FeatureSet(
        features=arrays["features"],
        labels=arrays["labels"],
        class_names=[str(c) for c in arrays["class_names"]],
        meta=json.loads(str(arrays["meta_json"])),
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, turning any read failure into one ValueError."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot read feature file ({err})") from None
