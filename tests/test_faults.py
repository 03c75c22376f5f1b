"""Fault injection: concurrent edits, kills mid-write, bad folder entries and every CLI error case.

Each test reproduces a failure found by trying the landed code as a new user would (issue 15) and
asserts the outcome: nothing lost, nothing silent, one line per error, nothing left behind. Everything
is tiny (32 px images, ``test_resnet``, probes of a few feature rows) so the module runs in about a
minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from retailnb.bundle.fit import add_products, fit_probe, new_bundle
from retailnb.bundle.io import edit_bundle, load_bundle, save_bundle
from retailnb.util.locks import BusyError, exclusive, lock_path
from shared_fixtures import write_colour_folder

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
EDITS = 20
"""Concurrent edits per process in the concurrency test: 20 pairs."""


def features_of(name: str, dim: int, n: int = 3) -> np.ndarray:
    """``n`` feature rows for product ``name``: a fixed random direction per name, plus noise."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    centre = rng.normal(size=dim).astype(np.float32)
    return centre + 0.1 * rng.normal(size=(n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of two products on a random ``test_resnet`` backbone, with features made up (no images)."""
    bundle = new_bundle("test_resnet", image_size=32)
    x = np.concatenate([features_of("p", bundle.feature_dim), features_of("q", bundle.feature_dim)])
    fitted = fit_probe(bundle, x, ["p"] * 3 + ["q"] * 3)
    return save_bundle(fitted, tmp_path_factory.mktemp("faults") / "tiny.bundle")


def python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, check=False)


EDITOR = """
    import sys, time
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_faults import features_of
    from retailnb.bundle.fit import add_products
    from retailnb.bundle.io import edit_bundle
    path, prefix, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    while time.time() < start:  # both editors begin together
        time.sleep(0.005)
    for i in range({edits}):
        name = f"{{prefix}}{{i}}"
        edit_bundle(path, lambda b: add_products(b, features_of(name, b.feature_dim), [name] * 3), timeout=120)
    print("done")
"""


@pytest.mark.pipeline
def test_concurrent_edits_in_two_processes_all_land_and_readers_see_whole_bundles(
        tiny_bundle: Path, tmp_path: Path) -> None:
    """20 pairs of concurrent load-modify-save edits: every added product is in the final bundle."""
    path = tmp_path / "shop.bundle"
    path.write_bytes(tiny_bundle.read_bytes())
    code = textwrap.dedent(EDITOR.format(tests=str(REPO / "tests"), edits=EDITS))
    start = str(time.time() + 8)  # time for both interpreters to import torch
    editors = [subprocess.Popen([sys.executable, "-c", code, str(path), prefix, start], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for prefix in "ab"]
    loads = 0
    while any(e.poll() is None for e in editors):  # a reader meanwhile: never a half-written bundle
        load_bundle(path)
        loads += 1
    outputs = [e.communicate(timeout=10) for e in editors]
    assert [e.returncode for e in editors] == [0, 0], [err for _, err in outputs]
    final = load_bundle(path)
    expected = {"p", "q"} | {f"{prefix}{i}" for prefix in "ab" for i in range(EDITS)}
    assert set(final.class_names) == expected
    assert len(final.provenance["history"]) == 1 + 2 * EDITS
    assert loads > 0
    assert sorted(p.name for p in tmp_path.iterdir()) in (["shop.bundle"], [".shop.bundle.lock", "shop.bundle"])


@pytest.mark.pipeline
def test_an_edit_waits_for_the_lock_or_says_busy(tiny_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "shop.bundle"
    path.write_bytes(tiny_bundle.read_bytes())
    before = path.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom retailnb.util.locks import exclusive\n"
         "with exclusive(sys.argv[1], 600):\n    print('locked', flush=True)\n    time.sleep(60)\n", str(path)],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(BusyError, match=r"shop\.bundle: busy, another retailnb command"):
            edit_bundle(path, lambda b: b, timeout=0.2)
        cli = subprocess.run([sys.executable, "-m", "retailnb", "remove-products", "p", "--bundle", str(path),
                              "--wait", "0"], capture_output=True, text=True, env=ENV, timeout=120, check=False)
        assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "busy" in cli.stderr, cli.stderr
        assert path.read_bytes() == before
    finally:
        holder.kill()  # the OS drops a dead holder's lock: the next edit goes through at once
        holder.wait()
    edited = edit_bundle(path, lambda b: add_products(b, features_of("r", b.feature_dim), ["r"] * 3), timeout=5)
    assert "r" in load_bundle(path).class_names and "r" in edited.class_names


def test_the_lock_file_sits_beside_the_bundle_and_locks_within_a_process_too(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.bundle"
    with exclusive(target, 0) as locked:
        assert locked == target and lock_path(target) == tmp_path / "sub" / ".x.bundle.lock"
        assert lock_path(target).exists()


@pytest.mark.pipeline
def test_two_cli_edits_at_once_both_land(tiny_bundle: Path, tmp_path: Path) -> None:
    """The reported case: two ``retailnb remove-products`` on one bundle at once; both removals stay."""
    path = tmp_path / "shop.bundle"
    dim = load_bundle(tiny_bundle).feature_dim
    edit_bundle(tiny_bundle, lambda b: add_products(b, np.concatenate([features_of(n, dim) for n in "xy"]),
                                                    ["x"] * 3 + ["y"] * 3), out=path)
    runs = [subprocess.Popen([sys.executable, "-m", "retailnb", "remove-products", name, "--bundle", str(path)],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "xy"]
    errors = [r.communicate(timeout=300)[1] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], errors
    assert load_bundle(path).class_names == ("p", "q")


# --------------------------------------------------------------------------------------------------
# Every user error of the command line: exit 2, one line on stderr, the user's path, no traceback
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shots/<colour>/<i>.jpg``: two tiny products of two images each, and a file ``shots/afile``."""
    root = write_colour_folder(tmp_path_factory.mktemp("shots"), ["red", "blue"], 2, size=32)
    (root / "afile").write_text("not a folder\n")
    return root


CLI_ERRORS = {
    # case: (arguments given shots folder S, bundle B, temporary folder T; what the line must say)
    "predict --out under a file": (lambda s, b, t: ["predict", f"{s}/red", "--bundle", b, "--out", f"{s}/afile/p.csv"],
                                   "afile is a file, not a folder"),
    "predict --out two below a file": (
        lambda s, b, t: ["predict", f"{s}/red", "--bundle", b, "--out", f"{s}/afile/x/p.csv"],
        "afile is a file, not a folder"),
    "predict --out is a folder": (lambda s, b, t: ["predict", f"{s}/red", "--bundle", b, "--out", t],
                                  "is a folder"),
    "embed --out under a file": (lambda s, b, t: ["embed", f"{s}/red", "--bundle", b, "--out", f"{s}/afile/f.npz"],
                                 "afile is a file, not a folder"),
    "fit --out under a file": (lambda s, b, t: ["fit", s, "--bundle", b, "--out", f"{s}/afile/n.bundle"],
                               "afile is a file, not a folder"),
    "add-products --out under a file": (
        lambda s, b, t: ["add-products", s, "--bundle", b, "--out", f"{s}/afile/n.bundle"],
        "afile is a file, not a folder"),
    "remove-products --out is a folder": (lambda s, b, t: ["remove-products", "p", "--bundle", b, "--out", t],
                                          "is a folder"),
    "info of a folder": (lambda s, b, t: ["info", t], "bundle not found"),
    "predict a missing image": (lambda s, b, t: ["predict", f"{t}/none.jpg", "--bundle", b], "no such image"),
    "add-products of a file": (lambda s, b, t: ["add-products", f"{s}/afile", "--bundle", b], "not a folder"),
    "predict --out without permission": (
        lambda s, b, t: ["predict", f"{s}/red", "--bundle", b, "--out", "/sys/kernel/p.csv"], "Permission denied"),
}


@pytest.mark.pipeline
@pytest.mark.parametrize("case", CLI_ERRORS, ids=list(CLI_ERRORS))
def test_every_cli_error_is_one_line_exit_2_naming_the_users_path(case: str, shots: Path, tiny_bundle: Path,
                                                                   tmp_path: Path) -> None:
    if "permission" in case and not os.access("/sys/kernel", os.F_OK):
        pytest.skip("needs /sys/kernel (Linux), where even root may not create files")
    bundle = tmp_path / "shop.bundle"
    bundle.write_bytes(tiny_bundle.read_bytes())
    build, says = CLI_ERRORS[case]
    args = build(str(shots), str(bundle), str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "retailnb", *args], capture_output=True, text=True, env=ENV,
                          timeout=300, check=False)
    err = done.stderr
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and says in err, err
    out = next((a for a, flag in zip(args[1:], args) if flag == "--out"), None)
    assert out is None or out in err, err  # the user's path, never a temporary's
    assert ".tmp" not in err
    assert bundle.read_bytes() == tiny_bundle.read_bytes()


# --------------------------------------------------------------------------------------------------
# predict and embed stop at the first unreadable image (--on-error raise, the default) or go past them (skip)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def shelf(tmp_path: Path) -> tuple[Path, list[Path]]:
    """``shelf/``: four good images and three bad ones (truncated, empty, not an image) among them."""
    root = write_colour_folder(tmp_path / "shelf", ["red", "blue"], 2, size=32)
    good = sorted(root.rglob("*.jpg"))
    bad = [root / "red" / "cut.jpg", root / "blue" / "empty.jpg", root / "blue" / "text.png"]
    bad[0].write_bytes(good[0].read_bytes()[:100])
    bad[1].write_bytes(b"")
    bad[2].write_text("hello")
    return root, bad


@pytest.mark.parametrize("batch_size", ["64", "1"])
def test_predict_skips_bad_images_lists_them_and_predicts_the_rest(shelf: tuple[Path, list[Path]], tiny_bundle: Path,
                                                                   tmp_path: Path, batch_size: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from retailnb.bundle.cli import main

    root, bad = shelf
    out = tmp_path / "p.json"
    assert main(["predict", str(root), "--bundle", str(tiny_bundle), "--format", "json", "--out", str(out),
                 "--batch-size", batch_size, "--on-error", "skip"]) == 0
    import json

    rows = json.loads(out.read_text())
    assert len(rows) == 4 and not {r["image"] for r in rows} & {str(b) for b in bad}
    err = capsys.readouterr().err
    assert "skipped 3 of 7 images that could not be read; listed in" in err
    listed = (tmp_path / "p.json.errors.csv").read_text().splitlines()
    assert listed[0] == "image,problem" and sorted(line.split(",")[0] for line in listed[1:]) == sorted(map(str, bad))
    # a later run that skips nothing removes the stale list
    assert main(["predict", str(root / "red" / "0.jpg"), "--bundle", str(tiny_bundle), "--out", str(out)]) == 0
    assert not (tmp_path / "p.json.errors.csv").exists()


def test_predict_to_stdout_lists_bad_images_on_stderr_and_raise_stops(shelf: tuple[Path, list[Path]],
                                                                      tiny_bundle: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from retailnb.bundle.cli import main

    root, bad = shelf
    assert main(["predict", str(root), "--bundle", str(tiny_bundle), "--format", "csv", "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 + 4  # header, then one row per good image
    assert "skipped 3 of 7" in captured.err and all(str(b) in captured.err for b in bad)
    assert main(["predict", str(root), "--bundle", str(tiny_bundle)]) == 2  # --on-error raise, the default
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut.jpg" in err or "empty.jpg" in err


def test_embed_skips_bad_images_and_only_bad_images_is_an_error(shelf: tuple[Path, list[Path]], tiny_bundle: Path,
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from retailnb.bundle.cli import main
    from retailnb.bundle.commands import load_embeddings

    root, bad = shelf
    out = tmp_path / "f.npz"
    assert main(["embed", str(root), "--bundle", str(tiny_bundle), "--out", str(out), "--on-error", "skip"]) == 0
    features, paths = load_embeddings(out)
    assert features.shape[0] == 4 and not set(paths) & {str(b) for b in bad}
    assert (tmp_path / "f.npz.errors.csv").is_file()
    capsys.readouterr()
    assert main(["embed", *map(str, bad), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "g.npz"),
                 "--on-error", "skip"]) == 2
    err = capsys.readouterr().err
    assert "none of the 3 images could be read" in err and err.count("\n") == 1


def test_predict_files_on_error_skip_returns_the_failures(shelf: tuple[Path, list[Path]], tiny_bundle: Path) -> None:
    from retailnb.bundle.predict import predict_files
    from retailnb.data.images import ImageError

    root, bad = shelf
    predictions = predict_files(load_bundle(tiny_bundle), [root], k=1, on_error="skip", workers=2, batch_size=2)
    assert len(predictions.paths) == 4 == len(predictions.indices)
    assert sorted(e.path for e in predictions.failures) == sorted(bad)
    with pytest.raises(ImageError):
        predict_files(load_bundle(tiny_bundle), [root], k=1)


# --------------------------------------------------------------------------------------------------
# Recovery: checkpoints that are not, resume states that cannot load, temporaries of killed runs
# --------------------------------------------------------------------------------------------------


class Unsafe:
    """A class whose pickle torch's safe loader refuses."""


@pytest.mark.parametrize("content", ["random", "text", "empty", "pickled object", "truncated"])
def test_a_weights_file_that_is_no_checkpoint_says_what_it_is_not(content: str, tmp_path: Path) -> None:
    import torch

    from retailnb.models.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "backbone.pt"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "text":
        path.write_text("hello\n")
    elif content == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"x": torch.zeros(3)} if content == "truncated" else {"x": Unsafe()}, path)
        if content == "truncated":
            path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "weights_only" not in message  # never the advice to load it unsafely
    assert ("not a checkpoint" in message) if content != "truncated" else ("truncated or corrupt" in message)


def test_a_corrupt_resume_state_says_how_to_discard_it(tmp_path: Path) -> None:
    from retailnb.models.checkpoint import CheckpointError
    from retailnb.train.engine import can_resume

    state = tmp_path / "train_state.pt"
    state.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # a zip header, cut short: as a kill mid-copy leaves
    with pytest.raises(CheckpointError, match=rf"resume state of an interrupted training run; delete it \(rm {state}\) "
                                              r"or set compute.resume: never"):
        can_resume(state, "key")
    assert not can_resume(state, "key", "never")  # compute.resume: never does not even read it
    state.unlink()
    assert not can_resume(state, "key")


def killed_midway(code: str, *args: str) -> None:
    """Run ``code`` in a new interpreter, wait until it prints ``midway``, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "midway\n":
        proc.kill()
        raise AssertionError(f"the victim did not reach the kill point: {line!r} {proc.communicate()[1]}")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the victim ended before the kill reached it"


SAVE_KILLED = """
    import sys, time
    import numpy as np
    from retailnb.bundle.io import load_bundle, save_bundle
    real = np.lib.format.write_array
    def slow(*args, **kwargs):
        real(*args, **kwargs)
        print("midway", flush=True)  # an entry written, the archive incomplete
        time.sleep(60)
    np.lib.format.write_array = slow
    save_bundle(load_bundle(sys.argv[1]), sys.argv[1])
"""


@pytest.mark.pipeline
def test_sigkill_during_a_bundle_save_leaves_the_bundle_and_the_next_save_cleans_up(tiny_bundle: Path,
                                                                                    tmp_path: Path) -> None:
    path = tmp_path / "shop.bundle"
    path.write_bytes(tiny_bundle.read_bytes())
    killed_midway(SAVE_KILLED, str(path))
    litter = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(litter) == 1 and litter[0].startswith(".shop.bundle."), litter
    assert path.read_bytes() == tiny_bundle.read_bytes()  # the old bundle, whole
    edit_bundle(path, lambda b: add_products(b, features_of("z", b.feature_dim), ["z"] * 3))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert "z" in load_bundle(path).class_names


INGEST_KILLED = """
    import sys, time
    from retailnb.data import prepare
    real = prepare.build_image_folder_manifest
    def slow(root, manifest, **kwargs):
        real(root, manifest, **kwargs)
        print("midway", flush=True)  # the manifest written in the temporary folder, not yet moved
        time.sleep(60)
    prepare.build_image_folder_manifest = slow
    prepare.prepare_dataset("imagefolder", sys.argv[2], root=sys.argv[1], workers=1)
"""


@pytest.mark.pipeline
def test_sigkill_during_an_ingest_leaves_a_folder_the_next_run_removes(shots: Path, tmp_path: Path) -> None:
    from retailnb.data.prepare import prepare_dataset

    root = write_colour_folder(tmp_path / "photos", ["red", "blue"], 2, size=32)
    out = tmp_path / "data" / "prepared"
    killed_midway(INGEST_KILLED, str(root), str(out))
    litter = [p.name for p in out.parent.iterdir()]
    assert len(litter) == 1 and litter[0].startswith(".prepared.tmp-"), litter
    prepare_dataset("imagefolder", out, root=root, workers=1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]
    assert (out / "manifest.csv").is_file()


def test_temporaries_of_running_processes_are_left_alone(tmp_path: Path) -> None:
    from retailnb.util.atomic import atomic_write_text, remove_stale_temporaries

    target = tmp_path / "m.csv"
    mine = tmp_path / f".m.csv.{os.getpid()}.abc.tmp"  # this process: a concurrent writer
    dead = tmp_path / ".m.csv.999999999.abc.tmp"  # no such process
    other = tmp_path / ".n.csv.999999999.abc.tmp"  # another file's
    for p in (mine, dead, other):
        p.write_text("x")
    assert remove_stale_temporaries(target) == [dead]
    atomic_write_text(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name, "m.csv"])


# --------------------------------------------------------------------------------------------------
# Ingest: nothing in a class folder vanishes uncounted; one rule for what an image is
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """``photos/{red,blue}/``: two good images each; in red a dangling link, a link loop and a README.txt."""
    root = write_colour_folder(tmp_path / "photos", ["red", "blue"], 2, size=32)
    (root / "red" / "gone.jpg").symlink_to(root / "red" / "nowhere.jpg")
    (root / "red" / "loop.jpg").symlink_to("loop.jpg")
    (root / "red" / "README.txt").write_text("shot on a phone\n")
    return root


def test_ingest_skip_reports_every_bad_link_and_the_ignored_files(linked: Path, tmp_path: Path) -> None:
    import json

    from retailnb.data.prepare import prepare_dataset

    out = tmp_path / "prepared"
    manifest = prepare_dataset("imagefolder", out, root=linked, on_error="skip", workers=1)
    report = json.loads((out / "ingest_report.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"gone.jpg", "loop.jpg"}
    assert "broken symbolic link" in reasons["gone.jpg"] and "symbolic link loop" in reasons["loop.jpg"]
    assert [Path(p).name for p in report["ignored"]] == ["README.txt"]
    assert "gone.jpg" not in manifest.read_text() and manifest.read_text().count(".jpg") >= 4


def test_ingest_raise_stops_at_a_dangling_link_naming_it_but_not_at_a_readme(linked: Path, tmp_path: Path) -> None:
    from retailnb.data.images import ImageError
    from retailnb.data.prepare import prepare_dataset

    with pytest.raises(ImageError, match=r"red/gone\.jpg: broken symbolic link"):
        prepare_dataset("imagefolder", tmp_path / "a", root=linked, on_error="raise", workers=1)
    (linked / "red" / "gone.jpg").unlink()
    (linked / "red" / "loop.jpg").unlink()
    prepare_dataset("imagefolder", tmp_path / "b", root=linked, on_error="raise", workers=1)  # README.txt ignored
    assert not (tmp_path / "a").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("stray", ["folder", "folder link loop"])
def test_a_folder_inside_a_class_folder_is_named_in_the_error(stray: str, linked: Path, tmp_path: Path) -> None:
    from retailnb.data.adapters import DatasetError
    from retailnb.data.prepare import prepare_dataset

    if stray == "folder":
        (linked / "blue" / "extra").mkdir()
    else:
        (linked / "blue" / "extra").symlink_to("..")
    with pytest.raises(DatasetError, match=r"folders inside class folders \(a class folder holds only images\): "
                                           r"blue/extra"):
        prepare_dataset("imagefolder", tmp_path / "p", root=linked, on_error="skip", workers=1)


def test_the_cli_takes_the_same_images_as_the_ingest(linked: Path, tiny_bundle: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from retailnb.bundle.cli import main
    from retailnb.data.inputs import product_folders

    assert [p.name for p in product_folders(linked)["red"]] == ["0.jpg", "1.jpg", "gone.jpg", "loop.jpg"]
    assert main(["predict", str(linked), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "p.csv"),
                 "--on-error", "skip"]) == 0
    assert "skipped 2 of 6 images" in capsys.readouterr().err
    listed = (tmp_path / "p.csv.errors.csv").read_text()
    assert "gone.jpg,broken symbolic link" in listed and "loop.jpg,symbolic link loop" in listed


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_image_is_reported_by_name(linked: Path, tmp_path: Path) -> None:
    import json

    from retailnb.data.prepare import prepare_dataset

    (linked / "blue" / "0.jpg").chmod(0)
    out = tmp_path / "prepared"
    prepare_dataset("imagefolder", out, root=linked, on_error="skip", workers=1)
    skipped = json.loads((out / "ingest_report.json").read_text())["skipped"]
    assert any(s["path"].endswith("blue/0.jpg") and "Permission denied" in s["reason"] for s in skipped)
