"""Tests of the synthetic retail dataset: structure of the manifest, determinism, the difficulty knob."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from shared_fixtures import default_part

from retailnb.config.data import SyntheticSpec
from retailnb.data import synthetic
from retailnb.data.manifest import Manifest, read_manifest
from retailnb.data.synthetic import (
    SHAPES,
    VARIANT_WORDS,
    SkuDesign,
    design_catalogue,
    expected_role_counts,
    generate,
    render_catalogue,
    render_shelf,
    slugify,
)

# 2 source families x 3 SKUs (3 labelled, 3 unlabelled-only), 1 monitor and 2 target families: 57 images.
TINY = default_part(
    SyntheticSpec,
    "data.synthetic",
    n_source_families=2,
    n_monitor_families=1,
    n_target_families=2,
    skus_per_family=3,
    labelled_fraction=0.5,
    catalogue_per_sku=1,
    labelled_shelf_per_sku=2,
    unlabelled_shelf_per_sku=2,
    monitor_train_per_sku=1,
    monitor_test_per_sku=2,
    probe_train_shelf_per_sku=1,
    probe_test_per_sku=2,
    image_size=32,
    difficulty=0.5,
    seed=3,
)
TINY_COUNTS = {
    "labelled": 9,
    "unlabelled": 12,
    "monitor_train": 6,
    "monitor_test": 6,
    "probe_train": 12,
    "probe_test": 12,
}
SOURCE_ROLES = ("labelled", "unlabelled", "monitor_train", "monitor_test")
TARGET_ROLES = ("probe_train", "probe_test")


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TINY dataset rendered in-process; returns its folder."""
    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    manifest = generate(TINY, out, workers=1)
    assert manifest == out / "manifest.csv"
    return out


@pytest.fixture(scope="module")
def manifest(dataset: Path) -> Manifest:
    return read_manifest(dataset / "manifest.csv")


@pytest.fixture(scope="module")
def designs() -> list[SkuDesign]:
    return design_catalogue(TINY)


# --- determinism ---------------------------------------------------------------------------------


def test_generation_is_byte_identical_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    again = generate(TINY, tmp_path / "again", workers=2).parent
    first, second = _tree(dataset), _tree(again)
    assert len(first) == sum(TINY_COUNTS.values()) + 2  # images, manifest.csv, catalogue.json
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_another_seed_gives_other_images(dataset: Path, tmp_path: Path) -> None:
    other = generate(TINY.model_copy(update={"seed": 4}), tmp_path / "other", workers=1).parent
    images = lambda tree: sorted(v for k, v in tree.items() if k.endswith(".jpg"))  # noqa: E731
    assert set(images(_tree(dataset))).isdisjoint(images(_tree(other)))


def test_design_catalogue_is_deterministic_and_seeded() -> None:
    assert design_catalogue(TINY) == design_catalogue(TINY)
    assert [s.name for s in design_catalogue(TINY)] != [s.name for s in design_catalogue(TINY.model_copy(update={"seed": 4}))]


def test_render_functions_depend_only_on_their_rng(designs: list[SkuDesign]) -> None:
    sku, pair = designs[0], designs[1:3]
    shelf = [np.asarray(render_shelf(sku, pair, np.random.default_rng(7), 40, 0.8)) for _ in range(2)]
    packshot = [np.asarray(render_catalogue(sku, np.random.default_rng(7), 40)) for _ in range(2)]
    assert np.array_equal(shelf[0], shelf[1]) and np.array_equal(packshot[0], packshot[1])
    assert not np.array_equal(shelf[0], np.asarray(render_shelf(sku, pair, np.random.default_rng(8), 40, 0.8)))


# --- the manifest --------------------------------------------------------------------------------


def test_role_counts_match_the_config(manifest: Manifest) -> None:
    assert manifest.role_counts() == TINY_COUNTS
    assert expected_role_counts(TINY) == TINY_COUNTS


def test_images_per_sku_follow_the_config(manifest: Manifest, designs: list[SkuDesign]) -> None:
    per_sku = Counter((r.class_name, r.role, r.domain) for r in manifest.records)
    expected = {
        "labelled": {("labelled", "catalogue"): 1, ("labelled", "shelf"): 2, ("unlabelled", "shelf"): 2},
        "unlabelled": {("unlabelled", "shelf"): 2},
        "monitor": {("monitor_train", "catalogue"): 1, ("monitor_train", "shelf"): 1, ("monitor_test", "shelf"): 2},
        "target": {("probe_train", "catalogue"): 1, ("probe_train", "shelf"): 1, ("probe_test", "shelf"): 2},
    }
    for sku in designs:
        got = {(role, domain): n for (name, role, domain), n in per_sku.items() if name == sku.name}
        assert got == expected[sku.kind], sku.name


def test_split_follows_role(manifest: Manifest) -> None:
    for r in manifest.records:
        assert r.split == ("test" if r.role in ("monitor_test", "probe_test") else "train"), r


def test_paths_exist_and_are_named_by_sku_and_domain(manifest: Manifest, dataset: Path) -> None:
    for r in manifest.records:
        assert not Path(r.path).is_absolute()
        assert re.fullmatch(rf"images/{re.escape(slugify(r.class_name))}/{r.domain}_\d{{3}}\.jpg", r.path), r.path
        with Image.open(dataset / r.path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32))
    assert len({r.path for r in manifest.records}) == len(manifest.records)


def test_labels_are_global_ids_of_sorted_class_names(manifest: Manifest, designs: list[SkuDesign]) -> None:
    names = sorted(s.name for s in designs)
    assert len(set(names)) == len(names) == 5 * 3
    for r in manifest.records:
        assert r.label == names.index(r.class_name)
        assert r.group == r.class_name.split(" ")[0]


def test_catalogue_json_describes_every_sku(dataset: Path, designs: list[SkuDesign]) -> None:
    catalogue = json.loads((dataset / "catalogue.json").read_text())
    assert [s["name"] for s in catalogue["skus"]] == [s.name for s in designs]
    assert len(catalogue["families"]) == 5
    for family in catalogue["families"]:
        assert family["shape"] in SHAPES
        assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in family["colours"].values())


# --- the catalogues ------------------------------------------------------------------------------


def test_source_and_target_catalogues_are_disjoint(manifest: Manifest) -> None:
    source, target = manifest.select(*SOURCE_ROLES), manifest.select(*TARGET_ROLES)
    assert source and target
    assert {r.class_name for r in source}.isdisjoint(r.class_name for r in target)
    assert {r.group for r in source}.isdisjoint(r.group for r in target)
    assert len({r.group for r in target}) == TINY.n_target_families


def test_brand_names_are_unique_over_a_large_catalogue() -> None:
    big = default_part(SyntheticSpec, "data.synthetic", n_source_families=60, n_monitor_families=10,
                       n_target_families=40)
    skus = design_catalogue(big)
    families = {s.family.index: s.family.name for s in skus}
    assert len(set(families.values())) == len(families) == 110
    assert len({s.slug for s in skus}) == len(skus)


def test_unlabelled_only_skus_have_no_labelled_rows(manifest: Manifest, designs: list[SkuDesign]) -> None:
    unlabelled_only = {s.name for s in designs if s.kind == "unlabelled"}
    labelled = {s.name for s in designs if s.kind == "labelled"}
    assert len(unlabelled_only) == 3 and len(labelled) == 3
    assert {r.class_name for r in manifest.select("labelled")} == labelled
    assert unlabelled_only <= {r.class_name for r in manifest.select("unlabelled")}
    for r in manifest.records:
        if r.class_name in unlabelled_only:
            assert r.role == "unlabelled" and r.label >= 0, r  # the truth is kept to score pseudolabels


def test_monitor_families_appear_only_in_monitor_roles(manifest: Manifest, designs: list[SkuDesign]) -> None:
    monitor_groups = {s.family.name for s in designs if s.kind == "monitor"}
    assert len(monitor_groups) == TINY.n_monitor_families
    assert {r.group for r in manifest.select("monitor_train", "monitor_test")} == monitor_groups
    assert monitor_groups.isdisjoint(r.group for r in manifest.select("labelled", "unlabelled", *TARGET_ROLES))
    assert {r.domain for r in manifest.select("monitor_train")} == {"catalogue", "shelf"}
    assert {r.domain for r in manifest.select("monitor_test", "probe_test", "unlabelled")} == {"shelf"}


def test_families_share_a_look_and_siblings_differ(designs: list[SkuDesign]) -> None:
    by_family: dict[int, list[SkuDesign]] = {}
    for s in designs:
        by_family.setdefault(s.family.index, []).append(s)
    for members in by_family.values():
        assert len({m.family for m in members}) == 1  # shape, palette, logo and layout are the family's
        assert len({m.variant for m in members}) == len(members)
        assert all(
            m.variant in VARIANT_WORDS and m.name == f"{m.family.name} {m.variant.capitalize()}" for m in members
        )


def test_default_config_is_a_few_thousand_images_with_ten_shot_probes() -> None:
    config = default_part(SyntheticSpec, "data.synthetic")  # params.yaml's sizes
    counts = expected_role_counts(config)
    assert 2500 <= sum(counts.values()) <= 4000
    assert config.catalogue_per_sku + config.probe_train_shelf_per_sku >= 10
    assert all(n > 0 for n in counts.values())


# --- rendering -----------------------------------------------------------------------------------


def test_difficulty_moves_shelf_crops_away_from_packshots() -> None:
    # Compared on the central region, where both images show the product: the background (white
    # studio versus shelf) is the domain itself, present at every difficulty, not a distortion.
    skus = design_catalogue(default_part(SyntheticSpec, "data.synthetic", n_source_families=4))[:20]

    def distance(difficulty: float) -> float:
        gaps = []
        for i, sku in enumerate(skus):
            rng = np.random.default_rng(i)
            packshot = np.asarray(render_catalogue(sku, rng, 48), dtype=float)
            shelf = np.asarray(render_shelf(sku, skus[i - 1 : i], rng, 48, difficulty), dtype=float)
            gaps.append(np.abs(shelf - packshot)[12:36, 16:32].mean())
        return float(np.mean(gaps))

    easy, medium, hard = distance(0.0), distance(0.5), distance(1.0)
    assert easy < medium < hard
    assert hard > 1.8 * easy


def test_packshots_are_on_a_light_background_and_shelves_are_not(designs: list[SkuDesign]) -> None:
    def border(image: Image.Image) -> float:
        a = np.asarray(image, dtype=float)
        return float(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean())

    packshots = [border(render_catalogue(s, np.random.default_rng(s.index), 48)) for s in designs]
    shelves = [border(render_shelf(s, [s], np.random.default_rng(s.index), 48, 0.5)) for s in designs]
    assert min(packshots) > 225
    assert np.mean(shelves) < np.mean(packshots) - 30


def test_shelf_neighbours_come_from_the_same_part_of_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, designs: list[SkuDesign]
) -> None:
    # Held-out monitor and target products must not appear at the edges of pretraining images.
    calls: list[tuple[SkuDesign, tuple[SkuDesign, ...], list[SkuDesign]]] = []
    original = synthetic.pick_neighbours

    def recording(design: SkuDesign, pool: Sequence[SkuDesign], rng: np.random.Generator) -> list[SkuDesign]:
        chosen = original(design, pool, rng)
        calls.append((design, tuple(pool), chosen))
        return chosen

    monkeypatch.setattr(synthetic, "pick_neighbours", recording)
    generate(TINY, tmp_path / "out", workers=1)
    assert len(calls) == sum(TINY_COUNTS.values()) - 12  # every shelf image; 12 SKUs have a packshot
    for design, pool, chosen in calls:
        assert {s.family.kind for s in pool} == {design.family.kind}
        assert len(chosen) == 2 and set(chosen) <= set(pool)
    kinds = {design.family.kind: len(pool) for design, pool, _ in calls}
    assert kinds == {"source": 6, "monitor": 3, "target": 6}


# --- configuration and failure -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_source_families", 0),
        ("n_monitor_families", -1),
        ("n_target_families", 0),
        ("skus_per_family", 0),
        ("skus_per_family", len(VARIANT_WORDS) + 1),
        ("labelled_fraction", 1.5),
        ("catalogue_per_sku", -1),
        ("unlabelled_shelf_per_sku", 2.5),
        ("probe_test_per_sku", 0),
        ("image_size", 8),
        ("difficulty", -0.1),
        ("seed", -1),
        ("seed", True),
    ],
)
def test_bad_config_raises_naming_the_parameter(name: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=name):
        SyntheticSpec.model_validate({**TINY.model_dump(), name: value})


def test_config_accepts_values_at_its_bounds() -> None:
    bounds = dict(
        n_monitor_families=0,
        labelled_fraction=1.0,
        difficulty=0.0,
        image_size=16,
        skus_per_family=len(VARIANT_WORDS),
    )
    SyntheticSpec.model_validate({**TINY.model_dump(), **bounds})


def _fail(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("where", ["render_catalogue", "write_manifest"])
def test_failed_generation_leaves_no_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    monkeypatch.setattr(synthetic, where, _fail)
    with pytest.raises(RuntimeError, match="injected"):
        generate(TINY, tmp_path / "out", workers=1)
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor a temporary folder


def test_failed_generation_keeps_the_previous_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.csv").write_text("previous")
    monkeypatch.setattr(synthetic, "write_manifest", _fail)
    with pytest.raises(RuntimeError):
        generate(TINY, out, workers=1)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "manifest.csv").read_text() == "previous"


def test_generation_replaces_an_existing_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    small = TINY.model_copy(update=dict(n_source_families=1, n_target_families=1, n_monitor_families=0))
    manifest = read_manifest(generate(small, out, workers=1))
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert len(manifest.records) == sum(expected_role_counts(small).values())
