"""The one launcher: torchrun's command line from ``compute``, single-node and multi-node."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from shared_fixtures import default_part

from retailnb.config.compute import ComputeSpec
from retailnb.train.launch import torchrun_command


def test_one_node_is_standalone_and_several_meet_at_the_rendezvous_endpoint() -> None:
    one = default_part(ComputeSpec, "compute", devices=2)
    assert one.distributed and not default_part(ComputeSpec, "compute").distributed
    cmd = torchrun_command("retailnb.stages.noisy", Path("run.json"), one)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                       "retailnb.stages.noisy", "run.json"]
    two = default_part(ComputeSpec, "compute", devices=4, nnodes=2, node_rank=1, rdzv_endpoint="node0:29400")
    cmd = torchrun_command("retailnb.stages.pretrain", Path("run.json"), two)
    assert cmd[3:9] == ["--nnodes=2", "--node-rank=1", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29400",
                        "--rdzv-id=retailnb", "--nproc-per-node=4"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"nnodes": 2}, "rdzv_endpoint"),
    ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "node0:29400"}, "node_rank"),
])
def test_a_node_that_cannot_join_stops_with_the_key_to_set(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        default_part(ComputeSpec, "compute", **fields)
