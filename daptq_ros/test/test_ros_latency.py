"""Slow inference on the live graph: RTC named on status, the overrun said on /diagnostics.

`ros2 launch daptq_ros bringup.launch.py robot:=sawyer_sim dry_run:=false` with a params file
that asks for real-time chunking drives a fake arm played by the test. Setting
`inject_latency_s` to 1.25 chunk durations at run time (`ros2 param set`) must slow the
timeline, never jump: the commands stay within the velocity limit and the arm stays enabled.
Skipped without ROS 2 (CI installs it and sets DAPTQ_REQUIRE_ROS=1, so it never skips there).
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
    ros2,
    since,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

HOME = (0.0, 0.6, 0.2)
CHUNK_S = 8 * 0.0125  # the embedded pi0's chunk
NODE_STATUS = "daptq policy_node"


def test_rtc_runs_and_inference_longer_than_a_chunk_slows_the_arm_without_a_jump(tmp_path):
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    params_file = policy_params_file(tmp_path, chunk_method="rtc", blend_time_s=0.1)
    probe = Probe()
    fake = FakeArm(probe, SAWYER_JOINTS, np.zeros(9), pose=HOME)
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
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
        wait_for(lambda: latest(status).chunk_method == "rtc (identity)", 20, "RTC on ~/status")
        result = ros2("param", "set", "/policy_node", "inject_latency_s", str(1.25 * CHUNK_S))
        assert "successful" in result.stdout.lower(), result.stdout + result.stderr
        start = time.monotonic()

        def overrun_said() -> bool:
            entry = diagnostic(since(diagnostics, start), NODE_STATUS)
            values = {} if entry is None else {v.key: v.value for v in entry.values}
            return "outlasts" in values.get("overrun", "")

        wait_for(overrun_said, 30, "the overrun on /diagnostics")
        wait_for(lambda: latest(status).timeline_rate < 0.9, 30, "a slowed timeline on ~/status")
        time.sleep(3.0)  # the arm keeps following the policy, slower
        s = latest(status)
        assert s.enabled and not s.fault and s.safety_status in ("active", "blending")
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
