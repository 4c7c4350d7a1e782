"""End-effector poses from Odometry, PoseWithCovarianceStamped, TransformStamped and /tf chains.

Each is read back from a bag and through `daptq drift`; so is `daptq drift --locked-joints`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from drift_episodes import write_episode
from scipy.spatial.transform import Rotation

from daptq_ros.bags import (
    BagReader,
    BagWriter,
    joint_state_msg,
    pose_stamped_to_numpy,
    read_trajectory,
    time_to_ns,
)
from daptq_ros.bags.convert import header
from daptq_ros.cli import main
from daptq_ros.errors import BagError

T0 = 1_700_000_000_000_000_000
DT = 20_000_000
HEADER_LAG = 1_000  # ns: header stamps are this much before the record times
OFFSET = 0.02  # m


def point(types: dict[str, Any], xyz: Sequence[float], name: str = "Point") -> Any:
    x, y, z = map(float, xyz)
    return types[f"geometry_msgs/msg/{name}"](x=x, y=y, z=z)


def quaternion(types: dict[str, Any], xyzw: Sequence[float]) -> Any:
    x, y, z, w = map(float, xyzw)
    return types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)


def pose(types: dict[str, Any], xyz: Sequence[float], xyzw: Sequence[float]) -> Any:
    return types["geometry_msgs/msg/Pose"](
        position=point(types, xyz), orientation=quaternion(types, xyzw)
    )


def pose_with_covariance(types: dict[str, Any], xyz: Sequence[float], xyzw: Sequence[float]) -> Any:
    covariance = np.eye(6).reshape(-1) * 1e-3
    return types["geometry_msgs/msg/PoseWithCovariance"](
        pose=pose(types, xyz, xyzw), covariance=covariance
    )


def odometry(types: dict[str, Any], stamp: int, xyz: Sequence[float], xyzw: Sequence[float]) -> Any:
    zero = point(types, (0, 0, 0), "Vector3")
    twist = types["geometry_msgs/msg/Twist"](linear=zero, angular=zero)
    return types["nav_msgs/msg/Odometry"](
        header=header(types, stamp, "odom"),
        child_frame_id="tool",
        pose=pose_with_covariance(types, xyz, xyzw),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
    )


def pose_covariance_stamped(
    types: dict[str, Any], stamp: int, xyz: Sequence[float], xyzw: Sequence[float]
) -> Any:
    return types["geometry_msgs/msg/PoseWithCovarianceStamped"](
        header=header(types, stamp, "world"), pose=pose_with_covariance(types, xyz, xyzw)
    )


def transform_stamped(
    types: dict[str, Any],
    stamp: int,
    xyz: Sequence[float],
    xyzw: Sequence[float],
    parent: str = "world",
    child: str = "tool",
) -> Any:
    transform = types["geometry_msgs/msg/Transform"](
        translation=point(types, xyz, "Vector3"), rotation=quaternion(types, xyzw)
    )
    return types["geometry_msgs/msg/TransformStamped"](
        header=header(types, stamp, parent), child_frame_id=child, transform=transform
    )


def tf_message(types: dict[str, Any], *transforms: Any) -> Any:
    return types["tf2_msgs/msg/TFMessage"](transforms=list(transforms))


PoseBuilder = Callable[[dict[str, Any], int, Sequence[float], Sequence[float]], Any]
POSE_MESSAGES: dict[str, PoseBuilder] = {
    "nav_msgs/msg/Odometry": odometry,
    "geometry_msgs/msg/PoseWithCovarianceStamped": pose_covariance_stamped,
    "geometry_msgs/msg/TransformStamped": transform_stamped,
}


def known_poses(n: int, seed: int = 0) -> tuple[np.ndarray, Rotation]:
    """n positions [n, 3] and n rotations, random but fixed."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (n, 3)), Rotation.random(n, random_state=seed)


def write_joints(writer: BagWriter, stamps: Sequence[int]) -> None:
    writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    for i, stamp in enumerate(stamps):
        msg = joint_state_msg(writer.types, stamp - HEADER_LAG, ["j1"], [float(i)])
        writer.write("/joint_states", msg, stamp)


def assert_same_rotations(quats: np.ndarray, expected: Rotation) -> None:
    """Quaternions xyzw equal to `expected` up to their sign (q and -q are one rotation)."""
    error = Rotation.from_quat(quats) * expected.inv()
    np.testing.assert_allclose(error.magnitude(), 0.0, atol=1e-9)


@pytest.mark.parametrize("msgtype", list(POSE_MESSAGES))
def test_reads_poses_of_each_message_type(tmp_path: Path, msgtype: str) -> None:
    positions, rotations = known_poses(5)
    stamps = [T0 + i * DT for i in range(5)]
    with BagWriter(tmp_path / "bag") as writer:
        write_joints(writer, stamps)
        writer.add_topic("/ee", msgtype)
        for i, stamp in enumerate(stamps):
            msg = POSE_MESSAGES[msgtype](
                writer.types, stamp - HEADER_LAG, positions[i], rotations[i].as_quat()
            )
            writer.write("/ee", msg, stamp)
    ee = read_trajectory(tmp_path / "bag", ee_topic="/ee").ee
    assert ee is not None
    np.testing.assert_allclose(ee.stamps, (np.array(stamps) - HEADER_LAG) / 1e9)
    np.testing.assert_allclose(ee.positions, positions)
    assert_same_rotations(ee.quats, rotations)


def test_tf_chain_of_two_hops(tmp_path: Path) -> None:
    """world -> base_link -> tool, each hop in its own TFMessage at a shared stamp, plus noise."""
    hop1, turn1 = known_poses(6, seed=1)
    hop2, turn2 = known_poses(6, seed=2)
    stamps = [T0 + i * DT for i in range(6)]
    with BagWriter(tmp_path / "bag") as writer:
        write_joints(writer, stamps)
        writer.add_topic("/tf", "tf2_msgs/msg/TFMessage")
        types = writer.types
        for i, stamp in enumerate(stamps):
            at = stamp - HEADER_LAG
            first = transform_stamped(types, at, hop1[i], turn1[i].as_quat(), "world", "base_link")
            camera = transform_stamped(types, at, (1, 2, 3), (0, 0, 0, 1), "world", "camera")
            second = transform_stamped(types, at, hop2[i], turn2[i].as_quat(), "base_link", "tool")
            writer.write("/tf", tf_message(types, first, camera), stamp)
            writer.write("/tf", tf_message(types, second), stamp + 1)
    ee = read_trajectory(tmp_path / "bag", ee_topic="/tf", tf_chain=("world", "tool")).ee
    assert ee is not None
    np.testing.assert_allclose(ee.stamps, (np.array(stamps) - HEADER_LAG) / 1e9)
    np.testing.assert_allclose(ee.positions, hop1 + turn1.apply(hop2), atol=1e-12)
    assert_same_rotations(ee.quats, turn1 * turn2)
    assert (ee.quats[:, 3] >= 0).all()


def test_tf_chain_through_a_common_parent_and_tf_static(tmp_path: Path) -> None:
    """camera <- tool where camera hangs off world on /tf_static and tool moves on /tf."""
    moves, turns = known_poses(4, seed=3)
    camera_at, camera_turn = np.array([0.5, -0.2, 1.0]), Rotation.from_euler("zyx", [0.3, 0.2, 1])
    stamps = [T0 + i * DT for i in range(4)]
    with BagWriter(tmp_path / "bag") as writer:
        write_joints(writer, stamps)
        writer.add_topic("/tf", "tf2_msgs/msg/TFMessage")
        writer.add_topic("/tf_static", "tf2_msgs/msg/TFMessage")
        types = writer.types
        for i, stamp in enumerate(stamps):
            hop = transform_stamped(types, stamp, moves[i], turns[i].as_quat(), "/world", "tool")
            writer.write("/tf", tf_message(types, hop), stamp)
        static = transform_stamped(types, T0, camera_at, camera_turn.as_quat(), "world", "camera")
        writer.write("/tf_static", tf_message(types, static), stamps[-1] + 1)
    ee = read_trajectory(tmp_path / "bag", ee_topic="/tf", tf_chain=("camera", "tool")).ee
    assert ee is not None
    np.testing.assert_allclose(ee.positions, camera_turn.inv().apply(moves - camera_at))
    assert_same_rotations(ee.quats, camera_turn.inv() * turns)


def write_tf_bag(path: Path, *edges: tuple[str, str]) -> None:
    """Two stamps of /tf with identity transforms along `edges` (parent, child)."""
    with BagWriter(path) as writer:
        write_joints(writer, [T0, T0 + DT])
        writer.add_topic("/tf", "tf2_msgs/msg/TFMessage")
        for stamp in (T0, T0 + DT):
            hops = [
                transform_stamped(writer.types, stamp, (0, 0, 0), (0, 0, 0, 1), *e) for e in edges
            ]
            writer.write("/tf", tf_message(writer.types, *hops), stamp)


def test_tf_chain_that_does_not_connect_names_the_frames(tmp_path: Path) -> None:
    write_tf_bag(tmp_path / "bag", ("world", "base_link"), ("odom", "tool"))
    with pytest.raises(
        BagError,
        match=r"/tf: no chain of transforms joins world to tool; the frames seen are: "
        r"base_link, odom, tool, world; pass --tf-chain",
    ):
        read_trajectory(tmp_path / "bag", ee_topic="/tf", tf_chain=("world", "tool"))
    with pytest.raises(BagError, match=r"no transform names the frame gripper; the frames seen"):
        read_trajectory(tmp_path / "bag", ee_topic="/tf", tf_chain=("world", "gripper"))


def test_tf_topic_needs_a_chain_and_a_chain_needs_tf(tmp_path: Path) -> None:
    write_tf_bag(tmp_path / "bag", ("world", "tool"))
    with pytest.raises(BagError, match=r"/tf carries tf2_msgs/msg/TFMessage; .*--tf-chain BASE"):
        read_trajectory(tmp_path / "bag", ee_topic="/tf")
    with pytest.raises(BagError, match=r"/joint_states carries sensor_msgs/msg/JointState, not an"):
        read_trajectory(tmp_path / "bag", ee_topic="/joint_states")


# `daptq drift` on the synthetic Panda episodes of drift_episodes, their /ee_pose rewritten.


def rewrite_poses(source: Path, target: Path, msgtype: str) -> None:
    """Copy a drift episode, its /ee_pose as `msgtype` (on /tf, as two hops, for TFMessage)."""
    mount = (np.array([0.1, 0.0, 0.3]), Rotation.from_euler("z", 0.4))
    with BagReader(source) as reader, BagWriter(target) as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        topic = "/tf" if msgtype == "tf2_msgs/msg/TFMessage" else "/ee_pose"
        writer.add_topic(topic, msgtype)
        if topic == "/tf":
            writer.add_topic("/tf_static", msgtype)
            static = transform_stamped(
                writer.types, T0, mount[0], mount[1].as_quat(), "world", "base"
            )
            writer.write("/tf_static", tf_message(writer.types, static), T0)
        for message in reader.messages(["/joint_states", "/ee_pose"]):
            if message.topic == "/joint_states":
                writer.write("/joint_states", message.msg, message.stamp_ns)
                continue
            _, xyz, xyzw = pose_stamped_to_numpy(message.msg)
            ns = time_to_ns(message.msg.header.stamp)
            if topic == "/tf":
                hop = transform_stamped(writer.types, ns, xyz, xyzw, "base", "tool")
                msg = tf_message(writer.types, hop)
            else:
                msg = POSE_MESSAGES[msgtype](writer.types, ns, xyz, xyzw)
            writer.write(topic, msg, message.stamp_ns)


@pytest.mark.parametrize("msgtype", [*POSE_MESSAGES, "tf2_msgs/msg/TFMessage"])
def test_cli_reads_each_pose_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], msgtype: str
) -> None:
    write_episode(tmp_path / "ref_src", rate_hz=50.0)
    write_episode(tmp_path / "run_src", rate_hz=50.0, offset=(0.0, 0.0, OFFSET))
    rewrite_poses(tmp_path / "ref_src", tmp_path / "ref", msgtype)
    rewrite_poses(tmp_path / "run_src", tmp_path / "run", msgtype)
    chain = ["--tf-chain", "world", "tool"] if msgtype.startswith("tf2") else []
    argv = ["drift", "--run", str(tmp_path / "run"), "--reference", str(tmp_path / "ref")]
    assert main([*argv, *chain, "--out", str(tmp_path / "out"), "--json"]) == 0
    (episode,) = json.loads(capsys.readouterr().out)["episodes"]
    expected = "topic /tf (world -> tool)" if chain else "topic /ee_pose"
    assert episode["run_ee_source"] == episode["reference_ee_source"] == expected
    assert episode["metrics"]["ee_position_rmse"] == pytest.approx(OFFSET, rel=1e-6)
    assert episode["metrics"]["ee_rotation_rmse"] == pytest.approx(0.0, abs=1e-6)


def test_cli_tf_chain_that_does_not_connect(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    write_tf_bag(tmp_path / "ref", ("world", "base_link"))
    argv = ["drift", "--run", str(tmp_path / "ref"), "--reference", str(tmp_path / "ref")]
    assert main([*argv, "--tf-chain", "world", "tool", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no transform names the frame tool; the frames seen are: base_link, world" in err


def panda_urdf_or_skip() -> Path:
    pytest.importorskip("pinocchio")
    from daptq_ros.drift.kinematics import arm_urdf, available_arms

    if "panda" not in available_arms():
        pytest.skip("example-robot-data is not installed")
    return arm_urdf("panda")


def test_cli_locked_joints_of_a_full_arm_urdf(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The panda URDF has two finger joints; the bags name the 7 arm joints only."""
    urdf = panda_urdf_or_skip()
    write_episode(tmp_path / "ref", poses=False)
    write_episode(tmp_path / "run", rate_hz=50.0, lag=0.2, poses=False)
    argv = ["drift", "--run", str(tmp_path / "run"), "--reference", str(tmp_path / "ref")]
    argv += ["--urdf", str(urdf), "--ee-frame", "panda_hand_tcp", "--dtw-window", "0.5"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "lack the model's joints ['panda_finger_joint1'" in capsys.readouterr().err
    fingers = ["--locked-joints", "panda_finger_joint1", "panda_finger_joint2"]
    assert main([*argv, *fingers, "--out", str(tmp_path / "b"), "--json"]) == 0
    (episode,) = json.loads(capsys.readouterr().out)["episodes"]
    assert episode["run_ee_source"] == f"fk panda_hand_tcp ({urdf})"
    assert episode["metrics"]["dtw_space"] == "ee_position"
    assert episode["metrics"]["dtw_lag"] == pytest.approx(0.2, rel=0.05)


def test_cli_locked_joints_needs_a_urdf(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["drift", "--run", "r", "--reference", "f", "--locked-joints", "panda_finger_joint1"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "daptq drift: error: --locked-joints: only used for forward kinematics; pass --urdf too"
    )
