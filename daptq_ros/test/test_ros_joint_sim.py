"""A joint-space pi0 on the real ROS 2 graph: the simulated arm takes JointTrajectory commands.

The README's commands for an arm commanded in joint space: `daptq import --robot
sawyer_joint_sim` of a tiny pi0 (8-D joint state and joint_position actions, chunks of 20),
`daptq collect --control joint_position` of demonstrations in joint space, `daptq quantize
--scores jacobian --urdf sawyer_sim` from them, then `ros2 launch daptq_ros sim.launch.py
command_interface:=joint_trajectory`. Asserted is what the design guarantees on any CPU: the
commands name the arm's joints, stay within the safety filter's joint limits, step within its
velocity limits, and the simulated arm's measured joints move; a command missing a joint is
refused by the bridge with its name. Skipped without ROS 2 (never in CI: DAPTQ_REQUIRE_ROS=1).
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from pi0_checkpoint import save_tiny_pi0
from ros_graph import Launch, Probe, latest, patience, require_ros, ros2, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"  # sawyer_sim's joint topic
ARM = tuple(f"right_j{i}" for i in range(7))
VIEW, CHUNK, DIMS = 48, 20, 8  # px per view; the mapping's 7 joints + gripper
TOLERANCE = 1e-9  # rad: float rounding in the filter's steps


def daptq(*args: str) -> None:
    done = subprocess.run(["daptq", *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def joint_limits():
    """The limits the policy node holds sawyer_sim's joint commands to (its params file)."""
    from ament_index_python.packages import get_package_share_directory

    from daptq_ros.robot.params import defaults, load_node_yaml
    from daptq_ros.robot.presets import load_robot

    share = get_package_share_directory("daptq_ros")
    p = {
        **defaults("policy_node"),
        **load_node_yaml(f"{share}/config/policy_node.yaml", "policy_node"),
    }
    preset = load_robot("sawyer_sim")
    limits = preset.command_limits(
        "joint_trajectory", p["position_margin"], p["velocity_scale"], p["acceleration_scale"]
    )
    return preset.joints, limits, 1.0 / p["command_hz"]


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

    checkpoint = save_tiny_pi0(
        tmp_path / "my_pi0", chunk_size=CHUNK, widths=(64, 32), view=VIEW, dims=DIMS
    )
    imported, quantized, demos = tmp_path / "imported", tmp_path / "quantized", tmp_path / "demos"
    daptq("import", "--checkpoint", str(checkpoint), "--robot", "sawyer_joint_sim",
          "--out", str(imported))  # fmt: skip
    daptq("collect", "--control", "joint_position", "--tasks", "reach", "--episodes", "3",
          "--image-size", str(VIEW), "--out", str(demos))  # fmt: skip
    bits = tmp_path / "w4a8_g32.yaml"  # the tiny model is 32-64 wide: groups of 32
    bits.write_text("method: rtn\nweight_bits: 4\nactivation_bits: 8\ngroup_size: 32\n")
    daptq("quantize", "--model", str(imported), "--calib", str(demos), "--method", "daptq",
          "--scores", "jacobian", "--urdf", "sawyer_sim", "--config", str(bits), "--bins", "1",
          "--out", str(quantized))  # fmt: skip

    probe = Probe("daptq_joint_sim_probe")
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    commands = probe.record(JointTrajectory, COMMAND_TOPIC, RELIABLE_QOS)
    joints = probe.record(JointState, "/joint_states", SENSOR_QOS)
    arguments = {"task": "reach", "model": str(quantized), "command_interface": "joint_trajectory"}
    launch = Launch("sim.launch.py", arguments, tmp_path / "log")
    try:
        ready = wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        assert ready.family == "pi0" and ready.model == str(quantized)
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
        preset, limits, period = joint_limits()
        assert np.all(limits.lower >= preset.lower) and np.all(limits.upper <= preset.upper)
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
