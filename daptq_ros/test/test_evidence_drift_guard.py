"""Evidence for the drift guard: the four ways of running, their rows, a reproducible ladder run."""

from __future__ import annotations

import numpy as np
import pytest

from daptq_ros.evidence.drift_guard import WAYS, GuardSettings, GuardTrace, _row, cached_builder


def test_each_way_sets_the_node_as_it_says():
    settings = GuardSettings(("w3a8", "w8a8"), up_m=0.01, down_m=0.001)
    assert settings.params("fixed low") == {"bit_config": "w3a8"}
    assert settings.params("fixed top") == {"bit_config": "w8a8"}
    assert settings.params("fp32") == {"bit_config": "fp32"}
    ladder = settings.params("ladder")
    assert ladder["bit_config"] == "w3a8" and ladder["precision_ladder"] == ("w3a8", "w8a8")
    assert ladder["shadow_bit_config"] == "fp32" and ladder["ladder_up_m"] == 0.01
    assert set(WAYS) == {"fixed low", "ladder", "fixed top", "fp32"}


def test_a_row_counts_steps_per_bit_config_and_their_average_bits():
    hand = [np.zeros(3)] * 4
    trace = GuardTrace(hand=list(hand), rungs=["w3a8", "w3a8", "w8a8", "w8a8"], success=True)
    reference = GuardTrace(hand=[np.array([0.003, 0.004, 0.0])] * 4)
    row = _row("ladder", [trace], [reference], {"w3a8": 3.0, "w8a8": 8.0}.__getitem__)
    assert row.rung_share == {"w3a8": 0.5, "w8a8": 0.5}
    assert row.average_bits == [5.5] and row.success == [True]
    assert row.deviation_m == [pytest.approx(0.005)]


def test_the_builder_loads_each_bit_config_once():
    loads = []
    build = cached_builder(lambda bits: loads.append(bits) or f"policy {bits}")
    assert build("w3a8") == build("w3a8") == "policy w3a8" and loads == ["w3a8"]


@pytest.mark.sim
@pytest.mark.slow
def test_a_ladder_episode_in_lockstep_climbs_and_is_reproducible():
    """Any divergence is loud: the embedded model climbs from w3a8, the same way twice."""
    import torch

    from daptq_ros.evidence.drift_guard import run_episode
    from daptq_ros.policy.model_dir import default_model_dir
    from daptq_ros.policy.quantize import load_policy_with_bits

    torch.set_num_threads(1)
    model = str(default_model_dir("pi0"))
    build = cached_builder(lambda bits: load_policy_with_bits(model, bits)[0])
    settings = GuardSettings(("w3a8", "w8a8"), up_m=1e-9, down_m=0.0, up_count=1, down_count=999)
    runs = [run_episode(build, settings.params("ladder"), "reach", 100000, 60) for _ in range(2)]
    assert runs[0].rungs[0] == "w3a8" and "w8a8" in runs[0].rungs
    assert runs[0].rungs == runs[1].rungs
    np.testing.assert_array_equal(np.array(runs[0].hand), np.array(runs[1].hand))
