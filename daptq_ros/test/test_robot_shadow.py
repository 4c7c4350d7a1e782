"""The drift guard's shadow: a higher-precision copy of the policy beside the deployed one.

Through the node's logic (no rclpy): the divergence of a known offset on ~/shadow and
/diagnostics, every k-th chunk, never a delayed command while the shadow is busy, hand paths
through forward kinematics, and the same noise for both copies of the real embedded model.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from robot_fakes import ConstantPolicy, image
from robot_rig import Rig

from daptq_ros.control.runtime import Observation
from daptq_ros.robot import policy_core
from daptq_ros.robot.shadow import SHADOW, ShadowReference

ACTION_SCALE = 0.01  # the node's default action_scale


def run_until(rig: Rig, condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        rig.tick()
        time.sleep(0.002)


def shadow_messages(rig: Rig) -> list:
    return [m for _, k, m in rig.outputs if k == SHADOW]


def diagnostics_values(rig: Rig) -> dict[str, str]:
    (status,) = rig.core.diagnostics_msg(rig.t).status
    return {v.key: v.value for v in status.values}


def test_a_known_offset_is_published_on_the_shadow_topic_and_diagnostics(rig):
    shadow = {"w8a8": lambda: ConstantPolicy(action=(0.6, 0.0, 0.0, -1.0))}
    r = rig(builds=shadow, shadow_bit_config="w8a8", shadow_every=1)
    r.run(8)
    r.enable()
    run_until(r, lambda: len(shadow_messages(r)) >= 2)
    message = shadow_messages(r)[0]
    assert (message.bit_config, message.shadow_bit_config) == ("fp32", "w8a8")
    assert message.rows == 8
    # 0.1 apart on one of four action dimensions: sqrt(0.1^2 / 4)
    assert message.chunk_rmse == pytest.approx(0.05)
    # ee_delta rows summed into a hand path: 0.1 x 0.01 m more per row, 8 rows
    assert message.has_hand_divergence
    assert message.hand_max_divergence == pytest.approx(8 * 0.1 * ACTION_SCALE)
    assert message.hand_final_divergence == pytest.approx(8 * 0.1 * ACTION_SCALE)
    values = diagnostics_values(r)
    assert values["shadow_bit_config"] == "w8a8"
    assert float(values["shadow_chunk_rmse"]) == pytest.approx(0.05)
    assert int(values["shadow_compared"]) >= 2
    # The deployed model drives the arm; the shadow only watches.
    r.run(100)
    chunks = [m for _, k, m in r.outputs if k == policy_core.ACTION_CHUNK]
    assert len(r.commands()) > 50 and all(np.asarray(m.actions)[0] == 0.5 for m in chunks)


def test_a_busy_shadow_is_skipped_and_never_holds_up_a_command(rig):
    slow = {"bf16": lambda: ConstantPolicy(delay=1.0)}
    r = rig(builds=slow, shadow_bit_config="bf16", shadow_every=1)
    r.run(8)
    r.enable()
    r.run(40)
    counters = r.core.guard.shadow.counters
    assert counters["offered"] == 1  # taken once; it is still computing
    assert counters["skipped_busy"] >= 5  # every chunk since found it busy
    assert counters["compared"] == 0 and len(r.commands()) > 30


def test_only_every_kth_accepted_chunk_is_offered():
    shadow = ShadowReference(ConstantPolicy(), "bf16", every=3, action_scale=0.01, joint_count=7)
    try:
        taken = []
        for k in range(7):
            stamp = float(k)
            shadow.note(Observation(np.zeros((2, 2, 3), np.uint8), "", np.zeros(3), stamp))
            taken.append(shadow.offer(stamp, np.zeros((8, 4)), "ee_delta"))
            while shadow.worker.busy:
                time.sleep(0.001)
            shadow.poll()
        assert taken == [True, False, False, True, False, False, True]
        assert not shadow.offer(99.0, np.zeros((8, 4)), "ee_delta")  # never observed: not run
    finally:
        shadow.close()


def test_joint_space_chunks_diverge_through_forward_kinematics():
    class JointPolicy:
        def predict(self, image, instruction, state):
            return ConstantPolicyChunk(np.tile([0.1, 0.2, 0.3, 0.0], (5, 1)))

    shadow = ShadowReference(
        JointPolicy(),
        "fp32",
        every=1,
        action_scale=0.01,
        joint_count=3,
        hand_position=lambda q: 2 * q,
    )
    try:
        shadow.note(Observation(np.zeros((2, 2, 3), np.uint8), "", np.zeros(3), 1.0))
        deployed = np.tile([0.1, 0.2, 0.0, 0.0], (5, 1))  # joint 3 at 0 instead of 0.3
        assert shadow.offer(1.0, deployed, "joint_position", np.zeros(3))
        while not shadow.worker.has_results:
            time.sleep(0.001)
        (divergence,) = shadow.poll()
        assert divergence.hand_max_m == pytest.approx(0.6)  # |2 * 0.3|
        assert divergence.chunk_rmse == pytest.approx(math.sqrt(0.09 / 4))
    finally:
        shadow.close()


class ConstantPolicyChunk:
    def __init__(self, actions: np.ndarray) -> None:
        self.actions, self.dt, self.space = actions, 0.05, "joint_position"
        self.names = ("j1", "j2", "j3", "gripper")


@pytest.mark.slow
def test_the_real_model_and_its_full_precision_shadow_draw_the_same_noise():
    """Deployed FP32 and an FP32 shadow agree exactly; a W8A8 shadow differs, a little."""
    import torch

    from daptq_ros.robot.params import defaults
    from daptq_ros.robot.policy_builder import default_policy_builder

    torch.set_num_threads(1)
    build = default_policy_builder({**defaults("policy_node"), "num_threads": 1})
    deployed = build("fp32")
    frame = np.asarray(image(0.0, size=32).data).reshape(32, 64, 3)
    state = np.zeros(4)
    observation = Observation(frame, "reach the goal", state, 1.0)
    chunk = deployed.predict(frame, "reach the goal", state).actions
    rmse = {}
    for bits in ("fp32", "w8a8"):
        shadow = ShadowReference(build(bits), bits, every=1, action_scale=0.01, joint_count=7)
        try:
            shadow.note(observation)
            assert shadow.offer(1.0, chunk, "ee_delta")
            while not shadow.worker.has_results:
                time.sleep(0.005)
            (divergence,) = shadow.poll()
            rmse[bits] = divergence.chunk_rmse
        finally:
            shadow.close()
    assert rmse["fp32"] == 0.0
    assert 0.0 < rmse["w8a8"] < 0.2


def test_the_ladder_climbs_when_the_shadow_diverges_without_a_hold_or_a_jump(rig):
    """On 'low' the hand diverges 8 mm from the shadow, on 'mid' 4 mm: up once, then it stays."""
    from test_robot_policy_core import assert_within_limits

    def unbuildable():
        raise RuntimeError("no model for this rung")

    builds = {
        "high": unbuildable,
        "low": lambda: ConstantPolicy(action=(0.5, 0.0, 0.0, -1.0)),
        "mid": lambda: ConstantPolicy(action=(0.55, 0.0, 0.0, -1.0)),
        "fp32": lambda: ConstantPolicy(action=(0.6, 0.0, 0.0, -1.0)),
    }
    r = rig(
        builds=builds,
        bit_config="low",
        shadow_bit_config="fp32",
        shadow_every=1,
        precision_ladder=("low", "mid", "high"),
        ladder_up_m=0.006,
        ladder_down_m=0.002,
        ladder_up_count=2,
        ladder_down_count=5,
    )
    r.run(8)
    r.enable()
    run_until(r, lambda: r.core.bit_config == "mid")
    switched, statuses = len(r.outputs), []
    for _ in range(120):
        r.tick()
        statuses.append(r.core.safety.status.value)
    chunks = [m for _, k, m in r.outputs[switched:] if k == policy_core.ACTION_CHUNK]
    assert chunks and all(np.asarray(m.actions)[0] == 0.55 for m in chunks[1:])
    assert r.core.bit_config == "mid" and r.core.status_msg(r.t).bit_config == "mid"
    values = diagnostics_values(r)
    assert values["ladder_rung"] == "mid" and values["ladder_switches"] == "1"
    assert "low -> mid: 2 divergences above 0.006 m" in values["ladder_last_switch"]
    assert "high: " in values["ladder_error"]  # a rung the builder cannot make is never used
    refused = r.core.check_parameter("bit_config", "low")
    assert refused is not None and "precision ladder sets bit_config" in refused
    # No hold at the switch: the arm kept following the policy, within the filter's limits.
    assert set(statuses) <= {"active", "blending"}
    assert_within_limits(r.core, r.commands())
