"""The Episode contract: the topics and metadata of an episode bag, and its writer and reader.

An episode is what a real arm would record with `ros2 bag record` (MCAP), one rosbag2 per
episode. Per control step t (period `dt`), all stamped with the time of observation t:

- /camera/image_raw (sensor_msgs/Image, rgb8): the policy's image;
- /joint_states (sensor_msgs/JointState): the arm's joints and the gripper's finger joints;
- /ee_pose (geometry_msgs/PoseStamped, frame "world"): the end-effector (hand) pose;
- /action_executed (ActionChunk, horizon 1): the action actually applied to the arm at step t
  (after any noise injection or safety filtering).

Once per policy query: /action_chunk (ActionChunk), the chunk computed from the observation of its
header stamp; row i is meant for stamp + i * dt. A scripted expert sends one row per step: its
clean action, the demonstration's label. Once per episode: /instruction (std_msgs/String) at the
start and /episode_info (EpisodeInfo) at the end; the same metadata also goes to metadata.yaml's
custom_data under the META_* keys, so tools that never decode a message can group episodes.

The policy's state is not a topic of its own: it is built from /joint_states and /ee_pose as
the model's StateSpec says (bags.state): by default the embedded models' [x, y, z, gripper
opening], or the positions of named joints for a joint-space model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daptq_ros.bags.convert import (
    NS_PER_S,
    header,
    image_msg,
    image_to_numpy,
    joint_state_msg,
    joint_state_to_numpy,
    pose_stamped_msg,
    pose_stamped_to_numpy,
    sec_to_ns,
    time_to_ns,
)
from daptq_ros.bags.reader import BagReader
from daptq_ros.bags.state import EE_STATE, StateSpec
from daptq_ros.bags.writer import BagWriter
from daptq_ros.errors import BagError

IMAGE_TOPIC = "/camera/image_raw"
INSTRUCTION_TOPIC = "/instruction"
JOINT_STATES_TOPIC = "/joint_states"
EE_POSE_TOPIC = "/ee_pose"
ACTION_CHUNK_TOPIC = "/action_chunk"
ACTION_EXECUTED_TOPIC = "/action_executed"
EPISODE_INFO_TOPIC = "/episode_info"

ACTION_CHUNK = "daptq_ros_interfaces/msg/ActionChunk"
EPISODE_INFO = "daptq_ros_interfaces/msg/EpisodeInfo"

# Every topic of an episode bag and its message type.
TOPICS: dict[str, str] = {
    IMAGE_TOPIC: "sensor_msgs/msg/Image",
    INSTRUCTION_TOPIC: "std_msgs/msg/String",
    JOINT_STATES_TOPIC: "sensor_msgs/msg/JointState",
    EE_POSE_TOPIC: "geometry_msgs/msg/PoseStamped",
    ACTION_CHUNK_TOPIC: ACTION_CHUNK,
    ACTION_EXECUTED_TOPIC: ACTION_CHUNK,
    EPISODE_INFO_TOPIC: EPISODE_INFO,
}
# Topics with exactly one message per control step.
STEP_TOPICS = (IMAGE_TOPIC, JOINT_STATES_TOPIC, EE_POSE_TOPIC, ACTION_EXECUTED_TOPIC)

# Keys of metadata.yaml's custom_data (all values are strings).
META_TASK = "daptq.task"
META_SEED = "daptq.seed"
META_EPISODE = "daptq.episode"  # index among the episodes of the same (task, seed)
META_MODEL = "daptq.model"
META_BIT_CONFIG = "daptq.bit_config"
META_SUCCESS = "daptq.success"  # "true" or "false"
META_INSTRUCTION = "daptq.instruction"

WORLD_FRAME = "world"
CAMERA_FRAME = "camera"


@dataclass(frozen=True)
class EpisodeMeta:
    """What an episode was and how it ended (the /episode_info message)."""

    task: str
    instruction: str
    seed: int
    episode_index: int
    model: str
    bit_config: str
    success: bool
    steps: int
    duration: float


@dataclass(frozen=True)
class EpisodeData:
    """One episode bag as arrays: T control steps, K action chunks of H rows and D dimensions."""

    path: Path
    meta: EpisodeMeta
    stamps: NDArray[np.float64]  # [T] s, observation times
    images: NDArray[np.uint8]  # [T, H, W, 3] RGB
    joint_names: tuple[str, ...]
    joint_positions: NDArray[np.float64]  # [T, J]
    ee_positions: NDArray[np.float64]  # [T, 3] m
    ee_quats: NDArray[np.float64]  # [T, 4] xyzw
    states: NDArray[np.float64]  # [T, S]: the policy's state, as read_episode's StateSpec says
    actions: NDArray[np.float64]  # [T, D] applied to the arm (/action_executed)
    action_space: str
    action_names: tuple[str, ...]
    chunk_stamps: NDArray[np.float64]  # [K] s, time of the observation each chunk came from
    chunks: NDArray[np.float64]  # [K, H, D]
    chunk_dt: float  # s between chunk rows
    inference_latencies: NDArray[np.float64]  # [K] s
    chunk_index: NDArray[np.int64]  # [T] the chunk in force at each step (latest stamp <= step)
    chunk_row: NDArray[np.int64]  # [T] the row of that chunk meant for the step's time

    @property
    def instruction(self) -> str:
        """The natural-language instruction of the episode."""
        return self.meta.instruction

    @property
    def labels(self) -> NDArray[np.float64]:
        """[T, D] the commanded action per step: for demonstrations, the clean expert action."""
        return self.chunks[self.chunk_index, self.chunk_row]


class EpisodeWriter:
    """Writes one episode bag (MCAP, zstd-compressed chunks); use as a context manager.

    Call `write_observation` and `write_executed` once per step, `write_action_chunk` whenever
    the policy computes a chunk, and `finish` once at the end: a bag left unfinished (no
    /episode_info) is refused by `read_episode`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        task: str,
        seed: int,
        instruction: str,
        action_space: str,
        action_names: Sequence[str],
        start_ns: int,
        episode_index: int = 0,
        model: str = "expert",
        bit_config: str = "",
    ) -> None:
        """Prepare a new bag folder at `path`; `start_ns` is the time of the first observation."""
        self.bag = BagWriter(path, compress=True)
        self.path = self.bag.path
        self.action_space = action_space
        self.action_names = list(action_names)
        self.start_ns = int(start_ns)
        self.task, self.instruction, self.seed = task, instruction, int(seed)
        self.episode_index, self.model, self.bit_config = int(episode_index), model, bit_config
        self.steps = 0
        self.last_ns = self.start_ns

    def __enter__(self) -> EpisodeWriter:
        self.bag.open()
        for topic, msgtype in TOPICS.items():
            self.bag.add_topic(topic, msgtype)
        instruction = self.bag.types["std_msgs/msg/String"](data=self.instruction)
        self.bag.write(INSTRUCTION_TOPIC, instruction, self.start_ns)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bag.__exit__(exc_type, exc, tb)

    def write_observation(
        self,
        stamp_ns: int,
        image: NDArray[np.uint8],
        joint_names: Sequence[str],
        joint_positions: ArrayLike,
        ee_position: ArrayLike,
        ee_quat_xyzw: ArrayLike,
    ) -> None:
        """Write one step's observation: camera image, joint states and end-effector pose."""
        types = self.bag.types
        self.bag.write(IMAGE_TOPIC, image_msg(types, stamp_ns, image, CAMERA_FRAME), stamp_ns)
        joints = joint_state_msg(types, stamp_ns, joint_names, joint_positions)
        self.bag.write(JOINT_STATES_TOPIC, joints, stamp_ns)
        pose = pose_stamped_msg(types, stamp_ns, ee_position, ee_quat_xyzw, WORLD_FRAME)
        self.bag.write(EE_POSE_TOPIC, pose, stamp_ns)
        self.steps += 1
        self.last_ns = max(self.last_ns, int(stamp_ns))

    def write_action_chunk(
        self, stamp_ns: int, actions: ArrayLike, dt: float, inference_latency: float = 0.0
    ) -> None:
        """Write a chunk [H, D] computed from the observation stamped `stamp_ns`."""
        self.bag.write(
            ACTION_CHUNK_TOPIC, self._chunk(stamp_ns, actions, dt, inference_latency), stamp_ns
        )

    def write_executed(self, stamp_ns: int, action: ArrayLike, dt: float) -> None:
        """Write the action [D] applied to the arm at the step stamped `stamp_ns`."""
        chunk = self._chunk(stamp_ns, np.reshape(action, (1, -1)), dt, 0.0)
        self.bag.write(ACTION_EXECUTED_TOPIC, chunk, stamp_ns)

    def finish(self, success: bool, duration: float) -> None:
        """Write /episode_info and the custom_data metadata; `duration` in s of episode time."""
        end_ns = self.start_ns + sec_to_ns(duration)
        info = self.bag.types[EPISODE_INFO](
            header=header(self.bag.types, end_ns, WORLD_FRAME),
            task=self.task,
            instruction=self.instruction,
            seed=self.seed,
            episode_index=self.episode_index,
            model=self.model,
            bit_config=self.bit_config,
            success=bool(success),
            steps=self.steps,
            duration=float(duration),
        )
        self.bag.write(EPISODE_INFO_TOPIC, info, max(end_ns, self.last_ns))
        custom = episode_custom_data(
            self.task,
            self.seed,
            self.episode_index,
            self.model,
            self.bit_config,
            success,
            self.instruction,
        )
        for key, value in custom.items():
            self.bag.set_custom_data(key, value)

    def _chunk(self, stamp_ns: int, actions: ArrayLike, dt: float, latency: float) -> Any:
        rows = np.asarray(actions, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self.action_names):
            raise BagError(
                f"{self.path}: an action chunk must be [H, {len(self.action_names)}] "
                f"({', '.join(self.action_names)}), got shape {rows.shape}"
            )
        return self.bag.types[ACTION_CHUNK](
            header=header(self.bag.types, stamp_ns, WORLD_FRAME),
            space=self.action_space,
            names=self.action_names,
            dt=float(dt),
            horizon=rows.shape[0],
            dimension=rows.shape[1],
            actions=rows.reshape(-1),
            inference_latency=float(latency),
            bit_config=self.bit_config,
        )


def episode_custom_data(
    task: str,
    seed: int,
    episode_index: int,
    model: str,
    bit_config: str,
    success: bool,
    instruction: str,
) -> dict[str, str]:
    """The bag metadata (custom_data, META_* keys) that tools pair and group episodes by."""
    return {
        META_TASK: task,
        META_SEED: str(seed),
        META_EPISODE: str(episode_index),
        META_MODEL: model,
        META_BIT_CONFIG: bit_config,
        META_SUCCESS: "true" if success else "false",
        META_INSTRUCTION: instruction,
    }


def read_episode(path: str | Path, state: StateSpec = EE_STATE) -> EpisodeData:
    """Read an episode bag, its policy states built as `state` says (the model's StateSpec).

    A missing topic, mismatched counts, a joint the state needs or a damaged file raise BagError.
    """
    with BagReader(path) as reader:
        bag = reader.path
        info = reader.info
        for topic, msgtype in TOPICS.items():
            have = info.topic(topic).msgtype
            if have != msgtype:
                raise BagError(
                    f"{bag}: topic {topic} carries {have}, not {msgtype}; this is not an "
                    "episode bag (see daptq_ros.bags.episode)"
                )
        counts = {topic: info.topic(topic).count for topic in TOPICS}
        if len({counts[t] for t in STEP_TOPICS}) != 1 or counts[EPISODE_INFO_TOPIC] != 1:
            listed = ", ".join(f"{t}: {counts[t]}" for t in (*STEP_TOPICS, EPISODE_INFO_TOPIC))
            raise BagError(
                f"{bag}: an episode has one message per step on {', '.join(STEP_TOPICS)} and "
                f"one {EPISODE_INFO_TOPIC}, but the bag has {listed}; the episode was cut "
                "short or not finished: record it again"
            )
        messages: dict[str, list[Any]] = {topic: [] for topic in TOPICS}
        for message in reader.messages(TOPICS):
            messages[message.topic].append(message.msg)
    return _episode(bag, messages, state)


def recorded_joint_names(path: str | Path) -> tuple[str, ...]:
    """The joint names of a bag's first /joint_states message (BagError when it has none)."""
    with BagReader(path) as reader:
        for message in reader.messages([JOINT_STATES_TOPIC]):
            return tuple(message.msg.name)
        raise BagError(f"{reader.path}: no {JOINT_STATES_TOPIC} message; record the arm's joints")


def _episode(bag: Path, messages: dict[str, list[Any]], state: StateSpec) -> EpisodeData:
    """Assemble EpisodeData from the decoded messages of every episode topic."""
    info = messages[EPISODE_INFO_TOPIC][0]
    meta = EpisodeMeta(
        task=info.task,
        instruction=info.instruction,
        seed=int(info.seed),
        episode_index=int(info.episode_index),
        model=info.model,
        bit_config=info.bit_config,
        success=bool(info.success),
        steps=int(info.steps),
        duration=float(info.duration),
    )
    joints = [joint_state_to_numpy(m) for m in messages[JOINT_STATES_TOPIC]]
    poses = [pose_stamped_to_numpy(m) for m in messages[EE_POSE_TOPIC]]
    executed = messages[ACTION_EXECUTED_TOPIC]
    chunks = messages[ACTION_CHUNK_TOPIC]
    step_ns = np.array([time_to_ns(m.header.stamp) for m in messages[IMAGE_TOPIC]])
    for topic in (JOINT_STATES_TOPIC, EE_POSE_TOPIC, ACTION_EXECUTED_TOPIC):
        stamps = np.array([time_to_ns(m.header.stamp) for m in messages[topic]])
        if not np.array_equal(stamps, step_ns):
            raise BagError(f"{bag}: {topic} is not stamped with the steps of {IMAGE_TOPIC}")
    if meta.steps != step_ns.size:
        raise BagError(
            f"{bag}: {EPISODE_INFO_TOPIC} lists {meta.steps} steps, the bag holds "
            f"{step_ns.size}; the episode is incomplete: record it again"
        )
    names = joints[0].names
    if any(j.names != names for j in joints):
        raise BagError(f"{bag}: {JOINT_STATES_TOPIC} must name the same joints in every message")
    if state.missing(names):
        raise BagError(f"{bag}: {state.describe_missing(names)}")
    positions = np.stack([j.positions for j in joints])
    ee_positions = np.stack([p.position for p in poses])
    images = [image_to_numpy(m) for m in messages[IMAGE_TOPIC]]
    if len({i.shape for i in images}) != 1:
        raise BagError(f"{bag}: {IMAGE_TOPIC} changes its image size within the episode")
    chunk_ns, rows, dt = _chunks(bag, chunks)
    chunk_index, chunk_row = _chunk_schedule(bag, step_ns, chunk_ns, dt, rows.shape[1])
    return EpisodeData(
        path=bag,
        meta=meta,
        stamps=step_ns / NS_PER_S,
        images=np.stack(images),
        joint_names=names,
        joint_positions=positions,
        ee_positions=ee_positions,
        ee_quats=np.stack([p.quat_xyzw for p in poses]),
        states=state.vector(names, positions, ee_positions),
        actions=_chunks(bag, executed)[1][:, 0],
        action_space=chunks[0].space,
        action_names=tuple(chunks[0].names),
        chunk_stamps=chunk_ns / NS_PER_S,
        chunks=rows,
        chunk_dt=dt,
        inference_latencies=np.array([float(c.inference_latency) for c in chunks]),
        chunk_index=chunk_index,
        chunk_row=chunk_row,
    )


def _chunks(bag: Path, chunks: list[Any]) -> tuple[NDArray[np.int64], NDArray[np.float64], float]:
    """Stamps [K] (ns), rows [K, H, D] and row spacing of ActionChunks of one shape and dt."""
    shapes = {(int(c.horizon), int(c.dimension), float(c.dt), c.space) for c in chunks}
    if len(shapes) != 1:
        raise BagError(
            f"{bag}: action chunks differ in horizon, dimension, dt or space ({sorted(shapes)}); "
            "an episode uses one policy configuration"
        )
    ((horizon, dimension, dt, _),) = shapes
    if dt <= 0.0:
        raise BagError(f"{bag}: action chunks have dt = {dt} s; it must be positive")
    for chunk in chunks:
        if len(chunk.actions) != horizon * dimension or len(chunk.names) != dimension:
            raise BagError(
                f"{bag}: an action chunk of {horizon} x {dimension} carries "
                f"{len(chunk.actions)} values and {len(chunk.names)} names"
            )
    stamps = np.array([time_to_ns(c.header.stamp) for c in chunks], dtype=np.int64)
    rows = np.stack([np.asarray(c.actions, dtype=np.float64) for c in chunks])
    return stamps, rows.reshape(len(chunks), horizon, dimension), dt


def _chunk_schedule(
    bag: Path, step_ns: NDArray[np.int64], chunk_ns: NDArray[np.int64], dt: float, horizon: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For each step: the latest chunk stamped at or before it, and that chunk's row for it."""
    if np.any(np.diff(chunk_ns) < 0):
        raise BagError(f"{bag}: {ACTION_CHUNK_TOPIC} stamps go back in time")
    index = np.searchsorted(chunk_ns, step_ns, side="right") - 1
    if np.any(index < 0):
        raise BagError(f"{bag}: a step comes before the first {ACTION_CHUNK_TOPIC}")
    row = np.rint((step_ns - chunk_ns[index]) / sec_to_ns(dt)).astype(np.int64)
    if np.any(row >= horizon):
        raise BagError(
            f"{bag}: a step falls past the end of the action chunk in force ({horizon} rows "
            f"of {dt} s); the policy must send a new chunk before the old one runs out"
        )
    return index, row
