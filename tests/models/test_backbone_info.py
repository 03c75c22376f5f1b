"""Tests for retailnb.models.backbone_info: the backbone.json beside a weights file, read without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retailnb.models.backbone_info import (
    BackboneInfo,
    info_path,
    read_backbone_info,
    resolve_backbone,
    same_architecture,
    write_backbone_info,
)


def weights_with_info(folder: Path, name: str = "backbone", **info: object) -> Path:
    weights = folder / f"{name}.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"weights")
    write_backbone_info(folder / "backbone.json", **{"architecture": "resnet10t", "image_size": 64,  # type: ignore[arg-type]
                                                     "feature_dim": 512, **info})
    return weights


def test_written_as_pretraining_writes_it_and_read_back(tmp_path: Path) -> None:
    weights = weights_with_info(tmp_path, round=2)
    data = json.loads((tmp_path / "backbone.json").read_text())
    assert data == {"backbone": "resnet10t", "image_size": 64, "feature_dim": 512, "round": 2}  # pretraining's keys
    assert read_backbone_info(weights) == BackboneInfo("resnet10t", 64, 512, tmp_path / "backbone.json")


def test_the_json_of_the_same_name_comes_first_then_backbone_json(tmp_path: Path) -> None:
    weights = weights_with_info(tmp_path, name="student")
    assert info_path(weights) == tmp_path / "backbone.json"
    (tmp_path / "student.json").write_text(json.dumps({"backbone": "resnet18", "image_size": 32}))
    assert info_path(weights) == tmp_path / "student.json"
    assert read_backbone_info(weights) == BackboneInfo("resnet18", 32, None, tmp_path / "student.json")
    assert read_backbone_info(tmp_path / "elsewhere" / "backbone.pt") is None


@pytest.mark.parametrize("content", ["not json", json.dumps({"image_size": 64}),
                                     json.dumps({"backbone": "resnet10t", "image_size": "64"})])
def test_a_malformed_description_is_named(tmp_path: Path, content: str) -> None:
    (tmp_path / "backbone.json").write_text(content)
    with pytest.raises(ValueError, match="backbone.json: not a backbone description"):
        read_backbone_info(tmp_path / "backbone.pt")


def test_resolve_takes_what_is_not_given_from_the_file(tmp_path: Path) -> None:
    weights = weights_with_info(tmp_path)
    assert resolve_backbone(None, weights, None)[:2] == ("resnet10t", 64)
    assert resolve_backbone("resnet10t.a1_in1k", weights, 128)[:2] == ("resnet10t.a1_in1k", 128)  # given values win
    assert resolve_backbone("resnet18", "none", 32) == ("resnet18", 32, None)


def test_resolve_names_both_architectures_when_they_differ(tmp_path: Path) -> None:
    weights = weights_with_info(tmp_path)
    with pytest.raises(ValueError) as wrong:
        resolve_backbone("mobilenetv3_small_100", weights, None)
    text = str(wrong.value)
    assert "'mobilenetv3_small_100' does not match the weights" in text and "a 'resnet10t' backbone" in text
    assert "\n" not in text


def test_resolve_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nothing.pt"):
        resolve_backbone(None, tmp_path / "nothing.pt", None)
    (tmp_path / "bare.pt").write_bytes(b"weights")
    with pytest.raises(ValueError, match="give the architecture and image size .* no backbone.json beside it"):
        resolve_backbone(None, tmp_path / "bare.pt", None)
    with pytest.raises(ValueError, match="give the image size of the backbone: random or hub weights record neither"):
        resolve_backbone("resnet18", "none", None)


def test_same_architecture_ignores_pretrained_tags() -> None:
    assert same_architecture("resnet18.a1_in1k", "resnet18") and not same_architecture("resnet18", "resnet10t")


def test_the_module_imports_no_torch() -> None:
    code = "import sys, retailnb.models.backbone_info; print('torch' in sys.modules, 'timm' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_weights_whose_bytes_changed_since_backbone_json_are_refused(tmp_path: Path) -> None:
    """torch's zip reader checks no CRC: a flipped byte inside a tensor would load as other weights, silently."""
    import torch

    from retailnb.models.backbone import create_backbone

    torch.manual_seed(0)
    weights = tmp_path / "backbone.pt"
    model = create_backbone("test_resnet")
    torch.save(model.state_dict(), weights)
    write_backbone_info(tmp_path / "backbone.json", architecture="test_resnet", image_size=32, feature_dim=8,
                        weights=weights)
    create_backbone("test_resnet", weights=str(weights))  # unchanged: loads
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"backbone.pt: its bytes changed since backbone.json recorded them"):
        create_backbone("test_resnet", weights=str(weights))
    other = tmp_path / "other.pt"  # another file in the folder: backbone.json does not describe its bytes
    torch.save(model.state_dict(), other)
    create_backbone("test_resnet", weights=str(other))


def test_a_safetensors_file_of_random_bytes_is_one_line_naming_it(tmp_path: Path) -> None:
    from retailnb.models.backbone import create_backbone

    weights = tmp_path / "random.safetensors"
    weights.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ValueError) as error:
        create_backbone("test_resnet", weights=str(weights))
    message = str(error.value)
    assert str(weights) in message and "\n" not in message and len(message) < 400
