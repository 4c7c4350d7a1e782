"""Synthetic Panda episodes written as rosbag2, for the drift analysis and `daptq drift` tests.

The arm rests 0.3 s, moves along a smooth minimum-jerk phase for 3.4 s, and rests 0.3 s. The
end-effector moves in the horizontal plane (z constant) along a curve that never repeats, so
every run sample has one exact match on the reference and a time lag is identifiable by DTW.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from daptq_ros.bags import BagWriter, joint_state_msg, pose_stamped_msg

PANDA_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
SWING = np.array([0.4, 0.3, -0.3, 0.4, 0.2, -0.3, 0.5])
DURATION = 4.0  # s
MOVE = (0.3, 3.7)  # s: the arm moves between these times and rests before and after
T0_NS = 1_700_000_000_000_000_000


def phase(t: np.ndarray) -> np.ndarray:
    """Minimum-jerk phase s(t) in [0, 1]: 10 u^3 - 15 u^4 + 6 u^5, u the clipped motion time."""
    u = np.clip((t - MOVE[0]) / (MOVE[1] - MOVE[0]), 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u * u)


def joints_at(t: np.ndarray, episode: int = 0) -> np.ndarray:
    """Joint positions [N, 7] (rad) at times t."""
    s = phase(t)[:, None]
    return HOME + (1.0 + 0.1 * episode) * SWING * (s + 0.3 * np.sin(2.0 * s))


def ee_at(t: np.ndarray, episode: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """End-effector positions [N, 3] (m, z constant) and quaternions xyzw [N, 4] at times t."""
    s = phase(t)
    x = 0.3 + 0.25 * s
    y = 0.2 * np.sin(2.5 * s) - 0.1 * s + 0.05 * episode
    positions = np.stack([x, y, np.full_like(s, 0.45)], axis=1)
    quats = Rotation.from_euler("xz", np.stack([np.full_like(s, np.pi), 0.5 * s], axis=1))
    return positions, quats.as_quat()


def write_episode(
    path: Path,
    *,
    rate_hz: float = 100.0,
    lag: float = 0.0,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
    episode: int = 0,
    poses: bool = True,
    metadata: Mapping[str, str] | None = None,
    names: Sequence[str] = PANDA_JOINTS,
    start_ns: int = T0_NS,
) -> None:
    """Write one episode: /joint_states (+ /ee_pose), `lag` s late and `offset` m away."""
    t = np.arange(0.0, DURATION + 1e-9, 1.0 / rate_hz)
    q = joints_at(t - lag, episode)
    positions, quats = ee_at(t - lag, episode)
    positions = positions + np.asarray(offset)
    with BagWriter(path) as writer:
        for key, value in (metadata or {}).items():
            writer.set_custom_data(key, value)
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        if poses:
            writer.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped")
        for i, seconds in enumerate(t):
            stamp = start_ns + round(seconds * 1e9)
            writer.write("/joint_states", joint_state_msg(writer.types, stamp, names, q[i]), stamp)
            if poses:
                pose = pose_stamped_msg(writer.types, stamp, positions[i], quats[i])
                writer.write("/ee_pose", pose, stamp + 1_000)
