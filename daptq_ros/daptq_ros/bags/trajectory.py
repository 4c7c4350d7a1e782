"""Read a bag's joint trajectory and end-effector pose stream into numpy arrays.

End-effector poses come from geometry_msgs/PoseStamped, PoseWithCovarianceStamped and
TransformStamped, nav_msgs/Odometry, or a chain of transforms on tf2_msgs/TFMessage (/tf).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import (
    PoseSample,
    joint_state_to_numpy,
    pose_stamped_to_numpy,
    time_to_sec,
)
from daptq_ros.bags.reader import BagMessage, BagReader
from daptq_ros.bags.tf_buffer import TfBuffer, frame_id
from daptq_ros.bags.typestore import Distro
from daptq_ros.errors import BagError

JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_WITH_COVARIANCE = "geometry_msgs/msg/PoseWithCovarianceStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"

StampSource = Literal["header", "bag"]
TfChain = tuple[str, str]  # (base frame, tool frame)


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


def _pose_sample(stamp: Any, position: Any, orientation: Any) -> PoseSample:
    """A header stamp, a Point (or Vector3) and a Quaternion as a PoseSample."""
    return PoseSample(
        time_to_sec(stamp),
        np.array([position.x, position.y, position.z], dtype=np.float64),
        np.array([orientation.x, orientation.y, orientation.z, orientation.w], dtype=np.float64),
    )


def _covariance_pose_to_numpy(msg: Any) -> PoseSample:
    """PoseWithCovarianceStamped or Odometry: the pose in pose.pose, the covariance dropped."""
    pose = msg.pose.pose
    return _pose_sample(msg.header.stamp, pose.position, pose.orientation)


def _transform_stamped_to_numpy(msg: Any) -> PoseSample:
    """TransformStamped: the child frame's pose in the header's frame."""
    return _pose_sample(msg.header.stamp, msg.transform.translation, msg.transform.rotation)


# Message types that carry one end-effector pose each, and how to read it.
POSE_READERS: dict[str, Callable[[Any], PoseSample]] = {
    POSE_STAMPED: pose_stamped_to_numpy,
    POSE_WITH_COVARIANCE: _covariance_pose_to_numpy,
    ODOMETRY: _covariance_pose_to_numpy,
    TRANSFORM_STAMPED: _transform_stamped_to_numpy,
}
POSE_TYPES = (*POSE_READERS, TF_MESSAGE)


class _PoseCollector:
    """Accumulates the poses of a topic of one of the POSE_READERS types."""

    def __init__(
        self, bag: Path, topic: str, use_header: bool, read: Callable[[Any], PoseSample]
    ) -> None:
        self.bag, self.topic, self.use_header, self.read = bag, topic, use_header, read
        self.stamps: list[float] = []
        self.positions: list[NDArray[np.float64]] = []
        self.quats: list[NDArray[np.float64]] = []

    def add(self, message: BagMessage) -> None:
        sample = self.read(message.msg)
        self.stamps.append(sample.stamp if self.use_header else message.stamp_ns / 1e9)
        self.positions.append(sample.position)
        self.quats.append(sample.quat_xyzw)

    def result(self) -> PoseTrajectory:
        if not self.stamps:
            raise BagError(f"{self.bag}: {self.topic} has no messages; record the pose topic")
        stamps = _stamps(self.bag, self.topic, self.stamps, self.use_header)
        return PoseTrajectory(stamps, np.stack(self.positions), np.stack(self.quats))


class _TfCollector:
    """The pose of a tool frame in a base frame, from /tf (and /tf_static) through a TfBuffer.

    Every transform goes into the buffer; at the end the chain is looked up, as tf2 would, at
    the header stamps of its busiest moving edge: each edge interpolated at that stamp, stamps
    some edge does not cover dropped. Static transforms come first, with `add_static`.
    """

    def __init__(self, bag: Path, topic: str, use_header: bool, chain: TfChain) -> None:
        if not use_header:
            raise BagError(
                f"{bag}: {topic}: a tf chain is looked up at the transforms' header stamps, as "
                "tf2 does; drop --stamp-source bag (stamp_source='bag') for a tf chain"
            )
        self.bag, self.topic = bag, topic
        self.base, self.tool = (frame_id(frame) for frame in chain)
        self.buffer = TfBuffer(f"{bag}: {topic}")
        self.static_topic: str | None = None

    def add_static(self, message: BagMessage) -> None:
        """Add the (time-independent) transforms of a /tf_static message."""
        self.static_topic = message.topic
        self.buffer.where = f"{self.bag}: {self.topic} and {message.topic}"
        self._add(message, static=True)

    def add(self, message: BagMessage) -> None:
        self._add(message, static=False)

    def _add(self, message: BagMessage, static: bool) -> None:
        for transform in message.msg.transforms:
            sample = _transform_stamped_to_numpy(transform)
            self.buffer.add(
                transform.header.frame_id,
                transform.child_frame_id,
                sample.stamp,
                sample.position,
                sample.quat_xyzw,
                static,
            )

    def result(self) -> PoseTrajectory:
        poses = self.buffer.lookup(self.base, self.tool)
        if len(poses.stamps) == 0:
            raise BagError(
                f"{self.buffer.where}: the transforms joining {self.base} to {self.tool} never "
                "cover the same time; record them over the same span"
            )
        stamps = _stamps(self.bag, self.topic, list(poses.stamps), True)
        return PoseTrajectory(stamps, poses.positions, poses.quats)


def read_trajectory(
    path: str | Path,
    joint_topic: str = "/joint_states",
    ee_topic: str | None = "/ee_pose",
    *,
    stamp_source: StampSource = "header",
    distro: Distro = "humble",
    tf_chain: TfChain | None = None,
) -> Trajectory:
    """Read joint states and (unless `ee_topic` is None) end-effector poses in one pass.

    `ee_topic` may carry any of POSE_TYPES; a tf2_msgs/TFMessage topic (/tf) needs `tf_chain`,
    the (base, tool) frames whose transform is the pose, and static transforms come from
    /tf_static when the bag has it (read in a pass of its own, first). `stamp_source` picks the
    header stamps (when the sample was measured) or the bag's record times; stamps are float
    seconds since the epoch.
    """
    with BagReader(path, distro=distro) as reader:
        have = reader.info.topic(joint_topic).msgtype
        if have != JOINT_STATE:
            raise BagError(
                f"{reader.path}: topic {joint_topic} carries {have}, not {JOINT_STATE}; "
                "pass the topic that does"
            )
        use_header = stamp_source == "header"
        joints = _JointCollector(reader.path, joint_topic, use_header)
        collectors: dict[str, _JointCollector | _PoseCollector | _TfCollector] = {
            joint_topic: joints
        }
        poses = None
        if ee_topic is not None:
            poses = _pose_collector(reader, ee_topic, use_header, tf_chain)
            collectors[ee_topic] = poses
        for message in reader.messages(collectors):
            collectors[message.topic].add(message)
        return Trajectory(
            reader.path, joints.result(), poses.result() if poses is not None else None
        )


@dataclass(frozen=True)
class PoseSource:
    """Where one side's poses are: a pose topic, or /tf (`topic`) followed along `tf_chain`."""

    topic: str
    tf_chain: TfChain | None = None

    def describe(self) -> str:
        chain = f" ({' -> '.join(self.tf_chain)})" if self.tf_chain else ""
        return f"{self.topic}{chain}"


def read_poses(
    path: str | Path,
    sources: dict[str, PoseSource],
    *,
    stamp_source: StampSource = "header",
    distro: Distro = "humble",
) -> dict[str, PoseTrajectory]:
    """The poses of each named source, from one pass over the bag (no joint states needed).

    Stamps are kept as recorded, duplicates and order included (the time association decides
    what to do with them).
    """
    with BagReader(path, distro=distro) as reader:
        use_header = stamp_source == "header"
        collectors = {
            name: _pose_collector(reader, source.topic, use_header, source.tf_chain)
            for name, source in sources.items()
        }
        by_topic: dict[str, list[_PoseCollector | _TfCollector]] = {}
        for name, source in sources.items():
            by_topic.setdefault(source.topic, []).append(collectors[name])
        for message in reader.messages(list(by_topic)):
            for collector in by_topic[message.topic]:
                collector.add(message)
        return {name: collector.result() for name, collector in collectors.items()}


def _pose_collector(
    reader: BagReader, topic: str, use_header: bool, tf_chain: TfChain | None
) -> _PoseCollector | _TfCollector:
    """The collector for the type `topic` carries; a tf chain reads /tf_static first."""
    have = reader.info.topic(topic).msgtype
    if tf_chain is not None and have != TF_MESSAGE:
        raise BagError(
            f"{reader.path}: topic {topic} carries {have}, not {TF_MESSAGE}; a tf chain is "
            "read from /tf: pass ee_topic='/tf' (daptq drift --ee-topic /tf), or no tf chain"
        )
    if have in POSE_READERS:
        return _PoseCollector(reader.path, topic, use_header, POSE_READERS[have])
    if have != TF_MESSAGE:
        raise BagError(
            f"{reader.path}: topic {topic} carries {have}, not an end-effector pose "
            f"({', '.join(POSE_TYPES)}); pass the topic that does"
        )
    if tf_chain is None:
        raise BagError(
            f"{reader.path}: topic {topic} carries {TF_MESSAGE}; name the frames to follow "
            "with --tf-chain BASE TOOL (tf_chain=(BASE, TOOL)), e.g. --tf-chain world tool0"
        )
    collector = _TfCollector(reader.path, topic, use_header, tf_chain)
    static = [t for t in reader.info.topics if t.name == TF_STATIC_TOPIC and t.name != topic]
    if static and static[0].msgtype == TF_MESSAGE:
        for message in reader.messages([TF_STATIC_TOPIC]):
            collector.add_static(message)
    return collector


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


POLICY_STATUS_TOPIC = "/policy_node/status"


def read_bit_configs(path: str | Path, topic: str = POLICY_STATUS_TOPIC) -> list[tuple[float, str]]:
    """(header stamp s, bit_config) of every PolicyStatus on `topic`; [] without that topic."""
    with BagReader(path) as reader:
        if all(t.name != topic for t in reader.info.topics):
            return []
        return [
            (time_to_sec(m.msg.header.stamp), str(m.msg.bit_config))
            for m in reader.messages([topic])
        ]
