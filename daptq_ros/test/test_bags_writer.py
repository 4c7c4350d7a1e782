"""Writing rosbag2 files and reading them back, in both storages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daptq_ros.bags import (
    BagReader,
    BagWriter,
    bag_info,
    joint_state_msg,
    joint_state_to_numpy,
    ns_to_time,
    pose_stamped_msg,
    pose_stamped_to_numpy,
    time_to_ns,
)
from daptq_ros.bags.typestore import interface_types
from daptq_ros.errors import BagError

T0 = 1_700_000_000_000_000_000
NAMES = ["j1", "j2", "j3"]


@pytest.fixture(params=["mcap", "sqlite3"])
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


def drift_report(types: dict, stamp_ns: int) -> object:
    cls = types["daptq_ros_interfaces/msg/DriftReport"]
    header = types["std_msgs/msg/Header"](stamp=ns_to_time(types, stamp_ns), frame_id="world")
    return cls(
        header=header,
        window_start=ns_to_time(types, stamp_ns - 10**9),
        window_end=ns_to_time(types, stamp_ns),
        samples=100,
        joint_names=NAMES,
        joint_rms_error=np.array([0.1, 0.2, 0.3]),
        joint_max_error=np.array([0.2, 0.4, 0.6]),
        joint_final_error=np.array([0.0, 0.1, 0.2]),
        ee_position_rmse=0.01,
        ee_position_max_error=0.02,
        ee_position_final_error=0.005,
        ee_rotation_rmse=0.03,
        cumulative_drift=0.5,
        drift_growth_rate=0.001,
        dtw_distance=0.004,
        dtw_lag=0.05,
        level=cls.LEVEL_WARN,
        reason="ee drift above 1 cm",
        bit_config="w4a8",
    )


def test_round_trip(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "episode"
    positions = np.arange(12, dtype=float).reshape(4, 3) / 10
    with BagWriter(path, storage=storage) as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        writer.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped")
        writer.add_topic("/drift", "daptq_ros_interfaces/msg/DriftReport")
        writer.set_custom_data("task", "reach-v3")
        for i, q in enumerate(positions):
            stamp = T0 + i * 10_000_000
            writer.write("/joint_states", joint_state_msg(writer.types, stamp, NAMES, q, -q), stamp)
            pose = pose_stamped_msg(writer.types, stamp, q, [0, 0, np.sin(i), np.cos(i)], "world")
            writer.write("/ee_pose", pose, stamp)
        writer.write("/drift", drift_report(writer.types, T0 + 10**9), T0 + 10**9)

    info = bag_info(path)
    assert info.storage == storage
    assert {t.name: t.count for t in info.topics} == {
        "/drift": 1,
        "/ee_pose": 4,
        "/joint_states": 4,
    }
    assert info.custom_data == {"task": "reach-v3"}
    assert info.start_ns == T0 and info.end_ns == T0 + 10**9

    with BagReader(path) as reader:
        messages = list(reader.messages())
    joints = [joint_state_to_numpy(m.msg) for m in messages if m.topic == "/joint_states"]
    np.testing.assert_array_equal([j.positions for j in joints], positions)
    np.testing.assert_array_equal([j.velocities for j in joints], -positions)
    assert joints[2].names == tuple(NAMES)
    assert joints[2].stamp == pytest.approx((T0 + 20_000_000) / 1e9)
    poses = [pose_stamped_to_numpy(m.msg) for m in messages if m.topic == "/ee_pose"]
    np.testing.assert_array_equal(poses[3].position, positions[3])
    np.testing.assert_allclose(poses[3].quat_xyzw, [0, 0, np.sin(3), np.cos(3)])
    (report,) = [m.msg for m in messages if m.topic == "/drift"]
    assert report.__msgtype__ == "daptq_ros_interfaces/msg/DriftReport"
    assert report.level == report.LEVEL_WARN == 1
    assert report.reason == "ee drift above 1 cm" and report.bit_config == "w4a8"
    assert list(report.joint_names) == NAMES
    np.testing.assert_array_equal(report.joint_max_error, [0.2, 0.4, 0.6])
    assert time_to_ns(report.window_start) == T0
    assert report.header.frame_id == "world"


def test_every_interface_message_is_registered(tmp_path: Path) -> None:
    writer = BagWriter(tmp_path / "bag")
    names = set(interface_types())
    assert "daptq_ros_interfaces/msg/DriftReport" in names
    assert names <= set(writer.types)


def test_bag_defines_its_own_types(
    tmp_path: Path, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bag"
    with BagWriter(path, storage=storage) as writer:
        writer.add_topic("/drift", "daptq_ros_interfaces/msg/DriftReport")
        writer.write("/drift", drift_report(writer.types, T0), T0)
    # A reader without daptq_ros_interfaces still decodes: the bag carries DriftReport's .msg.
    monkeypatch.setattr("daptq_ros.bags.typestore.interface_types", dict)
    with BagReader(path) as reader:
        (message,) = reader.messages(["/drift"])
    assert message.msg.bit_config == "w4a8"


def test_existing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="already exists"):
        BagWriter(tmp_path)


def test_compressed_mcap_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    positions = np.zeros((50, 3))
    with BagWriter(path, compress=True) as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        for i, q in enumerate(positions):
            writer.write("/joint_states", joint_state_msg(writer.types, T0 + i, NAMES, q), T0 + i)
    (mcap,) = path.glob("*.mcap")
    assert b"zstd" in mcap.read_bytes()
    with BagReader(path) as reader:
        assert len(list(reader.messages())) == 50


def test_sqlite3_cannot_be_compressed(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="only mcap storage can be compressed"):
        BagWriter(tmp_path / "bag", storage="sqlite3", compress=True)


def test_unknown_storage(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="unknown storage 'rosbag1'"):
        BagWriter(tmp_path / "bag", storage="rosbag1")  # type: ignore[arg-type]


def test_unknown_type(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "bag") as writer, pytest.raises(BagError, match="my_msgs/msg/X"):
        writer.add_topic("/x", "my_msgs/msg/X")


def test_topic_type_cannot_change(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_topic("/x", "std_msgs/msg/String")
        writer.add_topic("/x", "std_msgs/msg/String")
        with pytest.raises(BagError, match="was added as std_msgs/msg/String"):
            writer.add_topic("/x", "std_msgs/msg/Int32")


def test_write_needs_add_topic(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "bag") as writer, pytest.raises(BagError, match="add_topic first"):
        writer.write("/x", object(), T0)


def test_message_of_the_wrong_type(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        pose = pose_stamped_msg(writer.types, T0, [0, 0, 0], [0, 0, 0, 1])
        with pytest.raises(BagError, match="does not fit sensor_msgs/msg/JointState"):
            writer.write("/joint_states", pose, T0)


def test_failed_episode_leaves_no_metadata(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError), BagWriter(path) as writer:
        writer.add_topic("/x", "std_msgs/msg/String")
        raise RuntimeError("episode crashed")
    with pytest.raises(BagError, match=r"no metadata\.yaml"):
        bag_info(path)
