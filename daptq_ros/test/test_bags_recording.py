"""A plain `ros2 bag record` of a UR5e with a Robotiq gripper, read for a joint-space model.

The recording is unlike the simulator's episodes: a 30 Hz camera, arm joint states at 100 Hz
and the gripper's own joint state at 20 Hz on the same topic (as separate drivers publish
them), stamps on no common grid, and a model stepping every 20 ms. Joint positions are linear
in time, so interpolation has an exact answer to compare with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daptq_ros.bags import BagWriter
from daptq_ros.bags.convert import compressed_image_msg, image_msg, joint_state_msg
from daptq_ros.bags.recording import read_demonstration, read_recording
from daptq_ros.bags.state import StateSpec
from daptq_ros.errors import BagError

T0 = 1_700_000_000_000_000_000  # ns
ARM = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint")
ARM += ("wrist_1_joint", "wrist_2_joint", "wrist_3_joint")
KNUCKLE = "robotiq_85_left_knuckle_joint"
STATE = StateSpec("joint_positions", (*ARM, KNUCKLE))
ACTIONS = (*ARM, "gripper")
DT = 0.02
SPEED = np.array([0.1, -0.2, 0.3, 0.05, -0.15, 0.25])  # rad/s of each arm joint
START = np.array([0.0, -1.5, 1.5, -1.5, -1.5, 0.0])


def arm_at(t: float) -> np.ndarray:
    return START + SPEED * t


def knuckle_at(t: float) -> float:
    return 0.1 + 0.4 * t


def record(
    path: Path,
    *,
    seconds: float = 1.0,
    instruction: str | None = "pick up the cup",
    compressed: bool = False,
    joints: tuple[str, ...] = ARM,
) -> Path:
    """The recording; frame k's pixels all equal k."""
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with BagWriter(path) as bag:
        bag.add_topic("/camera/image_raw", image_type)
        bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        if instruction is not None:
            bag.add_topic("/instruction", "std_msgs/msg/String")
            bag.write("/instruction", bag.types["std_msgs/msg/String"](data=instruction), T0)
        events = []
        for k, t in enumerate(np.arange(0.003, seconds, 1 / 30)):
            frame = np.full((6, 8, 3), 10 * k % 256, np.uint8)
            build = compressed_image_msg if compressed else image_msg
            args = (bag.types, T0 + round(t * 1e9), frame)
            events.append(
                (t, "/camera/image_raw", build(*args, "png") if compressed else build(*args))
            )
        for t in np.arange(0.0, seconds, 0.01):
            msg = joint_state_msg(bag.types, T0 + round(t * 1e9), joints, arm_at(t)[: len(joints)])
            events.append((t, "/joint_states", msg))
        for t in np.arange(0.007, seconds, 0.05):
            msg = joint_state_msg(bag.types, T0 + round(t * 1e9), [KNUCKLE], [knuckle_at(t)])
            events.append((t, "/joint_states", msg))
        for t, topic, msg in sorted(events, key=lambda e: e[0]):
            bag.write(topic, msg, T0 + round(t * 1e9))
    return path


def test_states_and_actions_are_the_named_joints_now_and_one_step_later(tmp_path):
    rec = read_recording(record(tmp_path / "ur5e"), STATE, "joint_position", ACTIONS, DT)
    t = rec.stamps  # the first joint state is at T0
    assert t[0] == pytest.approx(0.007, abs=1e-6)  # the first moment every joint was seen
    assert np.allclose(np.diff(rec.stamps), DT)
    expected_state = np.column_stack([np.stack([arm_at(x) for x in t]), knuckle_at(t)])
    np.testing.assert_allclose(rec.states, expected_state, atol=1e-9)
    later = t + DT
    expected_action = np.column_stack([np.stack([arm_at(x) for x in later]), knuckle_at(later)])
    np.testing.assert_allclose(rec.actions, expected_action, atol=1e-9)
    assert later[-1] <= 0.99 + 1e-9  # the last step still has a measured next one
    assert rec.instruction == "pick up the cup" and rec.ee_positions is None


def test_each_step_sees_the_newest_frame_at_or_before_it(tmp_path):
    rec = read_recording(record(tmp_path / "ur5e"), STATE, "joint_position", ACTIONS, DT)
    t = rec.stamps  # the first joint state is at T0
    newest = np.floor((t - 0.003) / (1 / 30) + 1e-9).astype(int)
    np.testing.assert_array_equal(rec.images[:, 0, 0, 0], (10 * newest) % 256)


def test_joint_delta_actions_are_the_change_over_one_step(tmp_path):
    rec = read_recording(record(tmp_path / "ur5e"), STATE, "joint_delta", ACTIONS, DT)
    np.testing.assert_allclose(rec.actions[:, :6], np.tile(SPEED * DT, (len(rec.stamps), 1)))
    np.testing.assert_allclose(rec.actions[:, 6], 0.4 * DT)


def test_compressed_frames_and_a_given_instruction(tmp_path):
    path = record(tmp_path / "ur5e", compressed=True, instruction=None)
    rec = read_recording(path, STATE, "joint_position", ACTIONS, DT, instruction="wipe")
    assert rec.images.shape[1:] == (6, 8, 3) and rec.instruction == "wipe"


def test_a_joint_the_model_needs_is_named_with_the_ones_recorded(tmp_path):
    path = record(tmp_path / "ur5e", joints=ARM[:5])
    with pytest.raises(BagError, match=r"never names wrist_3_joint.*names shoulder_pan_joint"):
        read_recording(path, STATE, "joint_position", ACTIONS, DT)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"image_topic": "/wrist/image"}, "no camera on /wrist/image (image topics: /camera"),
        ({"instruction": None}, "pass the task's instruction with --instruction"),
    ],
)
def test_a_missing_camera_or_instruction_says_what_to_pass(tmp_path, kwargs, words):
    path = record(tmp_path / "ur5e", instruction=None)
    with pytest.raises(BagError, match=words.replace("(", r"\(")):
        read_recording(path, STATE, "joint_position", ACTIONS, DT, **kwargs)


def test_an_ee_delta_model_is_sent_to_episode_bags(tmp_path):
    path = record(tmp_path / "ur5e")
    with pytest.raises(BagError, match=r"joint actions only.*ee_delta.*daptq collect"):
        read_demonstration(path, StateSpec(), "ee_delta", ("dx", "dy", "dz", "gripper"), DT)


def test_a_recording_shorter_than_a_step_is_refused(tmp_path):
    path = record(tmp_path / "ur5e", seconds=0.02)
    with pytest.raises(BagError, match="less than one step"):
        read_recording(path, STATE, "joint_position", ACTIONS, DT)
