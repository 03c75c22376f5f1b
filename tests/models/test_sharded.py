"""Inference shared out among processes: batch bounds, each rank's share, and the rows back in order."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from retailnb.models.inference import extract_features
from retailnb.models.sharded import batch_bounds, interleave, rank_share, sharded_features, sharded_rows


def test_batches_are_the_one_process_batches_dealt_round_robin_and_come_back_in_order() -> None:
    bounds = batch_bounds(7, 2)
    assert bounds == [(0, 2), (2, 4), (4, 6), (6, 7)]
    shares = [rank_share(bounds, rank, 3) for rank in range(3)]
    assert shares == [[(0, 2), (6, 7)], [(2, 4)], [(4, 6)]]
    rows = [[np.arange(a, b) for a, b in share] for share in shares]
    assert np.concatenate(interleave(rows, len(bounds))).tolist() == list(range(7))
    with pytest.raises(ValueError, match="batch_size"):
        batch_bounds(3, 0)


def test_outside_a_process_group_every_batch_runs_here_with_the_features_of_one_pass() -> None:
    assert sharded_rows(lambda a, b: np.arange(a, b)[:, None], 5, 2).ravel().tolist() == list(range(5))
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=0)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    assert np.array_equal(sharded_features(model, images, batch_size=2), extract_features(model, images, batch_size=2))
