"""Read a bag's joint trajectory and end-effector pose stream into numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import joint_state_to_numpy, pose_stamped_to_numpy
from daptq_ros.bags.reader import BagMessage, BagReader
from daptq_ros.bags.typestore import Distro
from daptq_ros.errors import BagError

JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"

StampSource = Literal["header", "bag"]


@dataclass(frozen=True)
class JointTrajectory:
    """Joint samples in the joint order of the first message: stamps [N], positions [N, J]."""

    stamps: NDArray[np.float64]
    names: tuple[str, ...]
    positions: NDArray[np.float64]
    velocities: NDArray[np.float64]  # [N, J], NaN where a message carried no velocities


@dataclass(frozen=True)
class PoseTrajectory:
    """End-effector poses: stamps [M], positions [M, 3], quaternions xyzw [M, 4]."""

    stamps: NDArray[np.float64]
    positions: NDArray[np.float64]
    quats: NDArray[np.float64]


@dataclass(frozen=True)
class Trajectory:
    """What one bag recorded of an arm's motion (ee is None when no pose topic was asked for)."""

    bag: Path
    joints: JointTrajectory
    ee: PoseTrajectory | None


class _JointCollector:
    """Accumulates JointState messages, reordering each into the first message's joint order."""

    def __init__(self, bag: Path, topic: str, use_header: bool) -> None:
        self.bag, self.topic, self.use_header = bag, topic, use_header
        self.names: tuple[str, ...] | None = None
        self.orders: dict[tuple[str, ...], list[int]] = {}
        self.stamps: list[float] = []
        self.positions: list[NDArray[np.float64]] = []
        self.velocities: list[NDArray[np.float64]] = []

    def add(self, message: BagMessage) -> None:
        try:
            sample = joint_state_to_numpy(message.msg)
        except BagError as error:
            raise BagError(f"{self.bag}: {self.topic} at {message.stamp_ns} ns: {error}") from None
        if self.names is None:
            self.names = sample.names
            self._check_unique(sample.names)
        order = self.orders.get(sample.names)
        if order is None:
            order = self._order(sample.names, message.stamp_ns)
            self.orders[sample.names] = order
        self.stamps.append(sample.stamp if self.use_header else message.stamp_ns / 1e9)
        self.positions.append(sample.positions[order])
        self.velocities.append(sample.velocities[order])

    def _check_unique(self, names: tuple[str, ...]) -> None:
        if len(set(names)) != len(names):
            raise BagError(
                f"{self.bag}: {self.topic} names a joint twice ({list(names)}); fix the publisher"
            )

    def _order(self, names: tuple[str, ...], stamp_ns: int) -> list[int]:
        """Indices that put a message's columns into the reference joint order."""
        assert self.names is not None
        self._check_unique(names)
        if set(names) != set(self.names):
            raise BagError(
                f"{self.bag}: {self.topic} changes its joints at {stamp_ns} ns: first "
                f"{list(self.names)}, then {list(names)}; record one arm per topic"
            )
        index = {name: i for i, name in enumerate(names)}
        return [index[name] for name in self.names]

    def result(self) -> JointTrajectory:
        if self.names is None:
            raise BagError(f"{self.bag}: {self.topic} has no messages; record the arm's joints")
        return JointTrajectory(
            _stamps(self.bag, self.topic, self.stamps, self.use_header),
            self.names,
            np.stack(self.positions),
            np.stack(self.velocities),
        )


class _PoseCollector:
    """Accumulates PoseStamped messages."""

    def __init__(self, bag: Path, topic: str, use_header: bool) -> None:
        self.bag, self.topic, self.use_header = bag, topic, use_header
        self.stamps: list[float] = []
        self.positions: list[NDArray[np.float64]] = []
        self.quats: list[NDArray[np.float64]] = []

    def add(self, message: BagMessage) -> None:
        sample = pose_stamped_to_numpy(message.msg)
        self.stamps.append(sample.stamp if self.use_header else message.stamp_ns / 1e9)
        self.positions.append(sample.position)
        self.quats.append(sample.quat_xyzw)

    def result(self) -> PoseTrajectory:
        if not self.stamps:
            raise BagError(f"{self.bag}: {self.topic} has no messages; record the pose topic")
        stamps = _stamps(self.bag, self.topic, self.stamps, self.use_header)
        return PoseTrajectory(stamps, np.stack(self.positions), np.stack(self.quats))


def read_trajectory(
    path: str | Path,
    joint_topic: str = "/joint_states",
    ee_topic: str | None = "/ee_pose",
    *,
    stamp_source: StampSource = "header",
    distro: Distro = "humble",
) -> Trajectory:
    """Read joint states and (unless `ee_topic` is None) end-effector poses in one pass.

    `stamp_source` picks the header stamps (when the sample was measured) or the bag's record
    times; stamps are float seconds since the epoch.
    """
    with BagReader(path, distro=distro) as reader:
        info = reader.info
        expected = {joint_topic: JOINT_STATE}
        if ee_topic is not None:
            expected[ee_topic] = POSE_STAMPED
        for topic, msgtype in expected.items():
            have = info.topic(topic).msgtype
            if have != msgtype:
                raise BagError(
                    f"{reader.path}: topic {topic} carries {have}, not {msgtype}; "
                    "pass the topic that does"
                )
        use_header = stamp_source == "header"
        joints = _JointCollector(reader.path, joint_topic, use_header)
        poses = None if ee_topic is None else _PoseCollector(reader.path, ee_topic, use_header)
        collectors: dict[str, _JointCollector | _PoseCollector] = {joint_topic: joints}
        if poses is not None:
            collectors[poses.topic] = poses
        for message in reader.messages(collectors):
            collectors[message.topic].add(message)
        return Trajectory(
            reader.path, joints.result(), poses.result() if poses is not None else None
        )


def _stamps(bag: Path, topic: str, stamps: list[float], use_header: bool) -> NDArray[np.float64]:
    """The stamps as an array; publishers that leave header.stamp unset give zeros: refuse."""
    array = np.array(stamps, dtype=np.float64)
    if use_header and (zeros := int(np.count_nonzero(array == 0.0))):
        raise BagError(
            f"{bag}: {zeros} messages on {topic} have a zero header stamp; "
            "pass stamp_source='bag' (daptq drift --stamp-source bag) to use the record "
            "times instead"
        )
    return array
