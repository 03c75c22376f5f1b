"""Model bundles: round trip, adding and removing products, and every way a bundle file can be wrong."""

from __future__ import annotations

import copy
import dataclasses
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from retailnb.bundle import io as bundle_io
from retailnb.bundle.embed import embed, embed_files
from retailnb.bundle.fit import add_products, fit_probe, new_bundle, remove_products
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.model import (
    BUNDLE_FORMAT,
    Bundle,
    BundleError,
    ClassNameError,
    LinearProbe,
    ProbeSettings,
    inference_device,
)
from retailnb.bundle.predict import describe_bundle, predict, predict_features, predict_files
from retailnb.data.images import ImageError
from retailnb.evaluation.probe import fit_logistic_probe
from retailnb.config.score_names import SCORES
from shared_fixtures import colour_images

SIZE = 32
OLD, NEW = ["blue", "green", "red", "yellow"], ["black", "white"]


def fitted(base: Bundle, names: list[str], seed: int = 0) -> Bundle:
    images, labels = colour_images(names, 4, seed)
    return fit_probe(base, embed(base, images), labels)


@pytest.fixture(scope="module")
def base() -> Bundle:
    torch.manual_seed(0)
    return new_bundle("test_resnet", image_size=SIZE)


@pytest.fixture(scope="module")
def shop(base: Bundle) -> Bundle:
    return fitted(base, OLD)


def accuracy(b: Bundle, names: list[str], seed: int = 1) -> float:
    images, labels = colour_images(names, 3, seed)
    return float(np.mean([p[0] == t for p, t in zip(predict(b, images, k=1).names(), labels)]))


def test_round_trip_gives_identical_predictions_and_bytes(shop: Bundle, tmp_path: Path) -> None:
    path = save_bundle(shop, tmp_path / "shop.bundle")
    loaded = load_bundle(path)
    images, _ = colour_images(OLD + NEW, 2, seed=3)
    before, after = predict(shop, images, k=3), predict(loaded, images, k=3)
    np.testing.assert_array_equal(before.indices, after.indices)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert loaded.class_names == shop.class_names and loaded.preprocessing == shop.preprocessing
    assert loaded.settings == shop.settings and loaded.provenance == shop.provenance
    np.testing.assert_array_equal(loaded.features, shop.features)
    assert save_bundle(loaded, tmp_path / "again.bundle").read_bytes() == path.read_bytes()  # reproducible


@pytest.mark.parametrize("score", SCORES)
def test_every_rejection_score_round_trips_fit_save_load_predict(shop: Bundle, tmp_path: Path, score: str) -> None:
    b = dataclasses.replace(shop, settings=ProbeSettings(rejection_score=score, recall=0.9))
    fitted = fit_probe(b, shop.features, [OLD[i] for i in shop.labels])
    assert fitted.rejection is not None and (fitted.rejection.score, fitted.rejection.recall) == (score, 0.9)
    loaded = load_bundle(save_bundle(fitted, tmp_path / f"{score}.bundle"))
    assert loaded.rejection == fitted.rejection and loaded.settings == fitted.settings
    images, _ = colour_images(OLD + NEW, 2, seed=3)
    before, after = predict(fitted, images, k=2), predict(loaded, images, k=2)
    assert before.rejection_score == after.rejection_score == score
    assert before.known_scores is not None and after.known_scores is not None
    assert np.isfinite(after.known_scores).all()
    np.testing.assert_allclose(after.known_scores, before.known_scores, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(after.known, before.known)
    assert after.answers == before.answers and after.threshold == loaded.rejection.threshold  # type: ignore[union-attr]


def test_bundle_file_holds_no_pickle(shop: Bundle, tmp_path: Path) -> None:
    with zipfile.ZipFile(save_bundle(shop, tmp_path / "shop.bundle")) as zf:
        names = zf.namelist()
        meta = json.loads(zf.read("bundle.json"))
    assert all(n == "bundle.json" or n.endswith(".npy") for n in names)
    assert meta["format_version"] == BUNDLE_FORMAT and meta["class_names"] == OLD
    assert meta["provenance"]["history"][0]["operation"] == "fit"
    assert meta["retailnb_version"] and meta["architecture"] == "test_resnet"


@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_probe_matches_the_sklearn_pipeline(n_classes: int) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 6)
    x = rng.normal(size=(len(y), 8)) + y[:, None]
    pipe = fit_logistic_probe(x, y)
    np.testing.assert_allclose(LinearProbe.from_pipeline(pipe).probabilities(x), pipe.predict_proba(x), atol=1e-9)


def test_add_products_recognises_new_products_and_keeps_old_accuracy(base: Bundle, shop: Bundle) -> None:
    images, labels = colour_images(NEW, 3, seed=5)
    enrolled = add_products(shop, embed(shop, images), labels)
    assert enrolled.class_names == (*OLD, *NEW)  # old indices unchanged, new ones appended
    assert accuracy(enrolled, NEW) == 1.0
    assert accuracy(enrolled, OLD) >= accuracy(shop, OLD) - 0.1
    assert shop.class_names == tuple(OLD) and len(shop.labels) == 16  # the input bundle is untouched
    assert enrolled.provenance["history"][-1]["classes"] == NEW
    assert enrolled.provenance["history"][-1]["n_images"] == 6
    assert enrolled.provenance["history"][-1]["c_from"] == "kept" and enrolled.probe.c == shop.probe.c
    chosen = add_products(shop, embed(shop, images), labels, choose_c=True)
    assert chosen.provenance["history"][-1]["c_from"] == "cross-validation"


@pytest.mark.parametrize("uniform_prior", [True, False])
def test_one_shot_products_are_not_outvoted_by_the_class_prior(base: Bundle, uniform_prior: bool) -> None:
    """12 images per old product, 1 per new one, strong regularisation: the training prior alone hides them."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, base.feature_dim)) * 1.6
    b = dataclasses.replace(base, settings=ProbeSettings(cs=(0.01,), uniform_prior=uniform_prior))
    old_y = np.repeat(np.arange(6), 12)
    shop = fit_probe(b, centres[old_y] + rng.normal(size=(72, base.feature_dim)), [f"old{i}" for i in old_y])
    enrolled = add_products(shop, centres[6:] + rng.normal(size=(2, base.feature_dim)), ["new6", "new7"])
    assert enrolled.probe is not None and enrolled.probe.c == 0.01  # the bundle's C, kept
    test_y = np.repeat(np.arange(8), 10)
    top1 = predict_features(enrolled, centres[test_y] + rng.normal(size=(80, base.feature_dim)), k=1).indices[:, 0]
    new_accuracy, old_accuracy = np.mean(top1[60:] == test_y[60:]), np.mean(top1[:60] == test_y[:60])
    assert old_accuracy >= 0.95
    assert new_accuracy >= 0.9 if uniform_prior else new_accuracy == 0.0


def test_fit_probe_takes_each_rows_product_and_orders_products_by_name(base: Bundle) -> None:
    images, labels = colour_images(["red", "blue", "green"], 2, seed=3)
    shop = fit_probe(base, embed(base, images), labels)
    assert shop.class_names == ("blue", "green", "red")
    assert shop.labels.tolist() == [2, 2, 0, 0, 1, 1]
    assert accuracy(shop, ["red", "blue", "green"]) == 1.0
    with pytest.raises(ValueError, match="each of the 6 feature rows, got 5"):
        fit_probe(base, shop.features, labels[:5])
    with pytest.raises(ValueError, match="at least two products"):
        fit_probe(base, shop.features[:2], ["red", "red"])
    with pytest.raises(ClassNameError, match="non-empty"):
        fit_probe(base, shop.features[:2], ["red", " "])


def test_add_products_can_refit_on_given_old_features(shop: Bundle) -> None:
    images, labels = colour_images(NEW, 2, seed=5)
    old_images, old_labels = colour_images(OLD, 1, seed=9)
    enrolled = add_products(shop, embed(shop, images), labels, old_features=embed(shop, old_images),
                            old_labels=[OLD.index(n) for n in old_labels])
    assert len(enrolled.labels) == 4 + 4


def test_adding_an_existing_product_names_it(shop: Bundle) -> None:
    images, _ = colour_images(["red", "black"], 1, seed=2)
    with pytest.raises(ClassNameError, match="'red'"):
        add_products(shop, embed(shop, images), ["red", "black"])


def test_remove_products(shop: Bundle) -> None:
    smaller = remove_products(shop, ["green"])
    assert smaller.class_names == ("blue", "red", "yellow")
    assert sorted(set(smaller.labels.tolist())) == [0, 1, 2] and len(smaller.labels) == 12
    assert accuracy(smaller, ["blue", "red", "yellow"]) == 1.0
    empty = remove_products(shop, OLD)
    assert empty.probe is None and empty.class_names == ()
    with pytest.raises(ValueError, match="no products yet"):
        predict_features(empty, shop.features)


def test_removing_unknown_products_names_them(shop: Bundle) -> None:
    with pytest.raises(ClassNameError, match=r"'gren' \(did you mean 'green'\?\), 'pink'"):
        remove_products(shop, ["gren", "pink"])
    with pytest.raises(ValueError, match="only 'red' would remain"):
        remove_products(shop, ["blue", "green", "yellow"])


def test_an_empty_bundle_takes_products_and_round_trips(base: Bundle, tmp_path: Path) -> None:
    loaded = load_bundle(save_bundle(base, tmp_path / "empty.bundle"))
    assert loaded.probe is None and loaded.class_names == ()
    assert base.features.shape == loaded.features.shape == (0, base.feature_dim)
    images, labels = colour_images(["red", "blue"], 2, seed=0)
    assert add_products(loaded, embed(loaded, images), labels).class_names == ("blue", "red")


def test_embed_and_predict_check_their_inputs(shop: Bundle) -> None:
    with pytest.raises(ValueError, match="32x32"):
        embed(shop, np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        embed(shop, np.zeros((1, SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 96\)"):
        predict_features(shop, np.zeros((1, 5)))
    assert predict_features(shop, shop.features[:2], k=10).indices.shape == (2, 4)  # k capped at the products


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_embed_files_in_batches_and_names_a_broken_image(shop: Bundle, tmp_path: Path, workers: int) -> None:
    images, _ = colour_images(OLD, 2, seed=4)
    paths = [tmp_path / f"{i}.png" for i in range(len(images))]  # lossless: decoding gives the same pixels
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    threads = torch.get_num_threads()
    seen: list[int] = []
    features, embedded, failures = embed_files(shop, paths, batch_size=3, workers=workers, progress=seen.append)
    np.testing.assert_allclose(features, embed(shop, images), rtol=1e-5, atol=1e-5)
    assert list(embedded) == paths and failures == ()
    assert seen == [3, 3, 2]
    assert torch.get_num_threads() == threads  # one intra-op thread per worker only while it runs
    paths[7].write_bytes(b"not an image")
    # a backbone in training mode and the default memory layout, which the run lends out as eval, channels_last
    plain = dataclasses.replace(shop, backbone=copy.deepcopy(shop.backbone).to(memory_format=torch.contiguous_format))
    plain.backbone.train()
    with pytest.raises(ImageError, match="7.png: not an image"):
        embed_files(plain, paths, batch_size=3, workers=workers)  # on_error="raise", the default
    assert torch.get_num_threads() == threads
    assert plain.backbone.training  # the lent model is given back as it was, even after an error
    assert all(p.is_contiguous() for p in plain.backbone.parameters())
    assert not all(p.is_contiguous() for p in shop.backbone.parameters())  # the bundle's own is channels_last
    with pytest.raises(ValueError, match="workers"):
        embed_files(shop, paths, workers=0)
    skipped = embed_files(shop, paths, batch_size=3, workers=workers, on_error="skip")
    assert list(skipped.paths) == paths[:7] and [f.path for f in skipped.failures] == [paths[7]]
    np.testing.assert_allclose(skipped.features, features[:7], rtol=1e-5, atol=1e-5)


def test_embed_files_and_predict_files_take_the_same_inputs_and_on_error(shop: Bundle, tmp_path: Path) -> None:
    """Files and folders, and on_error "raise" by default, in both (the command line's too)."""
    import inspect

    images, labels = colour_images(["red", "blue"], 2, seed=5)
    for i, (image, name) in enumerate(zip(images, labels)):
        (tmp_path / "shelf" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "shelf" / name / f"{i}.png")
    (tmp_path / "shelf" / "notes.txt").write_text("not an image, not listed")
    extra = tmp_path / "extra.png"
    Image.fromarray(images[0]).save(extra)
    embedded = embed_files(shop, [tmp_path / "shelf", extra])
    predicted = predict_files(shop, [tmp_path / "shelf", extra], k=1)
    shelf = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "shelf").glob("*/*.png"))
    assert [p.relative_to(tmp_path).as_posix() for p in embedded.paths] == [*shelf, "extra.png"]  # a folder: sorted
    assert predicted.paths == embedded.paths
    np.testing.assert_allclose(predict_features(shop, embedded.features, k=1).probabilities, predicted.probabilities,
                               rtol=1e-5, atol=1e-6)
    for function in (embed_files, predict_files):
        assert inspect.signature(function).parameters["on_error"].default == "raise"
        with pytest.raises(ValueError, match="on_error must be one of raise, skip"):
            function(shop, [extra], on_error="ignore")
        with pytest.raises(FileNotFoundError, match="no such image file or folder"):
            function(shop, [tmp_path / "missing.png"])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="none of the 1 images could be read"):
        embed_files(shop, [tmp_path / "broken.png"], on_error="skip")


def _rewrite_meta(src: Path, dst: Path, **changes: object) -> None:
    """Copy a bundle with keys of its bundle.json changed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "bundle.json":
                data = json.dumps({**json.loads(data), **changes}).encode()
            zout.writestr(item, data)


def test_load_errors_name_the_problem(shop: Bundle, tmp_path: Path) -> None:
    good = save_bundle(shop, tmp_path / "good.bundle")
    with pytest.raises(FileNotFoundError, match="bundle not found"):
        load_bundle(tmp_path / "missing.bundle")
    (tmp_path / "text.bundle").write_text("hello")
    with pytest.raises(BundleError, match="text.bundle: not a bundle"):
        load_bundle(tmp_path / "text.bundle")
    (tmp_path / "cut.bundle").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BundleError, match="cut.bundle"):
        load_bundle(tmp_path / "cut.bundle")
    _rewrite_meta(good, tmp_path / "v2.bundle", format_version=BUNDLE_FORMAT + 1, retailnb_version="9.0")
    readable = f"bundle format {BUNDLE_FORMAT + 1}, this retailnb reads 1, 2, 3 and {BUNDLE_FORMAT} "
    with pytest.raises(BundleError, match=readable):
        load_bundle(tmp_path / "v2.bundle")
    _rewrite_meta(good, tmp_path / "arch.bundle", architecture="resnet18")
    with pytest.raises(BundleError, match="do not fit timm model 'resnet18'"):
        load_bundle(tmp_path / "arch.bundle")
    np.savez(tmp_path / "features.npz", x=np.zeros(3))
    with pytest.raises(BundleError, match="not a retailnb bundle"):
        load_bundle(tmp_path / "features.npz")


def test_a_failed_save_leaves_the_old_bundle(shop: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_bundle(shop, tmp_path / "shop.bundle")
    before = path.read_bytes()
    calls = []

    def failing_write(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) > 5:
            raise OSError("disk full")
        np.lib.format.write_array.__wrapped__(*args, **kwargs)  # type: ignore[attr-defined]

    failing_write.__wrapped__ = np.lib.format.write_array  # type: ignore[attr-defined]
    monkeypatch.setattr(bundle_io.np.lib.format, "write_array", failing_write)
    images, labels = colour_images(NEW, 1, seed=0)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(add_products(shop, embed(shop, images), labels), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["shop.bundle"]  # no temporary file left behind


def test_preprocessing_normalize_is_the_standardisation_and_keeps_the_memory_format() -> None:
    from retailnb.bundle.model import Preprocessing

    pre = Preprocessing(image_size=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    x = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels_last view
    expected = (x.float() / 255 - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    out = pre.normalize(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.uint8  # input untouched


def test_the_repr_is_a_line_that_says_what_the_bundle_is(shop: Bundle) -> None:
    text = repr(shop)
    assert "\n" not in text and len(text) < 200, text
    assert text == ("Bundle(architecture='test_resnet', image_size=32, products=4, training_images=16, device='cpu', "
                    f"format_version={BUNDLE_FORMAT})")


def test_probabilities_are_named_by_classes_(shop: Bundle) -> None:
    result = predict_features(shop, shop.features, k=2)
    assert shop.classes_.dtype.kind == "U" and shop.classes_.tolist() == OLD
    assert result.classes_.tolist() == OLD and result.probabilities.shape == (16, 4)
    np.testing.assert_allclose(result.probabilities, shop.probe.probabilities(shop.features))
    np.testing.assert_array_equal(result.probabilities.argmax(axis=1), result.indices[:, 0])
    np.testing.assert_array_equal(np.take_along_axis(result.probabilities, result.indices, axis=1), result.scores)
    assert shop.image_counts == dict.fromkeys(OLD, 4)


def test_predict_files_takes_a_bundle_file_and_folders(shop: Bundle, tmp_path: Path) -> None:
    images, labels = colour_images(["red", "blue"], 2, seed=6)
    for i, (image, name) in enumerate(zip(images, labels)):
        (tmp_path / "shelf" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "shelf" / name / f"{i}.png")
    path = save_bundle(shop, tmp_path / "shop.bundle")
    result = predict_files(path, [tmp_path / "shelf"], k=1)
    assert [p.parent.name for p in result.paths] == ["blue", "blue", "red", "red"]  # folders expanded, sorted
    assert [names[0] for names in result.names()] == [p.parent.name for p in result.paths]
    same = predict_files(shop, result.paths, k=1)  # a loaded bundle, and files: the same answer
    np.testing.assert_allclose(same.probabilities, result.probabilities, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no products yet"):
        predict_files(remove_products(shop, OLD), result.paths)


def test_load_bundle_puts_the_backbone_on_the_device_asked_for(shop: Bundle, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_bundle(shop, tmp_path / "shop.bundle")
    assert load_bundle(path, device="cpu").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert all(t.device.type == "cpu" for t in load_bundle(path).backbone.state_dict().values())  # "auto"
    assert inference_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_bundle(path, device="cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        inference_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device("auto") == torch.device("cuda")  # resolved only; nothing is moved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_bundle_loaded_onto_cuda_predicts_as_on_cpu(shop: Bundle, tmp_path: Path) -> None:
    path = save_bundle(shop, tmp_path / "shop.bundle")
    on_gpu = load_bundle(path, device="cuda")
    assert on_gpu.device.type == "cuda" and "device='cuda:0'" in repr(on_gpu)
    images, _ = colour_images(OLD, 2, seed=7)
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    files = sorted(tmp_path.glob("*.png"))
    gpu, cpu = predict_files(on_gpu, files), predict_files(load_bundle(path, device="cpu"), files)
    np.testing.assert_array_equal(gpu.indices[:, 0], cpu.indices[:, 0])
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=1e-3)
    assert save_bundle(on_gpu, tmp_path / "again.bundle").read_bytes() == path.read_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_load_bundle_puts_the_backbone_on_the_gpu_by_default(shop: Bundle, tmp_path: Path) -> None:
    assert load_bundle(save_bundle(shop, tmp_path / "shop.bundle")).device.type == "cuda"


def test_describe_bundle_lists_products_backbone_and_provenance(shop: Bundle) -> None:
    info = describe_bundle(shop)
    assert info["products"] == dict.fromkeys(OLD, 4) and info["n_products"] == 4 and info["n_train"] == 16
    assert info["architecture"] == "test_resnet" and info["preprocessing"]["image_size"] == SIZE
    assert info["format_version"] == BUNDLE_FORMAT and info["feature_dim"] == 96
    assert info["provenance"]["history"][0]["operation"] == "fit"
    json.dumps(info)  # JSON data only


def test_bundle_info_reads_the_file_as_describe_bundle_the_loaded_bundle(shop: Bundle, tmp_path: Path) -> None:
    """The summary of ``retailnb info`` from the file alone (no backbone) is the loaded bundle's, empty or not."""
    from retailnb.bundle.info import bundle_info

    for bundle in (shop, remove_products(shop, OLD), add_products(shop, shop.features[:2], NEW)):
        path = save_bundle(bundle, tmp_path / "b.bundle")
        assert bundle_info(path) == describe_bundle(bundle) == describe_bundle(load_bundle(path))
    with pytest.raises(FileNotFoundError, match="bundle not found"):
        bundle_info(tmp_path / "missing.bundle")
    (tmp_path / "text.bundle").write_text("hello")
    with pytest.raises(BundleError, match="text.bundle: not a bundle"):
        bundle_info(tmp_path / "text.bundle")
    _rewrite_meta(path, tmp_path / "v2.bundle", format_version=BUNDLE_FORMAT + 1)
    with pytest.raises(BundleError, match=f"bundle format {BUNDLE_FORMAT + 1}, this retailnb reads"):
        bundle_info(tmp_path / "v2.bundle")


def rewrite_entry(src: Path, dest: Path, name: str, change: Callable[[bytes], bytes]) -> Path:
    """A copy of the bundle ``src`` with one entry's bytes changed (the zip's CRC written for the new bytes)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, change(data) if info.filename == name else data)
    return dest


def npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize(("entry", "change", "message"), [
    ("probe/coef.npy", lambda d: npy(np.full((4, 8), np.nan, dtype=np.float32)), "probe coef not finite"),
    ("bundle.json", lambda d: json.dumps({**json.loads(d), "class_names": ["blue", "blue", "red", "yellow"]}).encode(),
     "products named twice: 'blue'"),
    ("bundle.json", lambda d: json.dumps({**json.loads(d), "class_names": ["blue", "green", "red", "unknown"]}).encode(),
     "a product named 'unknown'"),
    ("bundle.json", lambda d: json.dumps({**json.loads(d), "class_names": ["Caf\u00e9", "Cafe\u0301", "red", "x"]}).encode(),
     "products named twice: 'Café'"),
])
def test_a_bundle_whose_content_cannot_be_meant_is_refused_on_load(shop: Bundle, tmp_path: Path, entry: str,
                                                                    change: Any, message: str) -> None:
    path = save_bundle(shop, tmp_path / "shop.bundle")
    if entry == "probe/coef.npy":  # the probe's true shape, all NaN
        k, d = shop.probe.coef.shape  # type: ignore[union-attr]
        change = lambda _: npy(np.full((k, d), np.nan, dtype=shop.probe.coef.dtype))  # type: ignore[union-attr]  # noqa: E731
    bad = rewrite_entry(path, tmp_path / "bad.bundle", entry, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


def test_a_forged_array_header_is_refused_before_any_allocation(shop: Bundle, tmp_path: Path) -> None:
    path = save_bundle(shop, tmp_path / "shop.bundle")
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 512)}
    import io

    forged = io.BytesIO()
    np.lib.format.write_array_header_1_0(forged, header)
    bad = rewrite_entry(path, tmp_path / "bad.bundle", "train/features.npy", lambda d: forged.getvalue() + b"\0" * 64)
    with pytest.raises(BundleError, match="train/features.npy declares more data than"):
        load_bundle(bad)


def test_a_flipped_byte_inside_a_weight_is_one_line_naming_the_entry(shop: Bundle, tmp_path: Path) -> None:
    path = save_bundle(shop, tmp_path / "shop.bundle")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.startswith("backbone/") and i.file_size > 4096)
    data[info.header_offset + 30 + len(info.filename) + 2048] ^= 0xFF  # inside the entry's data
    (tmp_path / "flipped.bundle").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"Bad CRC-32 for file '{info.filename}'"):
        load_bundle(tmp_path / "flipped.bundle")


def test_editing_through_a_symbolic_link_changes_the_linked_bundle(shop: Bundle, tmp_path: Path) -> None:
    from retailnb.bundle.io import edit_bundle

    real = save_bundle(shop, tmp_path / "real.bundle")
    link = tmp_path / "link.bundle"
    link.symlink_to(real)
    edit_bundle(link, lambda b: remove_products(b, ["yellow"]))
    assert link.is_symlink() and "yellow" not in load_bundle(real).class_names


def test_product_names_are_compared_in_one_unicode_form(base: Bundle) -> None:
    images, _ = colour_images(["red", "blue"], 3, 0)
    composed, decomposed = "Caf\u00e9", "Cafe\u0301"
    bundle = fit_probe(base, embed(base, images), [composed] * 3 + ["tea"] * 3)
    with pytest.raises(ClassNameError, match="already in the bundle"):
        add_products(bundle, embed(base, images[:3]), [decomposed] * 3)
