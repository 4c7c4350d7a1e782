"""A joint-space pi0 on the real ROS 2 graph: the simulated arm takes JointTrajectory commands.

The README's five command lines for the simulated Sawyer in joint space, run as written in
tmp_path: `daptq import --robot sawyer_joint_sim` of a tiny pi0 (8-D joint state and
joint_position actions, chunks of 20), `daptq collect --control joint_position` of 6 reach
demonstrations, `daptq quantize --scores jacobian --urdf sawyer_sim` from them (the default
w4a8, its groups fitted to the narrow layers), `daptq eval` of 10 episodes in joint_position
control (the random tiny model need not succeed), then `ros2 launch daptq_ros sim.launch.py
command_interface:=joint_trajectory` (on its default task, push). Asserted is what the design
guarantees on any CPU: the commands name the arm's joints, stay within the safety filter's joint
limits, step within its velocity limits, and the simulated arm's measured joints move; a
command missing a joint is refused by the bridge with its name. Skipped without ROS 2 (never in
CI: DAPTQ_REQUIRE_ROS=1).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from pi0_checkpoint import save_tiny_pi0
from ros_graph import (
    Probe,
    command_limits,
    daptq,
    latest,
    patience,
    readme_commands,
    readme_launch,
    require_ros,
    ros2,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"  # sawyer_sim's joint topic
ARM = tuple(f"right_j{i}" for i in range(7))
VIEW, CHUNK, DIMS = 48, 20, 8  # px per view; the mapping's 7 joints + gripper
TOLERANCE = 1e-9  # rad: float rounding in the filter's steps
# The README's command lines, run as written in tmp_path.
README_LINES = (
    "daptq import --checkpoint my_pi0/ --robot sawyer_joint_sim --out models/my_pi0_sim",
    "daptq collect --control joint_position --tasks reach --episodes 6 --out my_sim_demos",
    "daptq quantize --model models/my_pi0_sim --calib my_sim_demos --method daptq --scores "
    "jacobian --urdf sawyer_sim --out models/my_pi0_sim_daptq",
    "daptq eval --model models/my_pi0_sim_daptq --tasks reach --episodes 10 --out runs/my_pi0_sim",
    "ros2 launch daptq_ros sim.launch.py task:=reach model:=models/my_pi0_sim_daptq "
    "command_interface:=joint_trajectory",
)


def limit_violations(commands: list, limits, period: float) -> list[str]:
    """Where JointTrajectory commands leave the joint limits or step faster than the velocity
    limits: between the points of one command (each a period apart) and between the first
    points of consecutive ones (each one filter step of `period`; a lost one spans several)."""
    broken, firsts, stamps = [], [], []
    for i, (_, msg) in enumerate(commands):
        points = np.array([point.positions for point in msg.points])
        outside = (points < limits.lower - TOLERANCE) | (points > limits.upper + TOLERANCE)
        broken += [f"command {i} point {k}: outside" for k in np.flatnonzero(outside.any(1))]
        fast = np.abs(np.diff(points, axis=0)) > limits.velocity * period + TOLERANCE
        broken += [f"command {i} point {k + 1}: too fast" for k in np.flatnonzero(fast.any(1))]
        firsts.append(points[0])
        stamps.append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)
    ticks = np.maximum(np.round(np.diff(stamps) / period), 1.0)[:, None]
    step = np.abs(np.diff(np.array(firsts), axis=0))
    fast = np.any(step > limits.velocity * period * ticks + TOLERANCE, axis=1)
    broken += [f"command {i + 1}: {step[i]} rad in {ticks[i, 0]:g}" for i in np.flatnonzero(fast)]
    return broken


def test_a_joint_space_pi0_drives_the_simulated_arm_through_joint_trajectories(tmp_path):
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS

    *steps, launch_line = readme_commands(*README_LINES)
    save_tiny_pi0(tmp_path / "my_pi0", chunk_size=CHUNK, widths=(64, 32), view=VIEW, dims=DIMS)
    for words in steps:  # import, collect, quantize, eval
        daptq(*words[1:], cwd=tmp_path)
    quantized = "models/my_pi0_sim_daptq"  # as the launch line names it, relative to tmp_path
    report = json.loads((tmp_path / quantized / "calibration.json").read_text())
    assert report["calibration_bags"] == 6 and len(report["drift_scores"]) == DIMS
    evaluated = json.loads((tmp_path / "runs/my_pi0_sim/eval.json").read_text())
    assert evaluated["control"] == "joint_position" and evaluated["tasks"] == ["reach"]
    assert evaluated["bit_config"] == "daptq_topk_jacobian"
    assert evaluated["episodes"] == 10 and len(evaluated["episodes_run"]) == 10
    assert evaluated["overall"]["episodes"] == 10 and not evaluated["failed_runs"]

    probe = Probe("daptq_joint_sim_probe")
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    commands = probe.record(JointTrajectory, COMMAND_TOPIC, RELIABLE_QOS)
    joints = probe.record(JointState, "/joint_states", SENSOR_QOS)
    launch = readme_launch(launch_line, tmp_path / "log", cwd=tmp_path)
    try:
        ready = wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        assert ready.family == "pi0" and ready.model == quantized
        wait_for(lambda: joints, 30, "the simulated arm's joint states")

        def arm(msg) -> np.ndarray:
            index = {name: i for i, name in enumerate(msg.name)}
            return np.array([msg.position[index[name]] for name in ARM])

        before = arm(latest(joints))
        enabled = ros2("service", "call", "/policy_node/enable", "std_srvs/srv/SetBool",
                       "{data: true}")  # fmt: skip
        assert "success=True" in enabled.stdout, enabled.stdout + enabled.stderr
        wait_for(lambda: len(commands) > 20, patience(30, status), "joint commands to the arm")
        wait_for(
            lambda: np.abs(arm(latest(joints)) - before).max() > 0.01,
            patience(20, status),
            "the simulated arm's measured joints to move\n" + launch.tail(),
        )
        running = wait_for(
            lambda: (s := latest(status)).inference_hz > 0 and s,
            patience(10, status),
            "a measured chunk rate",
        )
        assert running.bit_config == "daptq_topk_jacobian"  # the quantized model drives the arm
        received = list(commands)
        assert all(tuple(msg.joint_names) == ARM for _, msg in received), received[0][1]
        preset, limits, period = command_limits("sawyer_sim")
        assert np.all(limits.lower >= preset.joints.lower)
        assert np.all(limits.upper <= preset.joints.upper)
        assert not (broken := limit_violations(received, limits, period)), broken[:5]

        # A command without right_j3 is refused by the bridge, naming the joint.
        partial = [name for name in ARM if name != "right_j3"]
        point = JointTrajectoryPoint(positions=[0.0] * len(partial))
        bad = JointTrajectory(joint_names=partial, points=[point])
        publisher = probe.publisher(JointTrajectory, COMMAND_TOPIC, RELIABLE_QOS)
        deadline = time.monotonic() + 30
        while "it lacks right_j3" not in launch.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "no refusal of the bad command\n" + launch.tail()
            publisher.publish(bad)
            time.sleep(0.2)
    finally:
        launch.stop()
        probe.close()
