"""Batch plans: SupCon groups, coverage of the pool, determinism and rank sharding."""

from __future__ import annotations

import numpy as np
import pytest

from retailnb.train.sampler import EpochBatchSampler, plan_epoch

LABELS = np.array([0] * 6 + [1] * 6 + [2] * 6 + [-1] * 30)


def test_each_batch_has_class_groups_of_the_requested_size() -> None:
    batches = plan_epoch(LABELS, batch_size=16, images_per_class=4, supcon_fraction=0.5, seed=0, epoch=0)
    for b in batches:
        assert len(b) == 16
        groups = b[-8:]  # two classes x four images, after the random part
        labels = LABELS[groups]
        assert (labels >= 0).all()
        assert sorted(np.unique(labels, return_counts=True)[1].tolist()) == [4, 4]


def test_random_part_covers_the_pool_once_per_epoch_across_ranks() -> None:
    kw = dict(batch_size=8, images_per_class=2, supcon_fraction=0.0, seed=3, epoch=1)
    seen = np.concatenate([np.concatenate(plan_epoch(LABELS, rank=r, world_size=2, **kw)) for r in range(2)])
    assert len(seen) >= len(LABELS)
    assert set(seen.tolist()) == set(range(len(LABELS)))
    assert len(set(seen[: len(LABELS)].tolist())) == len(LABELS)


def test_plans_are_deterministic_and_differ_between_epochs_and_ranks() -> None:
    kw = dict(batch_size=8, images_per_class=2, supcon_fraction=0.5, seed=0)
    a = plan_epoch(LABELS, epoch=0, **kw)
    assert all((x == y).all() for x, y in zip(a, plan_epoch(LABELS, epoch=0, **kw)))
    assert not all((x == y).all() for x, y in zip(a, plan_epoch(LABELS, epoch=1, **kw)))
    r1 = plan_epoch(LABELS, epoch=0, rank=1, world_size=2, **kw)
    assert not (np.concatenate(plan_epoch(LABELS, epoch=0, rank=0, world_size=2, **kw)) == np.concatenate(r1)).all()


def test_sampler_length_matches_its_batches() -> None:
    sampler = EpochBatchSampler(LABELS, batch_size=10, images_per_class=2, supcon_fraction=0.4, seed=0)
    sampler.set_epoch(2)
    assert len(list(sampler)) == len(sampler) == 5


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(batch_size=1, images_per_class=2, supcon_fraction=0.5), "batch_size"),
        (dict(batch_size=8, images_per_class=2, supcon_fraction=1.5), "supcon_fraction"),
        (dict(batch_size=8, images_per_class=1, supcon_fraction=0.5), "images_per_class"),
    ],
)
def test_bad_settings_name_the_parameter(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_epoch(LABELS, seed=0, epoch=0, **kw)
