"""The README's "Your arm, your VLA" on a UR5e with a Robotiq gripper, the test playing the arm.

Its four command lines, run as written (paths under tmp_path): `daptq import --robot ur5e` of a
tiny pi0 (7-D: the six arm joints and the gripper's knuckle in, six joint targets and the
gripper out), `ros2 bag record -s mcap /camera/image_raw /joint_states /instruction` while the
test moves the arm along a smooth path (teleoperation), stopped with Ctrl-C (SIGINT), `daptq
quantize --calib` of that recording, and `ros2 launch daptq_ros bringup.launch.py robot:=ur5e
... command_interface:=joint_trajectory`, then the README's "On the arm" steps: enable in dry
run, `ros2 param set /policy_node dry_run false`, enable.

The fake UR5e publishes the camera, the six arm joints on /joint_states (50 Hz) and, as the
gripper's driver does beside ur_robot_driver, the Robotiq knuckle alone on the same topic at a
lower rate (10 Hz), and /instruction; once commanded, the arm follows the first point of each
JointTrajectory. Asserted is what the design guarantees on any CPU: the status names the
quantized model and holds for no state reason, the commands name the six joints and stay inside
the preset's command limits, the arm moves; without the knuckle the node holds and names it.
Skipped without ROS 2 (never in CI: DAPTQ_REQUIRE_ROS=1).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pi0_checkpoint import save_tiny_pi0
from ros_graph import (
    FakeArm,
    Probe,
    command_limits,
    daptq,
    latest,
    moving,
    patience,
    readme_commands,
    readme_launch,
    require_ros,
    ros2,
    since,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

UR5E = (
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_1_joint",
    "wrist_2_joint",
    "wrist_3_joint",
)
KNUCKLE = "robotiq_85_left_knuckle_joint"  # the ur5e mapping's gripper state
HOME = np.array([0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0])  # the ur5e preset's home
SWING = np.array([0.3, -0.15, 0.25, 0.2, -0.2, 0.3])  # rad: the teleoperated path's reach
RECORDED = ("/camera/image_raw", "/joint_states", "/instruction")
INSTRUCTION = "pick up the puck"
TELEOP_S = 4.0  # s of teleoperation recorded
# The README's command lines, run as written in tmp_path.
README_LINES = (
    "daptq import --checkpoint my_pi0/ --robot ur5e --out models/my_pi0",
    "ros2 bag record -s mcap /camera/image_raw /joint_states /instruction -o my_recordings/take_1",
    "daptq quantize --model models/my_pi0 --calib my_recordings/ --method daptq --scores jacobian "
    "--urdf ur5 --bins 1 --out models/my_pi0_daptq",
    "ros2 launch daptq_ros bringup.launch.py robot:=ur5e model:=models/my_pi0_daptq "
    "command_interface:=joint_trajectory",
)
# Its "On the arm" steps: enable (in dry run first), then leave dry-run mode.
ENABLE = 'ros2 service call /policy_node/enable std_srvs/srv/SetBool "{data: true}"'
LEAVE_DRY_RUN = "ros2 param set /policy_node dry_run false"
VIEW, CHUNK, DIMS = 32, 20, 7  # px per view; chunk rows; 6 joints + the knuckle / gripper
TOLERANCE = 1e-9  # rad: float rounding in the filter's steps
# rad: farther than the dry run's held command can be from the still arm (deviation_threshold
# 0.25 rad), and nearer than the tiny model's targets (normalised actions, mean 0.01 i, std 0.1)
# are from HOME, 1.57 rad from zero on four joints: the policy moved the arm.
DRIVEN = 0.5


class Gripper:
    """The Robotiq driver: the knuckle alone on /joint_states at 10 Hz, and /instruction
    (2 Hz, as `ros2 topic pub -r 2` would); `on` switches the knuckle off (a fault)."""

    def __init__(self, probe: Probe, position: float = 0.1) -> None:
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from daptq_ros.nodes.common import RELIABLE_QOS, SENSOR_QOS

        self.probe, self.on, self.position = probe, True, position
        self.joint_states = probe.publisher(JointState, "/joint_states", SENSOR_QOS)
        self.instruction = probe.publisher(String, "/instruction", RELIABLE_QOS)
        probe.node.create_timer(0.1, self._knuckle)
        probe.node.create_timer(0.5, lambda: self.instruction.publish(String(data=INSTRUCTION)))

    def _knuckle(self) -> None:
        from rosidl_runtime_py.utilities import get_message

        from daptq_ros.bags.convert import joint_state_msg

        if self.on:
            stamp = self.probe.node.get_clock().now().nanoseconds
            position = np.array([self.position])
            self.joint_states.publish(joint_state_msg(get_message, stamp, (KNUCKLE,), position))


def record_teleoperation(
    probe: Probe, arm: FakeArm, gripper: Gripper, command: list[str], cwd: Path
) -> None:
    """The README's `ros2 bag record` while the arm is moved along a smooth path (out and back
    with zero velocity at both ends, the gripper closing and opening), then Ctrl-C."""
    log = cwd / "record.log"
    with log.open("w") as out:
        recorder = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )
    try:
        wait_for(
            lambda: all(probe.node.count_subscribers(topic) for topic in RECORDED),
            60,
            "ros2 bag record to subscribe to " + ", ".join(RECORDED),
        )
        time.sleep(0.5)  # a still start
        start = time.monotonic()
        while (t := time.monotonic() - start) < TELEOP_S:
            s = math.sin(math.pi * t / TELEOP_S) ** 2
            arm.joints[:] = HOME + s * SWING
            gripper.position = 0.1 + 0.5 * s
            time.sleep(0.01)
        arm.joints[:] = HOME
        gripper.position = 0.1
        time.sleep(0.5)  # a still end
    finally:
        if recorder.poll() is None:
            os.killpg(recorder.pid, signal.SIGINT)  # Ctrl-C, as the user stops recording
        try:
            recorder.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(recorder.pid, signal.SIGKILL)
            recorder.wait(10)
    assert recorder.returncode == 0, log.read_text(errors="replace")[-3000:]


def check_recording(take: Path) -> None:
    """The recording is complete: closed (metadata.yaml), every topic there and readable to
    its last message, both /joint_states publishers in it, the whole teleoperation spanned."""
    from daptq_ros.bags import bag_info
    from daptq_ros.bags.reader import BagReader

    assert (take / "metadata.yaml").is_file(), f"{take} was not closed: {list(take.iterdir())}"
    info = bag_info(take)
    assert info.storage == "mcap", info.storage
    counts = {t.name: t.count for t in info.topics}
    assert all(counts.get(topic, 0) > 0 for topic in RECORDED), counts
    assert info.duration_s >= TELEOP_S, info.duration_s
    names, instructions = set(), set()
    with BagReader(take) as reader:  # reads to the end; refuses a truncated bag
        for message in reader.messages(["/joint_states", "/instruction"]):
            if message.topic == "/joint_states":
                names.add(tuple(message.msg.name))
            else:
                instructions.add(message.msg.data)
    assert names == {UR5E, (KNUCKLE,)}, names
    assert instructions == {INSTRUCTION}, instructions


def describe(status) -> str:
    """The newest status, for assertion messages."""
    s = latest(status)
    if s is None:
        return "no status"
    return f"safety {s.safety_status}, enabled {s.enabled}, hold_reasons {list(s.hold_reasons)}"


def test_readme_your_arm_on_a_ur5e_with_a_robotiq_gripper(tmp_path):
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from trajectory_msgs.msg import JointTrajectory

    from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    import_line, record_line, quantize_line, launch_line = readme_commands(*README_LINES)
    enable, leave_dry_run = readme_commands(ENABLE, LEAVE_DRY_RUN)
    preset, limits, _ = command_limits("ur5e")
    assert preset.joints.names == UR5E
    controller = preset.command_topics["joint_trajectory"]
    save_tiny_pi0(tmp_path / "my_pi0", chunk_size=CHUNK, widths=(64, 32), view=VIEW, dims=DIMS)
    daptq(*import_line[1:], cwd=tmp_path)

    probe = Probe("daptq_ur5e_probe")
    launch = None
    try:
        arm = FakeArm(probe, UR5E, HOME.copy(), command_topic=controller)
        gripper = Gripper(probe)
        record_teleoperation(probe, arm, gripper, record_line, tmp_path)
        check_recording(tmp_path / "my_recordings" / "take_1")

        daptq(*quantize_line[1:], cwd=tmp_path)
        quantized = "models/my_pi0_daptq"  # as the launch line names it, relative to tmp_path
        report = json.loads((tmp_path / quantized / "calibration.json").read_text())
        assert report["calibration_bags"] == 1 and report["method"] == "daptq"
        assert len(report["drift_scores"]) == DIMS  # from the UR5's Jacobian, per action

        status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
        debug = probe.record(JointTrajectory, "/policy_node/debug/command", RELIABLE_QOS)
        launch = readme_launch(launch_line, tmp_path / "launch.log", cwd=tmp_path)
        ready = wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        assert ready.dry_run, "bringup.launch.py must default to dry_run true"
        assert ready.family == "pi0" and ready.model == quantized, ready
        assert ready.bit_config == "daptq_topk_jacobian", ready.bit_config
        wait_for(
            lambda: latest(status).instruction == INSTRUCTION,
            patience(10, status),
            "the instruction",
        )

        # On the arm, 1: enabled in dry run, commands go to ~/debug/command only.
        enabled = ros2(*enable[1:])
        assert "success=True" in enabled.stdout, enabled.stdout + enabled.stderr
        wait_for(lambda: len(debug) > 5, patience(20, status), "commands on ~/debug/command")
        assert not arm.commands, "a dry run must not command the controller"

        # 2: leave dry-run mode and enable: the arm follows the policy.
        switched = ros2(*leave_dry_run[1:])
        assert "Set parameter successful" in switched.stdout, switched.stdout + switched.stderr
        driven = time.monotonic()
        before = arm.joints.copy()
        enabled = ros2(*enable[1:])
        assert "success=True" in enabled.stdout, enabled.stdout + enabled.stderr
        wait_for(lambda: len(arm.commands) > 20, patience(20, status), "commands on " + controller)
        try:
            wait_for(lambda: moving(status), patience(20, status), "the policy driving the arm")
        except AssertionError as error:
            raise AssertionError(f"{error}: {describe(status)}\n{launch.tail()}") from None
        wait_for(
            lambda: np.abs(arm.joints - before).max() > DRIVEN,
            patience(20, status),
            f"the arm to move {DRIVEN} rad",
        )
        running = [s for _, s in since(status, driven)]
        state_holds = [r for s in running for r in s.hold_reasons if "joint_states" in r]
        assert not state_holds, state_holds[:3]  # the knuckle, on its own publisher, is fed
        received = list(arm.commands)
        assert all(tuple(msg.joint_names) == UR5E for _, msg in received), received[0][1]
        points = np.array([p.positions for _, msg in received for p in msg.points])
        assert points.shape[1] == len(UR5E)
        assert np.all(limits.lower >= preset.joints.lower)
        assert np.all(limits.upper <= preset.joints.upper)
        outside = (points < limits.lower - TOLERANCE) | (points > limits.upper + TOLERANCE)
        assert not outside.any(), points[outside.any(axis=1)][:5]

        # The gripper's driver stops: the node holds and names the knuckle joint.
        gripper.on = False
        try:
            wait_for(
                lambda: (
                    (s := latest(status)).safety_status == "hold"
                    and any(KNUCKLE in r for r in s.hold_reasons)
                ),
                patience(5, status),
                f"a hold naming {KNUCKLE}",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}: {describe(status)}") from None
    finally:
        if launch is not None:
            launch.stop()
        probe.close()
