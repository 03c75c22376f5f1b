"""Running a network for inference: device, precision, input normalisation and batched forward passes.

:func:`extract_features` runs a backbone over a whole image array in batches. The pieces it is made of
serve callers that schedule batches themselves (:mod:`retailnb.bundle.embed` decodes and embeds image files
batch by batch, in threads): :func:`forward_batch` runs one batch; :func:`borrowed_for_inference` lends a
model for the duration (on a device, channels_last, eval mode) and restores it afterwards;
:func:`model_device` and :func:`autocast_dtype` choose where and in which precision it runs;
:func:`imagenet_normalize` prepares uint8 images the way timm's pretrained backbones expect them.

The module sits in :mod:`retailnb.models`, below every package that runs a network (the bundle, the
noisy student, evaluation and plots), so that they share these helpers without importing from one
another; it depends on nothing else in retailnb. Caching the features on disk is
:mod:`retailnb.evaluation.features`.

The features are those of the FROZEN network: the model runs in eval mode (batch-norm running
statistics, no dropout) under :func:`torch.inference_mode`, so the same images always give the same
features whatever state training left the model in.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from retailnb.data.cache import DiskArray, DiskImages

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet RGB images in [0, 1]: timm's pretrained backbones expect inputs centred on it."""

IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet RGB images in [0, 1]."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Accepted values of ``precision``: ``auto`` is bf16 autocast on CUDA and plain fp32 elsewhere."""

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model that has neither."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
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
        model.to(device=device)
        model.to(memory_format=torch.channels_last)
        model.eval()
        yield model
    finally:
        for p, data in params:
            p.data = data
        for m, name, b in buffers:
            setattr(m, name, b)
        for m, training in modes:
            m.training = training


def _check_images(images: torch.Tensor | np.ndarray | DiskImages, has_transform: bool) -> None:
    """Reject inputs that are not a non-empty batch of RGB images in the layout their type implies."""
    chw = isinstance(images, (torch.Tensor, DiskImages))
    layout = "(N, 3, H, W) torch tensor" if chw else "(N, H, W, 3) numpy array"
    if not isinstance(images, (torch.Tensor, np.ndarray, DiskImages)):
        raise TypeError(f"images must be a torch tensor or a numpy array, got {type(images).__name__}")
    channels = images.shape[1] if chw else images.shape[-1]
    if images.ndim != 4 or channels != 3:
        raise ValueError(f"images must be a {layout} of RGB images, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty: there is nothing to extract features from")
    is_uint8 = images.dtype == (torch.uint8 if chw else np.uint8)
    if not has_transform and not is_uint8:
        raise ValueError(
            f"images must be uint8 (0-255) for the built-in ImageNet normalisation, got {images.dtype}; "
            "pass a transform to feed other inputs"
        )


def _batch_nchw(images: torch.Tensor | np.ndarray | DiskImages, start: int, stop: int) -> torch.Tensor:
    """Images ``start:stop`` as an (B, 3, H, W) CPU tensor, without copying a torch input.

    A numpy (N, H, W, 3) batch is permuted, not copied, so the result is already channels_last in memory;
    the on-disk cache reads just this batch.
    """
    if isinstance(images, (torch.Tensor, DiskImages)):
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
    images: torch.Tensor | np.ndarray | DiskImages | DiskArray,
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
            only one batch is in memory at a time), or the on-disk cache
            (:class:`retailnb.data.cache.DiskImages`, or the (N, H, W, 3) :class:`~retailnb.data.cache.DiskArray`
            view of it), read one batch at a time. Other dtypes need a ``transform``.
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
    if isinstance(images, DiskArray):
        images = images.chw  # the same pixels, read a batch at a time as (B, 3, H, W) tensors
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
