"""Reading joint and end-effector trajectories out of a bag."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from daptq_ros.bags import BagWriter, joint_state_msg, pose_stamped_msg, read_trajectory
from daptq_ros.errors import BagError

T0 = 1_700_000_000_000_000_000
DT = 20_000_000
NAMES = ("shoulder", "elbow", "wrist")


def write_episode(
    path: Path,
    orders: Sequence[Sequence[str]],
    *,
    header_stamps: bool = True,
    poses: bool = True,
) -> np.ndarray:
    """One JointState per entry of `orders` (joints listed in that order); returns q [N, 3]."""
    q = np.arange(len(orders) * 3, dtype=float).reshape(-1, 3)
    with BagWriter(path) as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        if poses:
            writer.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped")
        for i, order in enumerate(orders):
            stamp = T0 + i * DT
            by_name = dict(zip(NAMES, q[i], strict=False))
            values = [by_name.get(name, 0.0) for name in order]
            header = stamp - 1_000 if header_stamps else 0
            msg = joint_state_msg(writer.types, header, order, values, np.negative(values))
            writer.write("/joint_states", msg, stamp)
            if poses:
                pose = pose_stamped_msg(writer.types, header, q[i], [0, 0, 0, 1])
                writer.write("/ee_pose", pose, stamp + 1)
    return q


def test_reads_joints_and_poses(tmp_path: Path) -> None:
    q = write_episode(tmp_path / "bag", [NAMES] * 5)
    trajectory = read_trajectory(tmp_path / "bag")
    joints, ee = trajectory.joints, trajectory.ee
    assert ee is not None
    assert joints.names == NAMES
    np.testing.assert_array_equal(joints.positions, q)
    np.testing.assert_array_equal(joints.velocities, -q)
    np.testing.assert_allclose(joints.stamps, (T0 + np.arange(5) * DT - 1_000) / 1e9)
    assert ee.positions.shape == (5, 3) and ee.quats.shape == (5, 4)
    np.testing.assert_array_equal(ee.positions, q)
    np.testing.assert_array_equal(ee.quats[:, 3], 1.0)


def test_reorders_joint_names(tmp_path: Path) -> None:
    orders = [NAMES, ("wrist", "shoulder", "elbow"), ("elbow", "wrist", "shoulder"), NAMES]
    q = write_episode(tmp_path / "bag", orders)
    joints = read_trajectory(tmp_path / "bag").joints
    assert joints.names == NAMES
    np.testing.assert_array_equal(joints.positions, q)
    np.testing.assert_array_equal(joints.velocities, -q)


def test_different_joint_sets_name_both(tmp_path: Path) -> None:
    write_episode(tmp_path / "bag", [NAMES, ("shoulder", "elbow", "gripper")])
    with pytest.raises(BagError, match=r"'wrist'\].*then \['shoulder', 'elbow', 'gripper'\]"):
        read_trajectory(tmp_path / "bag")


def test_missing_topic_lists_topics(tmp_path: Path) -> None:
    write_episode(tmp_path / "bag", [NAMES] * 2, poses=False)
    with pytest.raises(BagError, match=r"bag: has no topic /ee_pose; its topics are: /joint_"):
        read_trajectory(tmp_path / "bag")
    assert read_trajectory(tmp_path / "bag", ee_topic=None).ee is None


def test_topic_of_the_wrong_type(tmp_path: Path) -> None:
    write_episode(tmp_path / "bag", [NAMES] * 2)
    with pytest.raises(BagError, match="/ee_pose carries geometry_msgs/msg/PoseStamped, not"):
        read_trajectory(tmp_path / "bag", joint_topic="/ee_pose", ee_topic=None)


def test_zero_header_stamps(tmp_path: Path) -> None:
    write_episode(tmp_path / "bag", [NAMES] * 3, header_stamps=False)
    with pytest.raises(BagError, match="zero header stamp; pass stamp_source='bag'"):
        read_trajectory(tmp_path / "bag")
    trajectory = read_trajectory(tmp_path / "bag", stamp_source="bag")
    np.testing.assert_allclose(trajectory.joints.stamps, (T0 + np.arange(3) * DT) / 1e9)


def test_empty_topic(tmp_path: Path) -> None:
    write_episode(tmp_path / "bag", [])
    with pytest.raises(BagError, match="/joint_states has no messages"):
        read_trajectory(tmp_path / "bag")
