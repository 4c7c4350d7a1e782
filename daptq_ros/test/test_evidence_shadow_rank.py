"""Evidence that the shadow ranks drift as a recorded reference does: the plumbing, on the sim."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from daptq_ros.evidence.shadow_rank import MonitorTap


class _Seen:
    """A drift monitor stand-in that notes which handler each message reached."""

    def __init__(self) -> None:
        self.params = {
            "joint_states_topic": "/joint_states",
            "ee_pose_topic": "/ee_pose",
            "episode_topic": "/sim_bridge/episode",
        }
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        return lambda msg: self.calls.append(name)


def test_the_tap_routes_each_topic_to_the_monitor_handler_the_node_wires_it_to():
    seen = _Seen()
    tap = MonitorTap([seen])
    shadow = SimpleNamespace(has_hand_divergence=True, hand_max_divergence=0.004)
    for topic in ("/joint_states", "/ee_pose", "/policy_node/status"):
        tap.write(topic, object(), 0.0)
    tap.write("/policy_node/shadow", shadow, 0.0)
    tap.write("/camera/image_raw", object(), 0.0)
    tap.write("/sim_bridge/episode", object(), 0.0)
    assert seen.calls == [
        "on_joint_states",
        "on_ee_pose",
        "on_policy_status",
        "on_shadow",
        "on_episode",
    ]
    assert tap.rmse == [[]] and tap.chunk_divergence == [0.004]


@pytest.mark.sim
@pytest.mark.slow
def test_fp32_drifts_by_neither_monitor_and_low_bits_by_both(tmp_path):
    """FP32 against its own recording and its own shadow is 0 (to float rounding); w2a8 is not,
    by either."""
    import torch

    from daptq_ros.evidence.drift_guard import cached_builder
    from daptq_ros.evidence.shadow_rank import record_reference, watch_episode
    from daptq_ros.policy.model_dir import default_model_dir
    from daptq_ros.policy.quantize import load_policy_with_bits

    torch.set_num_threads(1)
    model = str(default_model_dir("pi0"))
    build = cached_builder(lambda bits: load_policy_with_bits(model, bits)[0])
    reference = record_reference(build, "push", 100001, 200, tmp_path)
    same = watch_episode(build, "fp32", "fp32", "push", 100001, 200, reference)
    low = watch_episode(build, "w2a8", "fp32", "push", 100001, 200, reference)
    assert same[:2] == pytest.approx((0.0, 0.0), abs=1e-12) and same[2] and max(same[2]) == 0.0
    assert low[0] > 1e-3 and low[1] > 1e-3 and max(low[2]) > 1e-3, low
