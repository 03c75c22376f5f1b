"""The command line answers "unknown" for a product it was not given, and enrols products from catalogue packshots."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retailnb.bundle.io import load_bundle
from retailnb.bundle.cli import main
from retailnb.models.backbone import create_backbone
from retailnb.models.checkpoint import save_backbone
from shared_fixtures import COLOURS, write_colour_folder

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
ENROLLED, HELD_OUT = ["blue", "green", "red", "yellow"], "black"


def solid(path: Path, colour: str) -> Path:
    """A clean solid-colour packshot of a product."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40, 3), COLOURS[colour], dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shelf photos of the enrolled products, a backbone file, and photos of one enrolled and one held-out product.

    With the random test_resnet backbone, the prototype threshold at recall 0.95 is about 0.99975; new noisy
    photos of an enrolled colour score 0.99983 to 0.99997 (48 of 48 over four seeds), black ones about 0.72.
    """
    root = tmp_path_factory.mktemp("cli_rejection")
    write_colour_folder(root / "shop", ENROLLED, 4, seed=0, size=40)
    write_colour_folder(root / "held_out", [HELD_OUT], 2, seed=3, size=40)
    write_colour_folder(root / "photos", ["red"], 3, seed=3, size=40)
    torch.manual_seed(0)
    save_backbone(root / "backbone.pt", create_backbone("test_resnet"))
    return root


def fit_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", str(data / "shop"), "--architecture", "test_resnet", "--backbone-weights",
            str(data / "backbone.pt"), "--image-size", str(SIZE), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def shop(data: Path) -> Path:
    out = data / "shop.bundle"
    assert main(fit_args(data, out)) == 0
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``retailnb ARGS`` in a fresh Python process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "retailnb.bundle.cli", *args], capture_output=True, text=True, env=env,
                          timeout=180, check=False)


def answers(table: str) -> dict[str, str]:
    """Image file name → the answer column of ``retailnb predict``'s table."""
    header, *rows = [line.split() for line in table.splitlines()]
    column = header.index("answer")
    return {Path(row[0]).name: row[column] for row in rows}


@pytest.mark.pipeline
def test_predict_in_a_fresh_process_says_unknown_for_a_product_it_was_not_given(data: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "shop.bundle"
    fitted = cli(*fit_args(data, bundle))
    assert fitted.returncode == 0, fitted.stderr
    assert "unknown-product rejection: prototype score below" in fitted.stderr
    for folder, expected in ((data / "photos" / "red", "red"), (data / "held_out" / HELD_OUT, "unknown")):
        result = cli("predict", str(folder), "--bundle", str(bundle), "--top-k", "2")
        assert result.returncode == 0, result.stderr
        photos = sorted(p.name for p in folder.iterdir())
        assert answers(result.stdout) == {name: expected for name in photos}
        n_unknown = len(photos) if expected == "unknown" else 0
        assert f"{n_unknown} of {len(photos)} images unknown" in result.stderr and "Traceback" not in result.stderr


def test_no_reject_names_a_product_and_every_format_carries_score_and_threshold(
        data: Path, shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    black = str(data / "held_out" / HELD_OUT)
    assert main(["predict", black, "--bundle", str(shop), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    threshold = load_bundle(shop).rejection.threshold  # type: ignore[union-attr]
    assert {r["answer"] for r in rows} == {"unknown"} and not any(r["known"] for r in rows)
    assert all(r["threshold"] == threshold and r["known_score"] < threshold for r in rows)
    assert all(r["predictions"][0]["product"] in ENROLLED for r in rows)

    assert main(["predict", black, "--bundle", str(shop), "--format", "csv", "--no-reject"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["answer"] for r in table} <= set(ENROLLED)
    assert all(r["answer"] == r["label_1"] for r in table)
    assert all(r["known_score"] and r["threshold"] == "" for r in table)  # scored, but held to no threshold


def test_recall_and_score_options_are_stored_and_shown_by_info(data: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "msp.bundle"
    assert main(fit_args(data, out, "--recall", "0.8", "--rejection-score", "msp")) == 0
    bundle = load_bundle(out)
    assert bundle.settings.recall == 0.8 and bundle.settings.rejection_score == "msp"
    assert bundle.rejection is not None and (bundle.rejection.score, bundle.rejection.recall) == ("msp", 0.8)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"msp score, recall 0.8, threshold {bundle.rejection.threshold:.4g}" in text
    assert main(["info", str(out), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rejection"]["recall"] == 0.8
    with pytest.raises(SystemExit):
        main(fit_args(data, tmp_path / "bad.bundle", "--recall", "0"))
    assert "--recall: must be a share of known-product images in (0, 1], got 0" in capsys.readouterr().err


def test_info_on_a_bundle_written_before_rejection_says_it_is_off(shop: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.bundle"
    with zipfile.ZipFile(shop) as zin, zipfile.ZipFile(old, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "bundle.json":
                meta = json.loads(data)
                del meta["rejection"]
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    assert main(["info", str(old)]) == 0
    assert "off: this bundle was written before unknown-product rejection" in capsys.readouterr().out


def test_add_products_from_catalogue_packshots_records_and_says_so(data: Path, shop: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    packshots = tmp_path / "packshots"
    solid(packshots / "white" / "front.png", "white")
    solid(packshots / "black" / "front.png", "black")
    solid(packshots / "black" / "back.png", "black")
    bundle = tmp_path / "shop.bundle"
    bundle.write_bytes(shop.read_bytes())
    capsys.readouterr()
    assert main(["add-products", str(packshots), "--bundle", str(bundle), "--images", "catalogue",
                 "--recall", "0.9"]) == 0
    assert "enrolled 2 products from 3 catalogue packshots" in capsys.readouterr().err
    added = load_bundle(bundle)
    entry = added.provenance["history"][-1]
    assert entry["enrolled_from"] == {"black": {"images": "catalogue", "n_images": 2},
                                      "white": {"images": "catalogue", "n_images": 1}}
    assert added.settings.recall == 0.9 and entry["rejection"]["recall"] == 0.9
    assert added.rejection is not None and added.rejection.active
    assert load_bundle(shop).provenance["history"][-1]["enrolled_from"]["red"] == {"images": "shelf", "n_images": 4}
    assert main(["info", str(bundle)]) == 0
    assert "add_products black, white: 3 images from" in capsys.readouterr().out
    assert main(["predict", str(packshots / "white"), "--bundle", str(bundle)]) == 0
    assert answers(capsys.readouterr().out) == {"front.png": "white"}


def test_a_product_folder_named_unknown_is_refused(data: Path, shop: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "new"
    solid(folder / "unknown" / "0.png", "white")
    solid(folder / "white" / "0.png", "white")
    bundle = tmp_path / "shop.bundle"
    bundle.write_bytes(shop.read_bytes())
    before = bundle.read_bytes()
    assert main(["add-products", str(folder), "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be named 'unknown'" in err[0] and err[0].startswith("retailnb add-products: ")
    assert bundle.read_bytes() == before
    assert main(["fit", str(folder), "--bundle", str(shop), "--out", str(tmp_path / "x.bundle")]) == 2
    assert "cannot be named 'unknown'" in capsys.readouterr().err
