"""The drift guard's shadow on the live graph: ~/shadow and /diagnostics while the arm moves.

`ros2 launch daptq_ros bringup.launch.py robot:=sawyer_sim dry_run:=false` with a params file
that runs a W8A8 shadow of the embedded FP32 model on every second chunk drives a fake arm
played by the test. ShadowDivergence messages must arrive on /policy_node/shadow with a
divergence above zero (the shadow is quantized), the shadow's values on /diagnostics, and the
drift monitor, given no reference recording, must report drift against the shadow, while the
arm keeps moving. Skipped without ROS 2 (CI sets DAPTQ_REQUIRE_ROS=1: never skips there).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_graph import (
    SAWYER_JOINTS,
    FakeArm,
    Launch,
    Probe,
    command_limits,
    diagnostic,
    enabled_and_moving,
    latest,
    policy_params_file,
    require_ros,
    since,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

HOME = (0.0, 0.6, 0.2)
NODE_STATUS = "daptq policy_node"


def test_a_quantized_shadow_reports_its_divergence_while_the_arm_moves(tmp_path):
    require_ros()
    from daptq_ros_interfaces.msg import DriftReport, PolicyStatus, ShadowDivergence
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    params_file = policy_params_file(
        tmp_path, shadow_bit_config="w8a8", shadow_every=2, blend_time_s=0.1
    )
    probe = Probe()
    fake = FakeArm(probe, SAWYER_JOINTS, np.zeros(9), pose=HOME)
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    shadow = probe.record(ShadowDivergence, "/policy_node/shadow", RELIABLE_QOS)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
    drift = probe.record(DriftReport, "/drift/report", RELIABLE_QOS)
    probe.publisher(String, "/instruction", LATCHED_QOS).publish(String(data="reach the goal"))
    args = {
        "robot": "sawyer_sim",
        "dry_run": "false",
        "blend_time_s": "0.1",
        "params_file": str(params_file),
    }
    launch = Launch("bringup.launch.py", args, tmp_path / "launch.log")
    try:
        wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        enabled_and_moving(probe, status)
        reports = wait_for(lambda: len(shadow) >= 3 and list(shadow), 60, "three ~/shadow reports")
        for _, report in reports:
            assert (report.bit_config, report.shadow_bit_config) == ("fp32", "w8a8")
            assert report.rows == 8 and report.has_hand_divergence
            assert 0.0 < report.chunk_rmse < 0.5 and report.hand_max_divergence >= 0.0

        def shadow_values() -> dict[str, str] | None:
            entry = diagnostic(diagnostics, NODE_STATUS)
            values = {} if entry is None else {v.key: v.value for v in entry.values}
            return values if "shadow_chunk_rmse" in values else None

        values = wait_for(shadow_values, 20, "the shadow's values on /diagnostics")
        assert values["shadow_bit_config"] == "w8a8" and int(values["shadow_compared"]) >= 1
        # No reference recording: the drift monitor measures against the shadow.
        (_, report), *_ = wait_for(lambda: list(drift), 30, "a DriftReport from the shadow")
        assert report.ee_position_rmse > 0.0 and report.bit_config == "fp32"
        monitor = diagnostic(diagnostics, "daptq drift_monitor")
        values = {v.key: v.value for v in monitor.values}
        assert values["reference"] == "shadow" and "no reference" not in monitor.message
        wait_for(lambda: len(fake.commands) > 100, 30, "the arm commanded on, with the shadow")
        s = latest(status)
        assert s.enabled and not s.fault and s.safety_status in ("active", "blending")
    finally:
        launch.stop()
        probe.close()


def test_a_ladder_switch_mid_episode_keeps_every_command_within_the_limits(tmp_path):
    """W4A8 with an FP32 shadow and the ladder [w4a8, fp32]: any divergence moves it up."""
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    params_file = policy_params_file(
        tmp_path,
        bit_config="w4a8",
        shadow_bit_config="fp32",
        shadow_every=1,
        precision_ladder=["w4a8", "fp32"],
        ladder_up_m=1e-9,
        ladder_down_m=0.0,
        ladder_up_count=3,
        ladder_down_count=1000,
        blend_time_s=0.1,
    )
    probe = Probe()
    fake = FakeArm(probe, SAWYER_JOINTS, np.zeros(9), pose=HOME)
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
    probe.publisher(String, "/instruction", LATCHED_QOS).publish(String(data="reach the goal"))
    args = {"robot": "sawyer_sim", "dry_run": "false", "params_file": str(params_file)}
    args["bit_config"] = "w4a8"  # the launch argument wins over the params file
    launch = Launch("bringup.launch.py", args, tmp_path / "launch.log")
    try:
        wait_for(lambda: latest(status), 180, "the policy node's status\n" + launch.tail())
        assert latest(status).bit_config == "w4a8"
        enabled_and_moving(probe, status)
        start = time.monotonic()
        wait_for(lambda: latest(status).bit_config == "fp32", 60, "the ladder's switch to fp32")
        time.sleep(2.0)  # the arm goes on under the new rung
        s = latest(status)
        assert s.enabled and not s.fault and s.safety_status in ("active", "blending")
        entry = diagnostic(diagnostics, NODE_STATUS)
        values = {v.key: v.value for v in entry.values}
        assert values["ladder_rung"] == "fp32" and "w4a8 -> fp32" in values["ladder_last_switch"]
        positions = np.array(
            [[m.pose.position.x, m.pose.position.y, m.pose.position.z]
             for _, m in since(fake.commands, start)]
        )  # fmt: skip
        assert len(positions) > 50
        _, limits, period = command_limits("sawyer_sim", "pose")
        steps = np.abs(np.diff(positions, axis=0))
        # Commands are one period apart on the node clock; a message may arrive late: 2 periods.
        assert np.all(steps <= 2 * limits.velocity[:3] * period + 1e-9), steps.max(axis=0)
    finally:
        launch.stop()
        probe.close()
