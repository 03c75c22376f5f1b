"""Tests of the dataset adapters: image-folder layouts, the Grocery Store layout, bad-input handling."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from retailnb.util import parallel
from retailnb.data.adapters import (
    DEFAULT_ROLE_MAP,
    AdapterReport,
    DatasetError,
    Issues,
    resolve_role_map,
)
from retailnb.data.grocery import (
    build_grocery_manifest,
    find_dataset_dir,
    grocery_candidates,
    read_classes,
)
from retailnb.data.folder import build_image_folder_manifest, detect_layout
from retailnb.data.images import ImageError
from retailnb.data.manifest import Manifest, read_manifest

BAD_KINDS = ("empty", "truncated", "text", "tiny")
REAL_GROCERY = Path(
    os.environ.get("RETAILNB_GROCERY_ROOT", Path(__file__).resolve().parents[3] / "shared/data/GroceryStoreDataset")
)


def images_of(manifest: Manifest, **where: str) -> dict[str, tuple[int, str, str, str, str]]:
    """Distinct images of the rows matching ``where`` -> (label, class, split, domain, group)."""
    rows = [r for r in manifest.records if all(getattr(r, k) == v for k, v in where.items())]
    return {r.path: (r.label, r.class_name, r.split, r.domain, r.group) for r in rows}


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*")), "a temporary file was left behind"


# --- image-folder layouts ---------------------------------------------------------------------------


@pytest.fixture
def class_root(tmp_path, files) -> Path:
    """root/<class>/<image>: cat 3 images, dog 2, eel 1 (plus OS clutter that must be ignored)."""
    root = tmp_path / "classes"
    for name, n in (("cat", 3), ("dog", 2), ("eel", 1)):
        for i in range(n):
            files.rgb(root / name / f"{name}{i}.{'png' if i % 2 else 'jpg'}")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / ".hidden").mkdir()
    return root


@pytest.fixture
def split_root(tmp_path, files) -> Path:
    """root/<split>/<class>/<image>: train has cat and dog, test has dog and eel."""
    root = tmp_path / "splits"
    for split, classes in (("train", ("cat", "dog")), ("test", ("dog", "eel"))):
        for name in classes:
            for i in range(2):
                files.rgb(root / split / name / f"{i}.jpg")
    return root


def test_class_layout_without_lists_puts_everything_in_one_split(tmp_path, class_root):
    out = tmp_path / "m.csv"
    report = build_image_folder_manifest(class_root, out)
    m = read_manifest(out)
    assert detect_layout(class_root, {"train", "test"}) == "class"
    assert report.n_classes == 3 and report.split_counts == {"train": 6} and report.skipped == ()
    assert report.role_counts == {r: (6 if r in DEFAULT_ROLE_MAP["train"] else 0) for r in report.role_counts}
    assert Counter(r.path for r in m.records) == {p: 3 for p in images_of(m)}  # one row per role of train
    labels = {cls: label for label, cls, *_ in images_of(m).values()}
    assert labels == {"cat": 0, "dog": 1, "eel": 2}
    # stored relative to the manifest's folder (portable between checkouts), resolved by the reader
    assert not any(Path(r.path).is_absolute() for r in m.records)
    assert all(p.is_file() for p in m.paths(m.records))
    assert all(r.domain == "unknown" and r.split == "train" for r in m.records)
    assert not any(".DS_Store" in r.path for r in m.records)


def test_default_split_and_domain_are_parameters(tmp_path, class_root):
    out = tmp_path / "m.csv"
    build_image_folder_manifest(class_root, out, default_split="test", domain="shelf")
    m = read_manifest(out)
    assert {r.role for r in m.records} == set(DEFAULT_ROLE_MAP["test"])
    assert {(r.split, r.domain) for r in m.records} == {("test", "shelf")}


def test_split_layout(tmp_path, split_root):
    out = tmp_path / "m.csv"
    report = build_image_folder_manifest(split_root, out)
    m = read_manifest(out)
    assert detect_layout(split_root, {"train", "test"}) == "split"
    assert report.split_counts == {"train": 4, "test": 4} and report.n_classes == 3
    train, test = images_of(m, split="train"), images_of(m, split="test")
    assert {v[:2] for v in train.values()} == {(0, "cat"), (1, "dog")}
    assert {v[:2] for v in test.values()} == {(1, "dog"), (2, "eel")}  # one label per class across splits
    assert all("/train/" in p for p in train) and all("/test/" in p for p in test)
    assert report.role_counts["probe_test"] == 4 and report.role_counts["probe_train"] == 4


def test_split_lists_found_next_to_the_class_folders(tmp_path, class_root):
    (class_root / "train.txt").write_text("cat/cat0.jpg\ncat/cat1.png\n\n# a comment\ndog/dog0.jpg\n")
    (class_root / "test.txt").write_text("cat/cat2.jpg\neel/eel0.jpg\n")
    out = tmp_path / "m.csv"
    report = build_image_folder_manifest(class_root, out)
    m = read_manifest(out)
    assert report.split_counts == {"train": 3, "test": 2}  # dog/dog1.png is in no list: left out
    assert {Path(p).name for p in images_of(m, split="test")} == {"cat2.jpg", "eel0.jpg"}
    assert {v[1] for v in images_of(m, split="test").values()} == {"cat", "eel"}
    assert not any("dog1" in r.path for r in m.records)


def test_explicit_split_files_and_role_map(tmp_path, class_root):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "a.txt").write_text("cat/cat0.jpg\ndog/dog0.jpg\n")
    (lists / "b.txt").write_text("eel/eel0.jpg\n")
    out = tmp_path / "m.csv"
    role_map = {"train": ("labelled",), "val": ("unlabelled", "probe_test")}
    report = build_image_folder_manifest(
        class_root, out, split_files={"train": lists / "a.txt", "val": lists / "b.txt"}, role_map=role_map
    )
    assert report.role_counts["labelled"] == 2 and report.role_counts["probe_test"] == 1
    assert report.role_counts["probe_train"] == 0
    assert {(r.split, r.role) for r in read_manifest(out).records} == {
        ("train", "labelled"),
        ("val", "unlabelled"),
        ("val", "probe_test"),
    }


def test_splits_left_out_of_the_role_map_are_not_written(tmp_path, split_root):
    out = tmp_path / "m.csv"
    report = build_image_folder_manifest(split_root, out, role_map={"test": ("probe_test",)})
    assert report.split_counts == {"test": 4}
    assert {r.split for r in read_manifest(out).records} == {"test"}


@pytest.mark.parametrize("layout", ["nested", "empty", "file", "mixed"])
def test_neither_layout_names_the_root(tmp_path, files, layout):
    root = tmp_path / "root"
    if layout == "nested":
        files.rgb(root / "a" / "b" / "c.jpg")
    elif layout == "empty":
        root.mkdir()
    elif layout == "file":
        files.rgb(tmp_path / "root.png").rename(root)
    else:  # a split folder next to a folder that is not a split
        files.rgb(root / "train" / "cat" / "x.jpg")
        files.rgb(root / "other" / "cat" / "x.jpg")
    words = "dataset root is not a folder" if layout == "file" else "not an image-folder dataset"
    with pytest.raises(DatasetError, match=f"^{root}: {words}"):
        build_image_folder_manifest(root, tmp_path / "m.csv")
    assert_nothing_written(tmp_path / "m.csv")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("cat/nope.jpg", "names a file that does not exist"),
        ("wolf/cat0.jpg", "unknown class 'wolf'"),
        ("../classes/cat/cat0.jpg", "not a path <class>/<image>"),
        ("cat0.jpg", "not a path <class>/<image>"),
        ("cat/cat1.png", "listed again"),
    ],
)
def test_bad_split_list_lines(tmp_path, class_root, line, words):
    (class_root / "train.txt").write_text(f"cat/cat0.jpg\ncat/cat1.png\n{line}\ndog/dog0.jpg\n")
    out = tmp_path / "m.csv"
    with pytest.raises(DatasetError, match=words) as info:
        build_image_folder_manifest(class_root, out)
    assert str(class_root / "train.txt") in str(info.value)
    assert "listed again" in words or "line 3" in str(info.value)
    assert_nothing_written(out)

    report = build_image_folder_manifest(class_root, out, on_error="skip")
    assert report.n_skipped == 1 and words in report.skipped[0].reason
    assert report.split_counts == {"train": 3}


def test_empty_class_folder(tmp_path, class_root):
    (class_root / "fox").mkdir()
    (class_root / "fox" / ".DS_Store").write_bytes(b"x")  # clutter does not make a folder non-empty
    out = tmp_path / "m.csv"
    with pytest.raises(DatasetError, match=f"{class_root / 'fox'}: empty class folder"):
        build_image_folder_manifest(class_root, out)
    assert_nothing_written(out)

    report = build_image_folder_manifest(class_root, out, on_error="skip")
    assert [(s.path, s.reason) for s in report.skipped] == [(str(class_root / "fox"), "empty class folder")]
    assert report.n_classes == 3 and {r.class_name for r in read_manifest(out).records} == {"cat", "dog", "eel"}


def test_empty_class_folder_in_split_layout(tmp_path, split_root):
    (split_root / "test" / "cat").mkdir()
    with pytest.raises(DatasetError, match="test/cat: empty class folder"):
        build_image_folder_manifest(split_root, tmp_path / "m.csv")


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_image_raise_or_skip(tmp_path, class_root, files, kind):
    bad = files.bad(kind, class_root / "dog" / "bad.jpg")
    out = tmp_path / "m.csv"
    with pytest.raises(ImageError, match=files.PROBLEMS[kind]) as info:
        build_image_folder_manifest(class_root, out, workers=0)
    assert str(bad) in str(info.value)
    assert_nothing_written(out)

    report = build_image_folder_manifest(class_root, out, on_error="skip", workers=0)
    assert len(report.skipped) == 1 and report.skipped[0].path == str(bad)
    assert files.PROBLEMS[kind] in report.skipped[0].reason
    assert report.split_counts == {"train": 6}
    assert str(bad) not in {r.path for r in read_manifest(out).records}


def test_bad_images_are_found_by_the_validation_pool(tmp_path, class_root, files, monkeypatch):
    monkeypatch.setattr(parallel, "POOL_MIN_ITEMS", 1)
    for i in range(40):
        files.rgb(class_root / "eel" / f"more{i:02d}.png")
    positions = (5, 20, 33, 39)
    bad = {k: files.bad(k, class_root / "eel" / f"more{i:02d}.png") for i, k in zip(positions, BAD_KINDS, strict=True)}
    report = build_image_folder_manifest(class_root, tmp_path / "m.csv", on_error="skip", workers=2)
    assert {s.path: s.reason for s in report.skipped}.keys() == {str(p) for p in bad.values()}
    assert report.split_counts == {"train": 6 + 40 - 4}


def test_odd_modes_are_valid_not_skipped(tmp_path, class_root, files):
    odd = files.odd_modes(class_root / "eel")
    report = build_image_folder_manifest(class_root, tmp_path / "m.csv", on_error="skip")
    assert report.skipped == () and report.split_counts == {"train": 6 + len(odd)}


def test_all_images_skipped_is_an_error(tmp_path, files):
    root = tmp_path / "root"
    files.empty(root / "cat" / "a.jpg")
    with pytest.raises(DatasetError, match="no usable images"):
        build_image_folder_manifest(root, tmp_path / "m.csv", on_error="skip")
    assert_nothing_written(tmp_path / "m.csv")


def test_bad_parameters(tmp_path, class_root):
    with pytest.raises(ValueError, match="on_error"):
        build_image_folder_manifest(class_root, tmp_path / "m.csv", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown role"):
        build_image_folder_manifest(class_root, tmp_path / "m.csv", role_map={"train": ("training",)})
    with pytest.raises(ValueError, match="domain"):
        build_image_folder_manifest(class_root, tmp_path / "m.csv", domain="web")
    assert_nothing_written(tmp_path / "m.csv")


def test_raising_keeps_an_earlier_manifest_intact(tmp_path, class_root, files):
    out = tmp_path / "m.csv"
    build_image_folder_manifest(class_root, out)
    before = out.read_bytes()
    files.truncated(class_root / "cat" / "cut.jpg")
    with pytest.raises(ImageError):
        build_image_folder_manifest(class_root, out)
    assert out.read_bytes() == before


# --- Grocery Store layout ---------------------------------------------------------------------------

GROCERY_CLASSES = [  # fine name, fine id, coarse name, coarse id, folder
    ("Golden-Delicious", 0, "Apple", 0, "Fruit/Apple/Golden-Delicious"),
    ("Granny-Smith", 1, "Apple", 0, "Fruit/Apple/Granny-Smith"),
    ("Banana", 2, "Banana", 1, "Fruit/Banana/Banana"),
]
GROCERY_PHOTOS = {"train": 2, "val": 1, "test": 1}  # photos per class and split


def make_grocery(base: Path, files) -> Path:
    """A tiny copy of the Grocery Store Dataset layout under ``base/dataset``; returns ``base``."""
    d = base / "dataset"
    rows = ["Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int),"
            "Iconic Image Path (str),Product Description Path (str)"]  # fmt: skip
    for name, fine, coarse_name, coarse, folder in GROCERY_CLASSES:
        iconic = f"/iconic-images-and-descriptions/{folder}/{name}_Iconic.jpg"
        files.rgb(d / iconic.lstrip("/"), size=(30, 30), color=(250, 250, 250))
        rows.append(
            f"{name},{fine},{coarse_name},{coarse},{iconic},/iconic-images-and-descriptions/{folder}/{name}.txt"
        )
    (d / "classes.csv").parent.mkdir(parents=True, exist_ok=True)
    (d / "classes.csv").write_text("\n".join(rows))  # no final newline, as in the real file
    for split, n in GROCERY_PHOTOS.items():
        lines = []
        for name, fine, _, coarse, folder in GROCERY_CLASSES:
            for i in range(1, n + 1):
                rel = f"{split}/{folder}/{name}_{i:03d}.jpg"
                files.rgb(d / rel)
                lines.append(f"{rel}, {fine}, {coarse}")
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return base


@pytest.fixture
def grocery(tmp_path, files) -> Path:
    return make_grocery(tmp_path / "GroceryStoreDataset", files)


def test_grocery_fine_labels(tmp_path, grocery):
    out = tmp_path / "m.csv"
    report = build_grocery_manifest(grocery, out)
    m = read_manifest(out)
    assert report.n_classes == 3 and report.skipped == ()
    assert report.split_counts == {"train": 3 + 6, "val": 3, "test": 3}
    catalogue = images_of(m, domain="catalogue")
    assert len(catalogue) == 3 and all(p.endswith("_Iconic.jpg") and (m.root / p).is_file() for p in catalogue)
    assert {v[2] for v in catalogue.values()} == {"train"}
    assert {r.role for r in m.records if r.domain == "catalogue"} == set(DEFAULT_ROLE_MAP["train"])
    shelf = images_of(m, domain="shelf")
    assert sorted({v[:2] + v[4:] for v in shelf.values()}) == [
        (0, "Golden-Delicious", "Apple"),
        (1, "Granny-Smith", "Apple"),
        (2, "Banana", "Banana"),
    ]
    for split, n in GROCERY_PHOTOS.items():
        for role in DEFAULT_ROLE_MAP[split]:
            assert sum(r.split == split and r.role == role and r.domain == "shelf" for r in m.records) == 3 * n
    assert not any(Path(r.path).is_absolute() for r in m.records)
    assert all(p.is_file() for p in m.paths(m.records))


def test_grocery_coarse_labels(tmp_path, grocery):
    out = tmp_path / "m.csv"
    report = build_grocery_manifest(grocery, out, labels="coarse")
    m = read_manifest(out)
    assert report.n_classes == 2
    assert {(r.label, r.class_name, r.group) for r in m.records} == {(0, "Apple", ""), (1, "Banana", "")}
    assert Counter(v[1] for v in images_of(m, domain="catalogue").values()) == {"Apple": 2, "Banana": 1}


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_grocery_kinds_split_the_classes_by_coarse_kind(tmp_path, grocery, labels):
    """even/odd keep the kinds of even/odd coarse id, every variety of a kind on one side, no image twice."""
    kept = {}
    for kinds in ("even", "odd", "all"):
        out = tmp_path / f"{kinds}.csv"
        report = build_grocery_manifest(grocery, out, labels=labels, kinds=kinds)
        kept[kinds] = read_manifest(out)
        assert report.n_classes == len({r.label for r in kept[kinds].records})
    even, odd, every = ({r.path for r in kept[k].records} for k in ("even", "odd", "all"))
    assert even and odd and not even & odd and even | odd == every
    assert all("Apple" in p or "Granny" in p or "Golden" in p for p in even)  # coarse id 0: both apples
    assert all("Banana" in p for p in odd)  # coarse id 1
    assert {r.split for r in kept["even"].records} == {"train", "val", "test"}
    assert {r.role for r in kept["odd"].records} == {r.role for r in kept["all"].records}


def test_grocery_kinds_reject_unknown_values_and_other_sources(tmp_path, grocery, class_root):
    from retailnb.data.prepare import prepare_dataset

    with pytest.raises(ValueError, match="kinds must be one of"):
        build_grocery_manifest(grocery, tmp_path / "m.csv", kinds="half")
    with pytest.raises(ValueError, match="kinds='odd'.*imagefolder"):
        prepare_dataset("imagefolder", tmp_path / "out", root=class_root, kinds="odd")
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "out").exists()


def test_grocery_root_may_be_the_dataset_folder_or_its_parent(tmp_path, grocery):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    build_grocery_manifest(grocery, a)
    build_grocery_manifest(grocery / "dataset", b)
    assert a.read_text() == b.read_text()
    with pytest.raises(DatasetError, match=f"{tmp_path}: not a Grocery Store Dataset"):
        build_grocery_manifest(tmp_path, tmp_path / "c.csv")
    assert_nothing_written(tmp_path / "c.csv")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("train/Fruit/Banana/Banana/Banana_999.jpg, 2, 1", "names a file that does not exist"),
        ("train/Fruit/Banana/Banana/Banana_001.jpg, 7, 1", "unknown fine class id 7"),
        ("train/Fruit/Banana/Banana/Banana_001.jpg, 2, 0", "coarse id 0, but classes.csv gives 1"),
        ("train/Fruit/Banana/Banana/Banana_001.jpg 2 1", "malformed line"),
        ("../outside.jpg, 2, 1", "not a path inside"),
    ],
)
def test_grocery_bad_split_lines(tmp_path, grocery, line, words):
    train = grocery / "dataset" / "train.txt"
    train.write_text(train.read_text() + line + "\n")
    out = tmp_path / "m.csv"
    with pytest.raises(DatasetError, match=words) as info:
        build_grocery_manifest(grocery, out)
    assert f"{train.resolve()}, line 7" in str(info.value)
    assert_nothing_written(out)

    report = build_grocery_manifest(grocery, out, on_error="skip")
    assert report.n_skipped == 1 and words in report.skipped[0].reason
    assert report.split_counts["train"] == 9


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_grocery_bad_images(tmp_path, grocery, files, kind):
    photo = grocery / "dataset" / "test" / "Fruit" / "Banana" / "Banana" / "Banana_001.jpg"
    files.bad(kind, photo)
    out = tmp_path / "m.csv"
    with pytest.raises(ImageError, match=files.PROBLEMS[kind]) as info:
        build_grocery_manifest(grocery, out)
    assert str(photo.resolve()) in str(info.value)
    assert_nothing_written(out)
    report = build_grocery_manifest(grocery, out, on_error="skip")
    assert [s.path for s in report.skipped] == [str(photo.resolve())]
    assert report.split_counts["test"] == 2


def test_grocery_missing_iconic_image(tmp_path, grocery):
    iconic = next((grocery / "dataset" / "iconic-images-and-descriptions").rglob("Banana_Iconic.jpg"))
    iconic.unlink()
    with pytest.raises(ImageError, match="Banana_Iconic.jpg: file not found"):
        build_grocery_manifest(grocery, tmp_path / "m.csv")
    report = build_grocery_manifest(grocery, tmp_path / "m.csv", on_error="skip")
    assert report.n_skipped == 1 and report.split_counts["train"] == 8


def test_grocery_missing_split_list_and_custom_role_map(tmp_path, grocery):
    (grocery / "dataset" / "val.txt").unlink()
    with pytest.raises(DatasetError, match="val.txt: split list not found"):
        build_grocery_manifest(grocery, tmp_path / "m.csv", on_error="skip")
    report = build_grocery_manifest(grocery, tmp_path / "m.csv", role_map={"test": ("probe_test",)})
    assert report.split_counts == {"test": 3}  # no val needed; no train split, so no catalogue rows
    assert {r.domain for r in read_manifest(tmp_path / "m.csv").records} == {"shelf"}


def test_grocery_malformed_classes_csv(tmp_path, grocery):
    classes = grocery / "dataset" / "classes.csv"
    classes.write_text(classes.read_text().replace("Banana,2,Banana,1", "Banana,two,Banana,1"))
    with pytest.raises(DatasetError, match="classes.csv, line 4"):
        build_grocery_manifest(grocery, tmp_path / "m.csv")
    with pytest.raises(ValueError, match="labels"):
        build_grocery_manifest(grocery, tmp_path / "m.csv", labels="medium")  # type: ignore[arg-type]


# --- the real dataset -------------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.skipif(not (REAL_GROCERY / "dataset" / "classes.csv").is_file(), reason=f"no dataset at {REAL_GROCERY}")
def test_real_grocery_store_dataset(tmp_path):
    report: AdapterReport = build_grocery_manifest(REAL_GROCERY, tmp_path / "grocery.csv")
    m = read_manifest(tmp_path / "grocery.csv")
    print(f"Grocery manifest with validation: {report.seconds:.1f}s for {sum(report.split_counts.values())} images")
    assert report.skipped == () and report.n_classes == 81
    shelf = Counter((r.split, r.role) for r in m.records if r.domain == "shelf")
    for split, n in {"train": 2640, "val": 296, "test": 2485}.items():
        for role in DEFAULT_ROLE_MAP[split]:
            assert shelf[split, role] == n
    catalogue = images_of(m, domain="catalogue")
    assert len(catalogue) == 81 and len({v[1] for v in catalogue.values()}) == 81
    assert len({r.class_name for r in m.records}) == 81 and len({r.group for r in m.records}) == 43
    dataset_dir = find_dataset_dir(REAL_GROCERY)
    assert len(read_classes(dataset_dir)) == 81
    coarse, n_coarse = grocery_candidates(
        dataset_dir, labels="coarse", role_map=resolve_role_map(None), issues=Issues("raise")
    )  # coarse labels without validating the images a second time
    assert n_coarse == 43 and len({c.class_name for c in coarse}) == 43
    halves = {kinds: grocery_candidates(dataset_dir, labels="fine", role_map=resolve_role_map(None),
                                        issues=Issues("raise"), kinds=kinds) for kinds in ("even", "odd")}
    assert (halves["even"][1], halves["odd"][1]) == (35, 46)
    groups = [{c.group for c in candidates} for candidates, _ in halves.values()]
    assert len(groups[0]) == 22 and len(groups[1]) == 21 and not groups[0] & groups[1]


def test_the_data_stage_applies_data_kinds(tmp_path, grocery):
    """``data.kinds`` from params.yaml reaches the ingest: the odd half holds only the odd kind's products."""
    from shared_fixtures import default_spec

    from retailnb.stages import data as data_stage

    for kinds, products in (("all", {"Golden-Delicious", "Granny-Smith", "Banana"}), ("odd", {"Banana"})):
        spec = default_spec("data", data__source="grocery_store", data__root=str(grocery), data__kinds=kinds)
        paths = data_stage.DataPaths(out_dir=str(tmp_path / kinds), metrics=str(tmp_path / f"{kinds}.json"))
        _, manifest = data_stage.run(spec, paths)
        assert {r.class_name for r in manifest.records} == products


def test_a_transfer_target_of_the_other_half_holds_none_of_the_pretraining_products(tmp_path, grocery):
    """data.kinds=even pretrains on the apples; evaluate.targets.*.kinds=odd probes only the banana."""
    from shared_fixtures import default_part, default_spec

    from retailnb.config.evaluate import TargetSpec
    from retailnb.stages import data as data_stage
    from retailnb.stages.evaluate import EvaluatePaths, load_target

    spec = default_spec("data", data__source="grocery_store", data__root=str(grocery), data__kinds="even")
    _, source = data_stage.run(spec, data_stage.DataPaths(out_dir=str(tmp_path / "prepared"),
                                                          metrics=str(tmp_path / "data.json")))
    target = default_part(TargetSpec, "evaluate.targets.prepared", source="grocery_store", root=str(grocery),
                          kinds="odd")
    # the fixture's photos are one flat colour, so they are identical across splits: drop those duplicates
    evaluate = default_spec("evaluate", "prepared", evaluate__on_overlap="drop").model_copy(update={"target": target})
    paths = EvaluatePaths(manifest=str(tmp_path / "prepared" / "manifest.csv"), pretrain_dir="", noisy_dir="",
                          features_dir=str(tmp_path / "features"), metrics="", plots_dir="")
    data, n_dropped, unseen = load_target(evaluate, "grocery_transfer", paths)
    assert data.classes == ["Banana"] and len(data.y_train) + n_dropped == 1 + 2 and len(data.y_test) == 1
    assert not {r.class_name for r in source.records} & set(data.classes)
