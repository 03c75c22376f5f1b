"""Feature extraction equals a plain eval-mode forward pass and leaves the model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retailnb.models.inference import IMAGENET_MEAN, IMAGENET_STD, extract_features


def small_net() -> nn.Module:
    """A tiny CNN whose output depends on train/eval mode (batch norm and dropout)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
    )
    # Non-trivial running statistics, so eval-mode batch norm differs from batch statistics.
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net


def reference(net: nn.Module, images_nchw: torch.Tensor) -> np.ndarray:
    """What the features must be: ImageNet-normalised input through the model in eval mode."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    was = net.training
    net.eval()
    with torch.no_grad():
        out = net((images_nchw.float() / 255 - mean) / std).numpy()
    net.train(was)
    return out


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(0, 256, (7, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_features_equal_plain_forward_pass(images: torch.Tensor) -> None:
    net = small_net().train()
    want = reference(net, images)
    got = extract_features(net, images, batch_size=3)  # 3 + 3 + 1: the ragged last batch too
    assert got.dtype == np.float32 and got.shape == (7, 6)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_numpy_nhwc_input_gives_the_same_features(images: torch.Tensor) -> None:
    net = small_net()
    nhwc = images.permute(0, 2, 3, 1).numpy().copy()
    np.testing.assert_allclose(extract_features(net, nhwc), reference(net, images), atol=1e-5, rtol=1e-5)


def test_model_mode_and_memory_format_are_restored(images: torch.Tensor) -> None:
    net = small_net().train()
    net[1].eval()  # a frozen batch norm inside a training model: per-module flags must come back exactly
    conv = net[0].weight
    extract_features(net, images)
    assert net.training and net[0].training and net[6].training
    assert not net[1].training
    assert net[0].weight is conv and conv.is_contiguous()  # not left channels_last
    net.eval()
    extract_features(net, images)
    assert not any(m.training for m in net.modules())


def test_model_trains_normally_afterwards(images: torch.Tensor) -> None:
    net = small_net().train()
    extract_features(net, images)
    loss = net(images.float()).sum()
    loss.backward()  # fails if parameters were left as inference tensors
    assert net[0].weight.grad is not None


def test_transform_replaces_normalisation(images: torch.Tensor) -> None:
    net = small_net().eval()
    with torch.no_grad():
        want = net(images.float() / 255).numpy()
    got = extract_features(net, images, transform=lambda x: x.float() / 255)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_rejected(images: torch.Tensor) -> None:
    net = small_net()
    with pytest.raises(ValueError, match="uint8"):
        extract_features(net, images.float())
    with pytest.raises(ValueError, match="N, H, W, 3"):
        extract_features(net, images.numpy())  # NCHW numpy: wrong layout for an array
    with pytest.raises(ValueError, match="precision"):
        extract_features(net, images, precision="fp8")
    with pytest.raises(ValueError, match="empty"):
        extract_features(net, images[:0])
