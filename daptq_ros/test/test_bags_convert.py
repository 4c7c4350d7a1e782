"""Message <-> numpy converters: times, JointState, PoseStamped, rosbags and rclpy-like classes."""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daptq_ros.bags import (
    joint_state_msg,
    joint_state_to_numpy,
    make_typestore,
    ns_to_time,
    pose_stamped_msg,
    pose_stamped_to_numpy,
    sec_to_ns,
    sec_to_time,
    time_to_ns,
    time_to_sec,
)
from daptq_ros.errors import BagError

TYPES = make_typestore().types


@given(st.integers(min_value=-(2**40), max_value=2**62))
def test_time_round_trips_nanoseconds(ns: int) -> None:
    stamp = ns_to_time(TYPES, ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert time_to_ns(stamp) == ns


def test_time_seconds() -> None:
    stamp = sec_to_time(TYPES, 12.25)
    assert (stamp.sec, stamp.nanosec) == (12, 250_000_000)
    assert time_to_sec(stamp) == 12.25
    assert sec_to_ns(1.5e-9) == 2
    negative = ns_to_time(TYPES, -1)
    assert (negative.sec, negative.nanosec) == (-1, 999_999_999)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=8))
def test_joint_state_round_trip(positions: list[float]) -> None:
    names = [f"joint{i}" for i in range(len(positions))]
    msg = joint_state_msg(TYPES, 5_000_000_001, names, positions)
    sample = joint_state_to_numpy(msg)
    assert sample.names == tuple(names)
    np.testing.assert_array_equal(sample.positions, positions)
    assert np.isnan(sample.velocities).all() and sample.velocities.shape == (len(names),)
    assert sample.stamp == pytest.approx(5.000000001)


def test_joint_state_length_mismatch() -> None:
    with pytest.raises(BagError, match="velocity: 1 values for 2 joints"):
        joint_state_msg(TYPES, 0, ["a", "b"], [1.0, 2.0], velocities=[1.0])
    msg = joint_state_msg(TYPES, 0, ["a", "b"], [1.0, 2.0])
    msg.position = np.array([1.0])
    with pytest.raises(BagError, match="2 names but 1 positions"):
        joint_state_to_numpy(msg)


def test_pose_round_trip() -> None:
    msg = pose_stamped_msg(TYPES, 2_500_000_000, [1, 2, 3], [0, 0, 0.6, 0.8], "base")
    sample = pose_stamped_to_numpy(msg)
    assert sample.stamp == 2.5 and msg.header.frame_id == "base"
    np.testing.assert_array_equal(sample.position, [1, 2, 3])
    np.testing.assert_array_equal(sample.quat_xyzw, [0, 0, 0.6, 0.8])
    with pytest.raises(BagError, match="xyzw"):
        pose_stamped_msg(TYPES, 0, [1, 2, 3], [0, 0, 1])


def test_missing_type_is_named() -> None:
    with pytest.raises(BagError, match="sensor_msgs/msg/JointState is not available"):
        joint_state_msg({}, 0, ["a"], [0.0])


# Stand-ins for rosidl-generated (rclpy) classes: keyword construction with defaults, and a
# float64[] field that rejects numpy arrays as rclpy's setters do.
@dataclass
class FakeTime:
    sec: int = 0
    nanosec: int = 0


@dataclass
class FakeHeader:
    stamp: FakeTime = field(default_factory=FakeTime)
    frame_id: str = ""


@dataclass
class FakeJointState:
    header: FakeHeader = field(default_factory=FakeHeader)
    name: list[str] = field(default_factory=list)
    position: Any = None
    velocity: Any = None
    effort: Any = None

    def __post_init__(self) -> None:
        for value in (self.position, self.velocity, self.effort):
            assert isinstance(value, array.array) and value.typecode == "d"

    @classmethod
    def get_fields_and_field_types(cls) -> dict[str, str]:
        return {"name": "sequence<string>", "position": "sequence<double>"}


FAKE_RCLPY = {
    "builtin_interfaces/msg/Time": FakeTime,
    "std_msgs/msg/Header": FakeHeader,
    "sensor_msgs/msg/JointState": FakeJointState,
}


def test_rclpy_like_classes_get_array_sequences() -> None:
    msg = joint_state_msg(FAKE_RCLPY.__getitem__, 3_000_000_007, ["a", "b"], [0.5, -0.5])
    assert msg.position == array.array("d", [0.5, -0.5])
    assert msg.velocity == array.array("d")
    sample = joint_state_to_numpy(msg)
    assert sample.stamp == pytest.approx(3.000000007)
    np.testing.assert_array_equal(sample.positions, [0.5, -0.5])
