"""DA-PTQ's protected action-head blocks: the paper's 2 of 12, at most one in six."""

import pytest
from torch import nn

from daptq_ros.errors import ConfigError
from daptq_ros.policy.daptq import DaptqOptions, protected_layers


class _Head:
    """An adapter stub whose action head is `blocks` numbered blocks of two Linears."""

    def __init__(self, blocks: int) -> None:
        self.names = [f"head.blocks.{i}.{p}" for i in range(blocks) for p in ("fc1", "fc2")]
        self.names.append("head.out")

    def action_head_layers(self, model: nn.Module) -> list[str]:
        return self.names


@pytest.mark.parametrize(("blocks", "protected"), [(12, [10, 11]), (6, [5]), (2, [])])
def test_the_last_blocks_are_protected_at_most_one_in_six(blocks, protected):
    names = protected_layers(_Head(blocks), nn.Module(), 2)
    assert names == [f"head.blocks.{i}.{p}" for i in protected for p in ("fc1", "fc2")]


def test_an_unknown_allocation_is_refused():
    with pytest.raises(ConfigError, match="topk, budget, uniform"):
        DaptqOptions(allocation="greedy")
