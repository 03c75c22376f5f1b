"""``backbone.json``, the description the pipeline saves beside every backbone's weights.

A weights file (``backbone.pt``, a timm state dict) does not say which network it belongs to. Every
backbone the pipeline saves (pretraining's, and each noisy-student round's) therefore gets a
``backbone.json`` in the same folder: its timm ``backbone`` name, the ``image_size`` it was trained at and
its ``feature_dim``, plus what the stage that wrote it adds (pretraining: its throughput, loss history and
parameters; a noisy round: the round). :func:`resolve_backbone` reads it so that ``retailnb fit`` and
:func:`retailnb.bundle.fit.new_bundle` need only the weights.

This module imports neither torch nor timm: the command line checks a backbone before loading them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retailnb.util.atomic import atomic_write_text
from retailnb.util.hashing import file_sha256

PathLike = str | os.PathLike[str]

BACKBONE_INFO = "backbone.json"
"""The name of the description beside a backbone's weights file."""

WEIGHTS_NONE = "none"
"""``weights`` value for a random initialisation (see :func:`retailnb.models.backbone.create_backbone`)."""

WEIGHTS_HUB = "hub"
"""``weights`` value for timm's own pretrained weights, downloaded from the Hugging Face hub."""


@dataclass(frozen=True)
class BackboneInfo:
    """What ``backbone.json`` says about the weights beside it.

    Attributes:
        architecture: timm model name (the file's ``backbone`` key).
        image_size: side of the square images it was trained at, in pixels.
        feature_dim: width of its pooled features, when recorded.
        path: the ``backbone.json`` it was read from.
        weights_file: the name of the weights file it describes, when recorded.
        weights_sha256: that file's SHA-256 when it was written, when recorded.
    """

    architecture: str
    image_size: int
    feature_dim: int | None
    path: Path
    weights_file: str | None = None
    weights_sha256: str | None = None

    def check_weights(self, weights: PathLike) -> None:
        """Refuse a weights file whose bytes changed since this description recorded them.

        Only for the file it names (``backbone.json`` beside other weights describes those): a flipped
        byte in a tensor would otherwise load as different weights, silently (torch's reader checks no CRC).

        Raises:
            ValueError: the SHA-256 differs; the message names the file and its description.
        """
        if self.weights_sha256 is None or Path(weights).name != self.weights_file:
            return
        if file_sha256(weights) != self.weights_sha256:
            raise ValueError(f"weights file {weights}: its bytes changed since {self.path.name} recorded them "
                             "(SHA-256 differs): damaged or replaced; train it again or restore it")


def info_path(weights: PathLike) -> Path | None:
    """The ``backbone.json`` that describes a weights file, or None when there is none.

    The JSON file of the same name comes first (``backbone.pt`` → ``backbone.json``, ``a.pt`` → ``a.json``),
    then ``backbone.json`` in the same folder.
    """
    weights = Path(weights)
    for candidate in (weights.with_suffix(".json"), weights.parent / BACKBONE_INFO):
        if candidate != weights and candidate.is_file():
            return candidate
    return None


def read_backbone_info(weights: PathLike) -> BackboneInfo | None:
    """The description of a weights file (see :func:`info_path`); None when it has none.

    Raises:
        ValueError: the description exists but is not JSON, or lacks ``backbone`` or ``image_size`` (the
            message names the file).
    """
    path = info_path(weights)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        architecture, image_size = data["backbone"], data["image_size"]
        if not isinstance(architecture, str) or isinstance(image_size, bool) or not isinstance(image_size, int):
            raise TypeError("backbone must be a string and image_size an integer")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a backbone description ({type(err).__name__}: {err}); expected JSON "
                         "with the timm model name under 'backbone' and the image size under 'image_size'") from None
    dim = data.get("feature_dim")
    name, digest = data.get("weights_file"), data.get("weights_sha256")
    return BackboneInfo(architecture, image_size, dim if isinstance(dim, int) else None, path,
                        name if isinstance(name, str) else None, digest if isinstance(digest, str) else None)


def write_backbone_info(path: PathLike, *, architecture: str, image_size: int, feature_dim: int,
                        weights: PathLike | None = None, **extra: Any) -> Path:
    """Write a ``backbone.json`` atomically: the model name, image size and feature width, the weights
    file's name and SHA-256 (checked whenever the weights are loaded), then ``extra``.

    Args:
        path: the file to write, beside the weights (conventionally ``<folder>/backbone.json``).
        architecture: timm model name.
        image_size: side of the square training images, in pixels.
        feature_dim: width of the pooled features.
        weights: the weights file it describes, already written.
        extra: further JSON values (what produced the weights).
    """
    info: dict[str, Any] = {"backbone": architecture, "image_size": int(image_size), "feature_dim": int(feature_dim)}
    if weights is not None:
        info.update(weights_file=Path(weights).name, weights_sha256=file_sha256(weights))
    info.update(extra)
    return atomic_write_text(path, json.dumps(info, indent=2) + "\n")


def same_architecture(a: str, b: str) -> bool:
    """Whether two timm names build the same network, pretrained tags aside (``resnet18.a1_in1k``, ``resnet18``)."""
    return a.split(".", 1)[0] == b.split(".", 1)[0]


def resolve_backbone(architecture: str | None, weights: PathLike, image_size: int | None,
                     ) -> tuple[str, int, BackboneInfo | None]:
    """The architecture and image size of a backbone to build: as given, else from its ``backbone.json``.

    Args:
        architecture: timm model name, or None to take the one ``backbone.json`` records.
        weights: a weights file, or ``"none"`` / ``"hub"`` (then both values must be given).
        image_size: side of the square input in pixels, or None to take the training size it records.

    Returns:
        (architecture, image size, the description read or None).

    Raises:
        FileNotFoundError: ``weights`` names a missing file.
        ValueError: a value is neither given nor recorded, the description is malformed, or
            ``architecture`` is not the one recorded (the message names both).
    """
    keyword = os.fspath(weights) in (WEIGHTS_NONE, WEIGHTS_HUB)
    if not keyword and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}" + (" (it is a folder)" if Path(weights).is_dir()
                                                                        else ""))
    info = None if keyword else read_backbone_info(weights)
    if info is not None and architecture is not None and not same_architecture(architecture, info.architecture):
        raise ValueError(f"architecture {architecture!r} does not match the weights: {info.path} says {weights} holds "
                         f"a {info.architecture!r} backbone; leave the architecture out to use it, or give weights "
                         f"of {architecture!r}")
    if info is not None:
        return (info.architecture if architecture is None else architecture,
                info.image_size if image_size is None else image_size, info)
    if architecture is None or image_size is None:
        missing = [name for name, value in (("architecture", architecture), ("image size", image_size)) if value is None]
        where = ("random or hub weights record neither" if keyword
                 else f"{weights} has no {BACKBONE_INFO} beside it to read {'them' if len(missing) > 1 else 'it'} from")
        raise ValueError(f"give the {' and '.join(missing)} of the backbone: {where}")
    return architecture, image_size, None
