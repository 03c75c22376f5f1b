"""The ``retailnb`` command line, end to end, and its answer to each kind of bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import retailnb
from retailnb.bundle import commands
from retailnb.bundle import predict as predict_mod
from retailnb.bundle.io import load_bundle
from retailnb.bundle.model import Bundle
from retailnb.bundle.info import BUNDLE_FORMAT
from retailnb.bundle.predict import predict_files
from retailnb.bundle import cli as cli_module
from retailnb.bundle.cli import main
from retailnb.models.backbone import create_backbone
from retailnb.models.checkpoint import save_backbone
from shared_fixtures import write_colour_folder

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
OLD, NEW = ["blue", "green", "red", "yellow"], ["black", "white"]


def write_folder(root: Path, names: list[str], per_class: int, seed: int) -> Path:
    return write_colour_folder(root, names, per_class, seed, size=40)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training folders for the old and the new products, test images of all, and a backbone file."""
    root = tmp_path_factory.mktemp("cli")
    write_folder(root / "old", OLD, 4, seed=0)
    write_folder(root / "new", NEW, 4, seed=1)
    write_folder(root / "test", OLD + NEW, 2, seed=2)
    torch.manual_seed(0)
    save_backbone(root / "backbone.pt", create_backbone("test_resnet"))
    return root


@pytest.fixture(scope="module")
def shop(data: Path) -> Path:
    """A bundle of the old products, built from the backbone file by ``retailnb fit``."""
    out = data / "shop.bundle"
    code = main(["fit", str(data / "old"), "--architecture", "test_resnet", "--backbone-weights",
                 str(data / "backbone.pt"), "--image-size", str(SIZE), "--out", str(out)])
    assert code == 0
    return out


def predicted(rows: list[dict]) -> dict[str, str]:
    """Image path → its top-1 product, from JSON output."""
    return {r["image"]: r["predictions"][0]["product"] for r in rows}


def accuracy(top1: dict[str, str], products: list[str]) -> float:
    hits = [Path(path).parent.name == name for path, name in top1.items() if Path(path).parent.name in products]
    return float(np.mean(hits))


def test_fit_add_predict_remove_end_to_end(data: Path, shop: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "shop.bundle"
    bundle.write_bytes(shop.read_bytes())
    assert main(["predict", str(data / "test"), "--bundle", str(bundle), "--format", "json"]) == 0
    before = predicted(json.loads(capsys.readouterr().out))
    assert accuracy(before, OLD) == 1.0

    assert main(["add-products", str(data / "new"), "--bundle", str(bundle)]) == 0  # in place
    assert "images/s" in capsys.readouterr().err
    out = tmp_path / "predictions.json"
    assert main(["predict", str(data / "test"), "--bundle", str(bundle), "--format", "json", "--out", str(out),
                 "--top-k", "3"]) == 0
    rows = json.loads(out.read_text())
    after = predicted(rows)
    assert len(rows) == 12 and all(len(r["predictions"]) == 3 for r in rows)
    assert accuracy(after, NEW) == 1.0 and accuracy(after, OLD) >= accuracy(before, OLD) - 0.1

    smaller = tmp_path / "smaller.bundle"
    added = bundle.read_bytes()
    assert main(["remove-products", "green", "--bundle", str(bundle), "--out", str(smaller)]) == 0
    assert bundle.read_bytes() == added  # --out leaves the input alone
    assert main(["predict", str(data / "test" / "green"), "--bundle", str(smaller), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    ranks = [f"{part}_{i}" for i in range(1, 6) for part in ("label", "probability")]
    assert list(table[0]) == ["image", "answer", "known_score", "threshold", *ranks]  # one row per image, top-5 across
    assert len(table) == 2 and [Path(r["image"]).parent.name for r in table] == ["green", "green"]
    assert "green" not in {r[f"label_{i}"] for r in table for i in range(1, 6)}
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) for r in table)


def test_fit_from_a_bundle_and_table_output(data: Path, shop: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    refit = tmp_path / "refit.bundle"
    assert main(["fit", str(data / "new"), "--bundle", str(shop), "--out", str(refit)]) == 0
    assert main(["predict", str(data / "test" / "black" / "0.jpg"), "--bundle", str(refit), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "answer", "score", "top", "products"]
    assert lines[1].split()[:2] == ["0.jpg", "black"] and lines[1].split()[3] == "black"
    assert set(load_bundle(refit).class_names) == set(NEW)  # fit replaced the bundle's products


def test_the_table_fits_100_columns_and_csv_and_json_keep_everything(tmp_path: Path) -> None:
    long_name = "a product with a very long name indeed, " * 3
    rows = [{"image": str(tmp_path / "deep" / ("folder" * 10) / f"{i}.jpg"), "answer": long_name if i else "unknown",
             "known": bool(i), "known_score": -12.3456 + i, "threshold": 0.5,
             "predictions": [{"product": f"{long_name}{r}", "probability": 0.1} for r in range(10)]}
            for i in range(3)]
    table = commands.format_table(rows)
    assert max(len(line) for line in table.splitlines()) <= 100, table
    assert table.splitlines()[1].split()[0].endswith("0.jpg") and "..." in table
    assert f"{long_name}9" in commands.format_csv(rows) and f"{long_name}9" in commands.format_json(rows)


def test_embed_writes_features_paths_and_the_backbone(data: Path, shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "features.npz"
    assert main(["embed", str(data / "test" / "red"), str(data / "test" / "blue" / "0.jpg"), "--bundle", str(shop),
                 "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert sorted(arrays) == ["architecture", "bundle", "features", "image_size", "paths"]  # as --help says
    assert all(name in cli_module.EMBEDDINGS_ARRAYS for name in arrays)
    assert arrays["features"].shape == (3, 96) and arrays["features"].dtype == np.float32
    paths = arrays["paths"]
    assert paths.dtype.kind == "U" and paths.shape == (3,)  # a string array, not JSON in the metadata
    assert paths[-1].endswith("blue/0.jpg") and all(p.startswith(str(data / "test" / "red")) for p in paths[:2])
    assert str(arrays["architecture"]) == "test_resnet" and int(arrays["image_size"]) == SIZE
    assert str(arrays["bundle"]) == str(shop)
    expected = predict_files(shop, list(paths), k=1)  # the same features the Python API computes
    np.testing.assert_allclose(load_bundle(shop).probe.probabilities(arrays["features"]),  # type: ignore[union-attr]
                               expected.probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(commands.load_embeddings(out)[0], arrays["features"])
    assert commands.load_embeddings(out)[1] == paths.tolist()


def test_load_embeddings_reads_files_that_kept_paths_as_json(tmp_path: Path) -> None:
    from retailnb.evaluation.features import save_features

    old = save_features(tmp_path / "old.npz", np.ones((2, 4)), [-1, -1], [], paths=["a.jpg", "b.jpg"])
    features, paths = commands.load_embeddings(old)
    assert features.shape == (2, 4) and paths == ["a.jpg", "b.jpg"]
    no_paths = save_features(tmp_path / "plain.npz", np.ones((2, 4)), [0, 1], ["x", "y"])
    with pytest.raises(ValueError, match="without image paths"):
        commands.load_embeddings(no_paths)


def other_version(src: Path, dst: Path) -> Path:
    """A copy of a bundle that says it has another format version."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "bundle.json":
                data = json.dumps({**json.loads(data), "format_version": 99}).encode()
            zout.writestr(item, data)
    return dst


def broken_folder(root: Path) -> Path:
    """A product folder with a JPEG that is cut short."""
    folder = write_folder(root / "broken", ["black"], 2, seed=3)
    (folder / "black" / "1.jpg").write_bytes((folder / "black" / "0.jpg").read_bytes()[:100])
    return folder


BAD_INPUTS = {
    "unreadable image": (lambda d, t: ["add-products", str(broken_folder(t))], "broken/black/1.jpg: "),
    "not a product folder": (lambda d, t: ["add-products", str(d / "new" / "black")],
                             "directly in the folder"),
    "split layout": (lambda d, t: ["add-products", str(write_folder(t / "ds" / "train", NEW, 1, 0).parent)],
                     "pass one split's folder"),
    "existing product": (lambda d, t: ["add-products", str(d / "old")], "already in the bundle: 'blue'"),
    "unknown product": (lambda d, t: ["remove-products", "purple"], "no such product(s) in the bundle: 'purple'"),
    "unreadable image to predict": (lambda d, t: ["predict", str(broken_folder(t)), "--on-error", "raise"],
                                    "broken/black/1.jpg: "),
    "unreadable image to embed, by default": (
        lambda d, t: ["embed", str(broken_folder(t)), "--out", str(t / "f.npz")],
        "(--on-error skip goes past unreadable images)"),
    "missing image": (lambda d, t: ["predict", str(t / "nothing.jpg")], "no such image file or folder"),
    "fit on the bundle with backbone options": (
        lambda d, t: ["fit", str(d / "new"), "--image-size", "32", "--out", str(t / "x.bundle")], "not both"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_message_exit_2_and_leaves_the_bundle(case: str, data: Path, shop: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "shop.bundle"
    bundle.write_bytes(shop.read_bytes())
    args, message = BAD_INPUTS[case]
    assert main([*args(data, tmp_path), "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert bundle.read_bytes() == shop.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".bundle") == ["shop.bundle"]


@pytest.mark.parametrize("command", [["add-products", "new"], ["remove-products", "red"], ["predict", "test"]])
def test_bundles_of_another_format_or_missing_are_refused(command: list[str], data: Path, shop: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(data / command[1]) if command[0] != "remove-products" else command[1]]
    old = other_version(shop, tmp_path / "old.bundle")
    content = old.read_bytes()
    assert main([command[0], *args, "--bundle", str(old)]) == 2
    assert "bundle format 99, this retailnb reads 1, 2, 3 and 4 " in capsys.readouterr().err
    assert old.read_bytes() == content
    assert main([command[0], *args, "--bundle", str(tmp_path / "none.bundle")]) == 2
    assert "bundle not found" in capsys.readouterr().err


def test_skip_goes_past_a_broken_link_in_a_folder(data: Path, shop: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A folder's entries are listed once, by the functions the CLI calls: a broken link is skipped, not "missing"."""
    folder = tmp_path / "shelf"
    folder.mkdir()
    (folder / "0.jpg").write_bytes((data / "test" / "red" / "0.jpg").read_bytes())
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    out = tmp_path / "p.csv"
    assert main(["predict", str(folder), "--bundle", str(shop), "--format", "csv", "--out", str(out),
                 "--on-error", "skip"]) == 0
    assert "skipped 1 of 2 images" in capsys.readouterr().err
    assert [row["label_1"] for row in csv.DictReader(out.open())] == ["red"]
    assert main(["predict", str(folder), "--bundle", str(shop)]) == 2  # raise, the default
    err = capsys.readouterr().err
    assert "gone.jpg: broken symbolic link" in err and "--on-error skip" in err and err.count("\n") == 1


def test_fit_without_a_backbone_says_what_is_missing(data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(data / "old"), "--architecture", "test_resnet", "--out", str(tmp_path / "b")]) == 2
    assert "without --bundle, fit needs --backbone-weights: a weights file" in capsys.readouterr().err
    assert main(["fit", str(data / "old"), "--backbone-weights", "none", "--image-size", "32",
                 "--out", str(tmp_path / "b")]) == 2
    assert "--backbone-weights none needs --architecture" in capsys.readouterr().err
    assert main(["fit", str(data / "old"), "--backbone-weights", str(data / "backbone.pt"),
                 "--out", str(tmp_path / "b")]) == 2  # no backbone.json beside it
    assert "give the architecture and image size of the backbone: " in capsys.readouterr().err
    assert main(["fit", str(data / "old"), "--architecture", "resnt18", "--backbone-weights", "none",
                 "--image-size", "32", "--out", str(tmp_path / "b")]) == 2
    assert "unknown timm model name 'resnt18'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.pipeline
def test_the_console_command_runs_in_a_fresh_process(data: Path, shop: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "retailnb.bundle.cli", "predict", str(data / "test" / "red"), "--bundle", str(shop),
         "--format", "csv", "--top-k", "2"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["label_1"] for r in rows] == ["red", "red"] and "label_3" not in rows[0]
    assert "images/s" in result.stderr and "Traceback" not in result.stderr


def heavy_modules_after(args: list[str]) -> tuple[int, list[str], str, str]:
    """``main(args)`` in a fresh Python process: its exit status, which of torch, timm, torchvision and scikit-learn
    it imported, its stdout (without that list) and its stderr."""
    code = (
        "import sys\n"
        "from retailnb.bundle.cli import main\n"
        "try:\n"
        f"    code = main({args!r})\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print(code, sorted(m for m in ('torch', 'timm', 'torchvision', 'sklearn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *out, last = done.stdout.splitlines()
    status, modules = last.split(" ", 1)
    return int(status), json.loads(modules.replace("'", '"')), "\n".join(out), done.stderr


@pytest.mark.pipeline
def test_a_status_line_says_what_a_command_loads_in_a_terminal(data: Path, shop: Path) -> None:
    """In a terminal, stderr shows what is loading while torch and the bundle load, then erases it; piped, nothing."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # a 100-column terminal
    args = [sys.executable, "-m", "retailnb", "predict", str(data / "test" / "red"), "--bundle", str(shop),
            "--device", "cpu"]
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=child, timeout=180, check=False)
    os.close(child)
    received = b""
    while select.select([parent], [], [], 1.0)[0]:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the terminal closed: everything is read
            break
        if not chunk:
            break
        received += chunk
    os.close(parent)
    shown = received.decode(errors="replace")
    assert done.returncode == 0, shown
    assert "retailnb predict: loading torch, timm and scikit-learn" in shown
    assert f"retailnb predict: loading {shop} onto cpu" in shown and "predicting on cpu: 2 images" in shown
    piped = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert "loading" not in piped.stderr and "predicting on cpu: 2 images" in piped.stderr


def test_help_and_usage_errors_answer_without_importing_torch() -> None:
    """The parser is light; torch, timm and scikit-learn load only once a command runs."""
    status, modules, out, err = heavy_modules_after(["predict"])
    assert (status, modules) == (2, []) and "the following arguments are required" in err
    status, modules, out, err = heavy_modules_after(["--help"])
    assert (status, modules) == (0, []) and out.startswith("usage: retailnb")
    status, modules, out, err = heavy_modules_after(["--version"])
    assert (status, modules) == (0, []) and out == f"retailnb {retailnb.__version__}"


def test_path_errors_and_info_answer_without_importing_torch(data: Path, shop: Path, tmp_path: Path) -> None:
    """A missing bundle, image or folder, a bundle of another version, a backbone that does not match its
    backbone.json: one line, before torch is imported; and ``info`` reads a real bundle without it."""
    status, modules, out, err = heavy_modules_after(["info", "/nonexistent.bundle"])
    assert (status, modules) == (2, []) and err == "retailnb info: error: bundle not found: /nonexistent.bundle\n"
    status, modules, out, err = heavy_modules_after(["info", str(shop)])
    assert (status, modules) == (0, []) and "test_resnet (96 features)" in out and "4 products" in out
    weights = described_backbone(tmp_path, data)
    wrong = {
        "predict, missing bundle": (["predict", str(data / "test"), "--bundle", "/none.bundle"], "bundle not found"),
        "predict, missing image": (["predict", str(tmp_path / "x.jpg"), "--bundle", str(shop)], "no such image file"),
        "embed, other version": (["embed", str(data / "test"), "--bundle", str(other_version(shop, tmp_path / "v.b")),
                                  "--out", str(tmp_path / "f.npz")], "bundle format 99"),
        "add-products, not a folder": (["add-products", str(tmp_path / "none"), "--bundle", str(shop)], "not a folder"),
        "fit, other architecture": (["fit", str(data / "old"), "--backbone-weights", str(weights), "--architecture",
                                     "resnet18", "--out", str(tmp_path / "b.bundle")],
                                    "architecture 'resnet18' does not match the weights"),
    }
    for case, (args, message) in wrong.items():
        status, modules, out, err = heavy_modules_after(args)
        assert (status, modules) == (2, []), case
        assert err.startswith(f"retailnb {args[0]}: error: ") and message in err and err.count("\n") == 1, (case, err)


def described_backbone(folder: Path, data: Path) -> Path:
    """A copy of the test backbone with the backbone.json that the pipeline writes beside its weights."""
    from retailnb.models.backbone_info import write_backbone_info

    weights = folder / "described" / "backbone.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes((data / "backbone.pt").read_bytes())
    write_backbone_info(weights.parent / "backbone.json", architecture="test_resnet", image_size=SIZE, feature_dim=96)
    return weights


def test_fit_with_only_the_weights_reads_backbone_json(data: Path, shop: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    weights = described_backbone(tmp_path, data)
    out = tmp_path / "described.bundle"
    assert main(["fit", str(data / "old"), "--backbone-weights", str(weights), "--out", str(out)]) == 0
    fitted = load_bundle(out)
    assert fitted.architecture == "test_resnet" and fitted.preprocessing.image_size == SIZE
    assert main(["fit", str(data / "old"), "--backbone-weights", str(weights), "--architecture", "test_resnet",
                 "--image-size", "40", "--out", str(tmp_path / "bigger.bundle")]) == 0  # given values win
    assert load_bundle(tmp_path / "bigger.bundle").preprocessing.image_size == 40
    capsys.readouterr()
    assert main(["fit", str(data / "old"), "--backbone-weights", str(weights), "--architecture",
                 "mobilenetv3_small_100", "--out", str(tmp_path / "x.bundle")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'mobilenetv3_small_100'" in err and "a 'test_resnet' backbone" in err, err
    assert not (tmp_path / "x.bundle").exists()


def test_weights_of_another_architecture_are_one_line(data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Without a backbone.json to check against first, the load itself fails: in one line, not torch's list."""
    assert main(["fit", str(data / "old"), "--backbone-weights", str(data / "backbone.pt"), "--architecture",
                 "resnet10t", "--image-size", "32", "--out", str(tmp_path / "x.bundle")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400, err
    assert "does not fit timm model 'resnet10t'" in err and "differ in shape (first: " in err


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"retailnb {retailnb.__version__}\n"


def test_python_dash_m_retailnb_is_the_command_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "retailnb"]
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: retailnb ") and "info" in helped.stdout and "predict" in helped.stdout
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert version.stdout == f"retailnb {retailnb.__version__}\n"
    wrong = subprocess.run([*run, "predict", "x.jpg", "--bundle", "b", "--device", "tpu"], capture_output=True,
                           text=True, env=env, timeout=120, check=False)
    assert wrong.returncode == 2 and "invalid choice: 'tpu'" in wrong.stderr


def loaded_devices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on the CLI's ``load_bundle``: the device of each backbone it returns."""
    devices: list[str] = []

    def spy(*args: object, **kwargs: object) -> Bundle:
        bundle = load_bundle(*args, **kwargs)  # type: ignore[arg-type]
        devices.extend({t.device.type for t in bundle.backbone.state_dict().values()})
        return bundle

    monkeypatch.setattr(commands, "load_bundle", spy)
    return devices


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_device_loads_the_backbone_there(device: str, data: Path, shop: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    devices = loaded_devices(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto means cpu here, on any machine
    assert main(["predict", str(data / "test" / "red"), "--bundle", str(shop), "--device", device]) == 0
    assert devices == ["cpu"]
    assert "predicting on cpu: 2 images" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_device_cuda_without_cuda_is_one_line_exit_2(command: str, data: Path, shop: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "features.npz"
    args = [command, str(data / "test" / "red"), "--bundle", str(shop), "--device", "cuda", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"retailnb {command}: error: --device cuda: CUDA is not available")
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_predict_on_cuda_gives_the_cpu_answer(data: Path, shop: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    devices = loaded_devices(monkeypatch)
    tops = {}
    for device in ("cuda", "cpu"):
        assert main(["predict", str(data / "test"), "--bundle", str(shop), "--format", "json", "--device", device,
                     "--batch-size", "5"]) == 0
        tops[device] = predicted(json.loads(capsys.readouterr().out))
    assert devices == ["cuda", "cpu"] and tops["cuda"] == tops["cpu"]


def test_batch_size_and_workers_reach_the_embedding(data: Path, shop: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int | None]] = []

    def spying(real: Any) -> Any:
        def spy(bundle: Bundle, paths: list[Path], **kwargs: object) -> Any:
            calls.append((kwargs["batch_size"], kwargs["workers"]))  # type: ignore[arg-type]
            return real(bundle, paths, **kwargs)
        return spy

    monkeypatch.setattr(predict_mod, "embed_files", spying(predict_mod.embed_files))  # what predict_files calls
    monkeypatch.setattr(commands, "embed_files", spying(commands.embed_files))  # what embed calls
    assert main(["predict", str(data / "test"), "--bundle", str(shop), "--format", "json", "--batch-size", "5",
                 "--workers", "2"]) == 0
    small = predicted(json.loads(capsys.readouterr().out))
    assert main(["predict", str(data / "test"), "--bundle", str(shop), "--format", "json"]) == 0
    assert predicted(json.loads(capsys.readouterr().out)) == small  # batching changes no answer
    assert main(["embed", str(data / "test"), "--bundle", str(shop), "--out", str(tmp_path / "f.npz"),
                 "--batch-size", "3", "--workers", "1"]) == 0
    assert calls == [(5, 2), (64, None), (3, 1)]
    with pytest.raises(SystemExit) as exit:
        main(["predict", str(data / "test"), "--bundle", str(shop), "--batch-size", "0"])
    assert exit.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_info_lists_products_with_image_counts_and_provenance(data: Path, shop: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(shop)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(shop)
    text = "\n".join(lines)
    for expected in ("format version  ", "test_resnet (96 features)", "32 px", "backbone.pt (sha256 ",
                     "history 1", "fit blue, green, red, yellow: 16 images from",
                     "(cross-validation); retailnb", "4 products, 16 training images"):
        assert expected in text, (expected, text)
    products = lines[lines.index(next(line for line in lines if line.split() == ["product", "images"])) + 1:]
    assert [line.split() for line in products] == [[name, "4"] for name in OLD]
    assert main(["info", str(shop), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["products"] == dict.fromkeys(OLD, 4) and info["format_version"] == BUNDLE_FORMAT
    assert info["architecture"] == "test_resnet" and info["preprocessing"]["image_size"] == SIZE
    assert info["provenance"]["backbone"]["weights"] == str(data / "backbone.pt")


def test_info_on_a_bad_bundle_is_one_line_exit_2(data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for path, message in [(tmp_path / "none.bundle", "bundle not found"), (data / "backbone.pt", "not a ")]:
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("retailnb info: error: ") and message in err and err.count("\n") == 1, err


def test_predict_files_gives_the_cli_top_1(data: Path, shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(data / "test"), "--bundle", str(shop), "--format", "json", "--top-k", "1"]) == 0
    cli = predicted(json.loads(capsys.readouterr().out))
    result = predict_files(shop, [data / "test"], k=1)
    assert {str(p): names[0] for p, names in zip(result.paths, result.names())} == cli
    assert len(cli) == 12 and accuracy(cli, OLD) == 1.0
    assert result.classes_.tolist() == OLD and result.probabilities.shape == (12, 4)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0)


@pytest.mark.parametrize("case", ["bundle", "photo", "photo_in_folder", "other_kind"])
def test_an_output_never_replaces_an_input_unless_forced(tmp_path: Path, case: str) -> None:
    """``--out`` naming the bundle, an input image (given or inside a given folder) or a file of another kind
    is refused in one line before anything runs, and the file is unchanged; ``--force`` lets it through."""
    from retailnb.bundle.cli import build_parser, check_out

    photos = tmp_path / "photos"
    photos.mkdir()
    photo = photos / "a.png"
    photo.write_bytes(b"\x89PNG not really")
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(b"PK bundle")
    other = tmp_path / "notes.bin"
    other.write_bytes(b"\x00\x01\x02binary")
    out, images = {"bundle": (bundle, [str(photo)]), "photo": (photo, [str(photo)]),
                   "photo_in_folder": (photo, [str(photos)]), "other_kind": (other, [str(photos)])}[case]
    argv = ["predict", *images, "--bundle", str(bundle), "--out", str(out)]
    with pytest.raises(ValueError, match=r"--out .* (is the bundle read|is an input|exists and is not a text file)"):
        check_out(build_parser().parse_args(argv))
    check_out(build_parser().parse_args([*argv, "--force"]))  # forced: no objection
    embed = ["embed", str(photos), "--bundle", str(bundle), "--out", str(bundle)]
    with pytest.raises(ValueError, match="is the bundle read"):
        check_out(build_parser().parse_args(embed))


def test_the_cli_refuses_to_overwrite_the_bundle_with_exit_2(tmp_path: Path) -> None:
    from retailnb.bundle.cli import main

    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(b"not read: refused first")
    (tmp_path / "p.png").write_bytes(b"x")
    before = bundle.read_bytes()
    assert main(["predict", str(tmp_path / "p.png"), "--bundle", str(bundle), "--out", str(bundle)]) == 2
    assert bundle.read_bytes() == before


def test_a_table_row_stays_one_line_whatever_the_file_is_named() -> None:
    from retailnb.bundle.commands import format_table

    rows = [{"image": "shelf/a\nb.png", "answer": "tea\tbag", "known_score": 0.9, "threshold": 0.5,
             "predictions": [{"product": "tea\tbag", "probability": 0.9}]},
            {"image": "shelf/c.png", "answer": "jam", "known_score": 0.8, "threshold": 0.5,
             "predictions": [{"product": "jam", "probability": 0.8}]}]
    lines = format_table(rows).splitlines()
    assert len(lines) == 3 and "a\\nb.png" in lines[1] and "tea\\tbag" in lines[1]


def test_one_file_under_several_spellings_is_embedded_once(tmp_path: Path) -> None:
    from retailnb.bundle.embed import once_each

    (tmp_path / "imgs").mkdir()
    f = tmp_path / "imgs" / "f.png"
    f.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(f)
    spellings = [f, tmp_path / "imgs" / "." / "f.png", tmp_path / "imgs" / ".." / "imgs" / "f.png", tmp_path / "link.png"]
    assert once_each(spellings) == [f]


@pytest.mark.parametrize("size", ["8", "100000"])
def test_fit_refuses_an_image_size_that_cannot_be_meant(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``fit --image-size 100000`` would allocate 894 GiB: refused by the argument parser, in one line."""
    from retailnb.bundle.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "photos", "--backbone-weights", "none", "--architecture", "resnet10t",
                                   "--image-size", size, "--out", "x.bundle"])
    assert f"must be a side of 16 to 1024 pixels, got {size}" in capsys.readouterr().err
