"""A plain `ros2 bag record` of an arm as a demonstration: frames, states and joint actions.

Episode bags (bags.episode) carry what the policy did; a user's own recording of a teleoperated
or scripted arm carries only what the robot publishes: a camera, /joint_states and, if it was
recorded, the instruction on /instruction and the tool pose on /ee_pose. This module turns such
a recording into the steps a joint-space model is calibrated and normalised on:

- steps every `dt` (the model's chunk spacing) from the first moment the camera and every
  joint the model needs have been seen, to the last moment a next step still exists;
- the frame of a step is the newest camera frame at or before it;
- each joint is interpolated linearly at the step times, from every /joint_states message
  that names it (arm and gripper may publish separately);
- the action of a step, for joint_position models, is the named joints' positions one step
  later: what the arm did next, the label a teleoperation recording gives (LeRobot records the
  leader arm's positions instead, which lead these by the follower's tracking lag); for
  joint_delta models, their change over that step. An action named `gripper` that is no joint
  of the recording is the state's gripper joint (its last state name).

Header stamps give time; a message stamped 0 ("not stamped") falls back to its record time.
Times are taken relative to the first message, in integer nanoseconds first: float seconds
since 1970 resolve only ~0.2 us.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import (
    compressed_image_to_numpy,
    image_to_numpy,
    joint_state_to_numpy,
    pose_stamped_to_numpy,
    time_to_ns,
)
from daptq_ros.bags.episode import TOPICS as EPISODE_TOPICS
from daptq_ros.bags.episode import EpisodeData, read_episode
from daptq_ros.bags.reader import BagMessage, BagReader, bag_info
from daptq_ros.bags.state import StateSpec
from daptq_ros.errors import BagError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINTS_TOPIC = "/joint_states"
INSTRUCTION_TOPIC = "/instruction"
EE_POSE_TOPIC = "/ee_pose"
JOINT_ACTION_SPACES = ("joint_position", "joint_delta")
GRIPPER_ACTION = "gripper"


@dataclass(frozen=True)
class Recording:
    """A plain recording resampled every dt: the fields calibration and statistics read."""

    path: Path
    instruction: str
    stamps: NDArray[np.float64]  # [T] s since the recording's first message
    images: NDArray[np.uint8]  # [T, H, W, 3] RGB
    joint_names: tuple[str, ...]  # the joints of the state and the actions, interpolated
    joint_positions: NDArray[np.float64]  # [T, J]
    states: NDArray[np.float64]  # [T, S] as the model's StateSpec says
    actions: NDArray[np.float64]  # [T, D] what the arm did next (see the module docstring)
    ee_positions: NDArray[np.float64] | None  # [T, 3] from /ee_pose when recorded

    @property
    def labels(self) -> NDArray[np.float64]:
        """The actions, as episode bags name their demonstration labels."""
        return self.actions


def read_demonstration(
    path: str | Path, state: StateSpec, *model: Any, **options: Any
) -> EpisodeData | Recording:
    """An episode bag as read_episode reads it, any other recording as read_recording does
    (`model` and `options`: read_recording's action space, action names, dt and keywords)."""
    topics = {t.name for t in bag_info(path).topics}
    if set(EPISODE_TOPICS) <= topics:
        return read_episode(path, state)
    return read_recording(path, state, *model, **options)


def read_recording(
    path: str | Path,
    state: StateSpec,
    action_space: str,
    action_names: Sequence[str],
    dt: float,
    *,
    image_topic: str = "/camera/image_raw",
    instruction: str | None = None,
) -> Recording:
    """Resample a `ros2 bag record` recording for a joint-space model; BagError names what is
    missing (the camera, a joint with the joints found, the instruction) and how to fix it."""
    if action_space not in JOINT_ACTION_SPACES:
        raise BagError(
            f"{path}: a plain recording gives joint actions only, and the model's are "
            f"{action_space}; calibrate it on episode bags (daptq collect / daptq eval), which "
            "record the actions the policy sent"
        )
    if state.source != "joint_positions":
        raise BagError(
            f"{path}: a plain recording gives joint states only, and the model's state is "
            f"{state.source}; import the model with a joint_positions mapping"
        )
    if not dt > 0:
        raise BagError(f"the model's dt is {dt} s; it must be positive")
    with BagReader(path) as reader:
        bag, info = reader.path, reader.info
        have = {t.name: t.msgtype for t in info.topics}
        if have.get(image_topic) not in IMAGE_TYPES:
            cameras = sorted(n for n, t in have.items() if t in IMAGE_TYPES)
            raise BagError(
                f"{bag}: no camera on {image_topic} (image topics: "
                f"{', '.join(cameras) or 'none'}); pass the camera's topic with --image-topic"
            )
        if JOINTS_TOPIC not in have:
            raise BagError(f"{bag}: no {JOINTS_TOPIC}; record the arm's joint states")
        topics = [image_topic, JOINTS_TOPIC]
        topics += [t for t in (INSTRUCTION_TOPIC, EE_POSE_TOPIC) if t in have]
        messages: dict[str, list[BagMessage]] = {topic: [] for topic in topics}
        for message in reader.messages(topics):
            messages[message.topic].append(message)
    return _resample(bag, messages, state, action_space, tuple(action_names), dt, instruction)


def _resample(
    bag: Path,
    messages: dict[str, list[BagMessage]],
    state: StateSpec,
    action_space: str,
    action_names: tuple[str, ...],
    dt: float,
    instruction: str | None,
) -> Recording:
    image_topic = next(iter(messages))
    frames = messages[image_topic]
    if not frames:
        raise BagError(f"{bag}: {image_topic} holds no frame")
    origin = min(_stamp_ns(m) for m in (*frames, *messages[JOINTS_TOPIC]))

    def seconds(message: BagMessage) -> float:
        return (_stamp_ns(message) - origin) / 1e9

    frame_times = np.array([seconds(m) for m in frames])
    series = _joint_series(messages[JOINTS_TOPIC], seconds)
    action_joints = _action_joints(action_names, state, series)
    needed = tuple(dict.fromkeys([*state.names, *action_joints]))
    if missing := [n for n in needed if n not in series]:
        raise BagError(
            f"{bag}: {JOINTS_TOPIC} never names {', '.join(missing)}, which the model needs; "
            f"it names {', '.join(series) or 'no joint'}: record those joints, or import the "
            "model with a mapping whose names are your arm's joints"
        )
    start = max(frame_times[0], *(series[n][0][0] for n in needed))
    end = min(series[n][0][-1] for n in needed) - dt  # the last step still has a next one
    if end < start:
        raise BagError(
            f"{bag}: the camera and the joints {', '.join(needed)} overlap for less than one "
            f"step of {dt} s; record longer"
        )
    stamps = start + dt * np.arange(int(np.floor((end - start) / dt + 1e-9)) + 1)
    later = stamps + dt
    now_q = np.column_stack([np.interp(stamps, *series[n]) for n in needed])
    next_q = np.column_stack([np.interp(later, *series[n]) for n in needed])
    columns = [needed.index(n) for n in action_joints]
    actions = next_q[:, columns]
    if action_space == "joint_delta":
        actions = actions - now_q[:, columns]
    index = np.searchsorted(frame_times, stamps, side="right") - 1
    images = np.stack([_image(frames[i].msg) for i in index])
    return Recording(
        path=bag,
        instruction=_instruction(bag, messages.get(INSTRUCTION_TOPIC, []), instruction),
        stamps=stamps,
        images=images,
        joint_names=needed,
        joint_positions=now_q,
        states=state.vector(needed, now_q),
        actions=actions,
        ee_positions=_ee_positions(messages.get(EE_POSE_TOPIC, []), stamps, seconds),
    )


def _stamp_ns(message: BagMessage) -> int:
    """The header stamp in ns, or the record time when the message is not stamped (or has no
    header, as std_msgs/String)."""
    header = getattr(message.msg, "header", None)
    return (header and time_to_ns(header.stamp)) or message.stamp_ns


def _joint_series(
    messages: list[BagMessage], seconds: Callable[[BagMessage], float]
) -> dict[str, tuple[NDArray, NDArray]]:
    """Per joint name: (times, positions) over every message that names it, sorted by time."""
    samples: dict[str, list[tuple[float, float]]] = {}
    for message in messages:
        sample = joint_state_to_numpy(message.msg)
        stamp = seconds(message)
        for name, position in zip(sample.names, sample.positions, strict=True):
            samples.setdefault(name, []).append((stamp, float(position)))
    series = {}
    for name, values in samples.items():
        times, positions = np.array(sorted(values)).T
        series[name] = (times, positions)
    return series


def _action_joints(
    action_names: tuple[str, ...], state: StateSpec, series: dict[str, Any]
) -> list[str]:
    """The recorded joint each action dimension is read from: its own name, or for an action
    named `gripper` that no joint has, the state's gripper joint (its last name)."""
    return [
        state.names[-1] if name == GRIPPER_ACTION and name not in series else name
        for name in action_names
    ]


def _image(msg: Any) -> NDArray[np.uint8]:
    """A camera message as RGB; compressed frames decoded."""
    if hasattr(msg, "format"):
        return compressed_image_to_numpy(msg)
    return image_to_numpy(msg)


def _instruction(bag: Path, messages: list[BagMessage], given: str | None) -> str:
    """The instruction passed, else the recording's last /instruction."""
    if given:
        return given
    if messages:
        return str(messages[-1].msg.data)
    raise BagError(
        f"{bag}: no {INSTRUCTION_TOPIC} in the recording; record it, or pass the task's "
        "instruction with --instruction"
    )


def _ee_positions(
    messages: list[BagMessage], stamps: NDArray, seconds: Callable[[BagMessage], float]
) -> NDArray[np.float64] | None:
    """The tool position interpolated at the steps, when /ee_pose was recorded."""
    if not messages:
        return None
    poses = [pose_stamped_to_numpy(m.msg) for m in messages]
    times = np.array([seconds(m) for m in messages])
    order = np.argsort(times)
    positions = np.stack([p.position for p in poses])[order]
    return np.column_stack([np.interp(stamps, times[order], positions[:, k]) for k in range(3)])
