"""The README's "Run on your arm" steps on a Panda, with the test playing the arm.

`ros2 launch daptq_ros bringup.launch.py robot:=panda command_interface:=joint_trajectory
dry_run:=true`, then the README's commands in order: the instruction, enable, the status,
leaving dry-run mode, disable. The fake Panda publishes camera and joint states (no pose
topic: the node computes the tool position from the Panda's URDF) and follows the first point
of each JointTrajectory. Skipped without ROS 2 (never in CI: DAPTQ_REQUIRE_ROS=1).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_graph import (
    FakeArm,
    Launch,
    Probe,
    latest,
    moving,
    patience,
    require_ros,
    ros2,
    since,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PANDA_JOINTS = (
    *(f"panda_joint{i}" for i in range(1, 8)),
    "panda_finger_joint1",
    "panda_finger_joint2",
)
READY = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04, 0.04)  # the preset's home
CONTROLLER = "/panda_arm_controller/joint_trajectory"
DEBUG = "/policy_node/debug/command"
INSTRUCTION = "pick up the red cube"


def test_readme_steps_on_a_panda_dry_run_then_enabled_then_disabled(tmp_path):
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from trajectory_msgs.msg import JointTrajectory

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS
    from daptq_ros.robot.presets import load_robot

    probe = Probe("daptq_panda_probe")
    arm = FakeArm(probe, PANDA_JOINTS, np.array(READY), command_topic=CONTROLLER)
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    debug = probe.record(JointTrajectory, DEBUG, RELIABLE_QOS)
    launch = Launch(
        "bringup.launch.py",
        {"robot": "panda", "command_interface": "joint_trajectory", "dry_run": "true"},
        tmp_path / "launch.log",
    )
    try:
        wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        sent = ros2(
            "topic",
            "pub",
            "--once",
            "/instruction",
            "std_msgs/msg/String",
            f"{{data: '{INSTRUCTION}'}}",
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(
            lambda: latest(status).instruction == INSTRUCTION,
            patience(10, status),
            "the instruction",
        )
        enabled = ros2(
            "service", "call", "/policy_node/enable", "std_srvs/srv/SetBool", "{data: true}"
        )
        assert "success=True" in enabled.stdout, enabled.stdout + enabled.stderr

        # Dry run: JointTrajectory commands on ~/debug/command, nothing to the controller.
        wait_for(lambda: len(debug) > 20, patience(20, status), "commands on " + DEBUG)
        assert not arm.commands, "a dry run must not command the controller"
        echoed = ros2("topic", "echo", "--once", "/policy_node/status")
        assert "dry_run: true" in echoed.stdout and "family: pi0" in echoed.stdout
        trajectory = latest(debug)
        assert tuple(trajectory.joint_names) == PANDA_JOINTS[:7]
        limits = load_robot("panda").joints
        points = np.array([p.positions for _, m in list(debug) for p in m.points])
        assert np.all(points >= limits.lower) and np.all(points <= limits.upper)

        # Leave dry-run mode: the controller gets the commands, and the arm follows them.
        switched = ros2("param", "set", "/policy_node", "dry_run", "false")
        assert "Set parameter successful" in switched.stdout, switched.stdout + switched.stderr
        wait_for(lambda: len(arm.commands) > 20, patience(20, status), "commands on " + CONTROLLER)
        wait_for(lambda: moving(status), patience(20, status), "the policy driving the arm")

        # Disable: the command comes to rest, then nothing more is sent.
        stopped = ros2(
            "service", "call", "/policy_node/enable", "std_srvs/srv/SetBool", "{data: false}"
        )
        assert "success=True" in stopped.stdout
        wait_for(
            lambda: latest(status).safety_status == "disabled",
            patience(5, status),
            "the status disabled",
        )
        time.sleep(1.0)
        quiet = time.monotonic()
        time.sleep(1.0)
        assert not since(arm.commands, quiet), "commands after the disable came to rest"
    finally:
        launch.stop()
        probe.close()
