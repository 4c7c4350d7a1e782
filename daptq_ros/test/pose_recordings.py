"""Recordings with what real ones have, for pose-only drift (test helper, not a test).

- `mobile_base`: a base driving for two minutes. /odom (nav_msgs/Odometry, 50 Hz, 10 % of the
  messages lost) drifts (wheel scale and yaw bias); /localization (PoseStamped, ~1 Hz, stamps
  jittered off the odometry grid) has gaps of several seconds (one of 10 s) and one duplicated
  stamp. /tf carries odom -> base_link at 50 Hz and map -> odom at 1 Hz stamped 1 s in the
  future, as localisation stacks publish it; /tf_static carries base_link -> laser.
- `mocap_slam`: a hand-held camera. /mocap (PoseStamped, 100 Hz) with dropouts of up to 12 s;
  /slam (PoseStamped, 30 Hz) in its own frame: rotated, shifted, scaled by 0.9 and drifting.

Messages are written in record-time order with rosbags, MCAP storage, as `ros2 bag record`
writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from daptq_ros.bags import BagWriter
from daptq_ros.bags.convert import header

T0 = 1_700_000_000.0  # s


@dataclass(frozen=True)
class Truth:
    """What a recording was made from: the true pose at a stamp, and the chain's own values."""

    stamps: np.ndarray
    positions: np.ndarray
    rotations: Rotation


def _ns(t: float) -> int:
    return int(np.rint(t * 1e9))


def _pose(types: dict[str, Any], p: np.ndarray, q: np.ndarray) -> Any:
    return types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
        orientation=types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
    )


def pose_stamped(types: dict[str, Any], t: float, frame: str, p: np.ndarray, q: np.ndarray) -> Any:
    return types["geometry_msgs/msg/PoseStamped"](
        header=header(types, _ns(t), frame), pose=_pose(types, p, q)
    )


def odometry(types: dict[str, Any], t: float, p: np.ndarray, q: np.ndarray) -> Any:
    zero = types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    twist = types["geometry_msgs/msg/Twist"](linear=zero, angular=zero)
    return types["nav_msgs/msg/Odometry"](
        header=header(types, _ns(t), "odom"),
        child_frame_id="base_link",
        pose=types["geometry_msgs/msg/PoseWithCovariance"](
            pose=_pose(types, p, q), covariance=np.zeros(36)
        ),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
    )


def transform(
    types: dict[str, Any], t: float, parent: str, child: str, p: np.ndarray, q: np.ndarray
) -> Any:
    return types["geometry_msgs/msg/TransformStamped"](
        header=header(types, _ns(t), parent),
        child_frame_id=child,
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=p[0], y=p[1], z=p[2]),
            rotation=types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        ),
    )


def _write_sorted(writer: BagWriter, messages: list[tuple[float, str, Any]]) -> None:
    for record, topic, msg in sorted(messages, key=lambda m: m[0]):
        writer.write(topic, msg, _ns(record))


def _planar_path(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A figure-of-eight drive (x, y in m) and its heading (rad)."""
    s = 2 * np.pi * (t - t[0]) / 60.0
    xy = np.stack([12.0 * np.sin(s), 6.0 * np.sin(2 * s)], axis=1)
    d = np.gradient(xy, t, axis=0)
    return xy, np.unwrap(np.arctan2(d[:, 1], d[:, 0]))


def _se2(xy: np.ndarray, yaw: np.ndarray) -> tuple[np.ndarray, Rotation]:
    return np.column_stack([xy, np.zeros(len(xy))]), Rotation.from_euler("z", yaw[:, None])


def mobile_base(folder: Path, seed: int = 0) -> Truth:
    """Write the mobile-base recording into `folder` (a bag folder); return the true poses."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(0.0, 120.0, 0.02)  # 50 Hz odometry
    xy, yaw = _planar_path(t)
    true_p, true_r = _se2(xy, yaw)
    # Odometry: integrate the true body velocity with a 2 % scale error and a yaw bias.
    step = np.diff(xy, axis=0)
    body = np.einsum(
        "nij,nj->ni", Rotation.from_euler("z", -yaw[:-1, None]).as_matrix()[:, :2, :2], step
    )
    odom_yaw = yaw[0] + np.concatenate(([0.0], np.cumsum(np.diff(yaw) + 0.0001)))
    world_step = np.einsum(
        "nij,nj->ni",
        Rotation.from_euler("z", odom_yaw[:-1, None]).as_matrix()[:, :2, :2],
        1.02 * body,
    )
    odom_xy = xy[0] + np.concatenate((np.zeros((1, 2)), np.cumsum(world_step, axis=0)))
    odom_p, odom_r = _se2(odom_xy, odom_yaw)
    # Localisation: ~1 Hz, jittered stamps, 2 cm noise, gaps, one duplicated stamp.
    loc_t = T0 + np.arange(0.5, 120.0, 1.0) + rng.uniform(-0.012, 0.012, 120)
    gaps = ((20.0, 29.3), (50.0, 54.0), (80.0, 85.5), (100.0, 103.0))
    keep = ~np.any([(loc_t - T0 > a) & (loc_t - T0 < b) for a, b in gaps], axis=0)
    loc_t = loc_t[keep]
    loc_xy, loc_yaw = _planar_path(np.concatenate(([T0], loc_t)))
    loc_p, loc_r = _se2(loc_xy[1:] + rng.normal(0, 0.02, (len(loc_t), 2)), loc_yaw[1:])
    duplicate = len(loc_t) // 2
    with BagWriter(folder) as writer:
        types = writer.types
        for topic, msgtype in (
            ("/odom", "nav_msgs/msg/Odometry"),
            ("/localization", "geometry_msgs/msg/PoseStamped"),
            ("/tf", "tf2_msgs/msg/TFMessage"),
            ("/tf_static", "tf2_msgs/msg/TFMessage"),
        ):
            writer.add_topic(topic, msgtype)
        messages: list[tuple[float, str, Any]] = []
        laser = transform(
            types, T0, "base_link", "laser", np.array([0.2, 0, 0.3]), np.array([0, 0, 0, 1.0])
        )
        messages.append((T0, "/tf_static", types["tf2_msgs/msg/TFMessage"](transforms=[laser])))
        lost = rng.random(len(t)) < 0.1  # odometry messages the recorder lost
        for i, stamp in enumerate(t):
            p, q = odom_p[i], odom_r[i].as_quat()
            if not lost[i]:
                messages.append((stamp + 0.001, "/odom", odometry(types, stamp, p, q)))
            edge = transform(types, stamp, "odom", "base_link", p, q)
            messages.append(
                (stamp + 0.001, "/tf", types["tf2_msgs/msg/TFMessage"](transforms=[edge]))
            )
        for i, stamp in enumerate(loc_t):
            msg = pose_stamped(types, stamp, "map", loc_p[i], loc_r[i].as_quat())
            messages.append((stamp + 0.05, "/localization", msg))
            if i == duplicate:  # the same stamp again, a slightly different pose
                again = pose_stamped(types, stamp, "map", loc_p[i] + 0.01, loc_r[i].as_quat())
                messages.append((stamp + 0.06, "/localization", again))
        # map -> odom: the localisation's correction, stamped 1 s ahead (as AMCL publishes it).
        for k in np.arange(0, len(t), 50):
            correction_r = true_r[k] * odom_r[k].inv()
            correction_p = true_p[k] - correction_r.apply(odom_p[k])
            edge = transform(types, t[k] + 1.0, "map", "odom", correction_p, correction_r.as_quat())
            messages.append(
                (t[k] + 0.002, "/tf", types["tf2_msgs/msg/TFMessage"](transforms=[edge]))
            )
        _write_sorted(writer, messages)
    return Truth(t, true_p, true_r)


def mocap_slam(folder: Path, seed: int = 1) -> Truth:
    """Write the motion-capture / visual SLAM recording into `folder`; return the true poses."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(0.0, 180.0, 0.01)  # 100 Hz motion capture
    s = (t - T0) / 180.0 * 2 * np.pi
    true_p = np.stack([2.0 * np.cos(3 * s), 1.5 * np.sin(2 * s), 1.2 + 0.3 * np.sin(5 * s)], 1)
    true_r = Rotation.from_euler("zyx", np.stack([3 * s, 0.2 * np.sin(4 * s), 0.1 * np.cos(s)], 1))
    dropped = np.zeros(len(t), bool)
    starts = np.sort(rng.uniform(0.0, 170.0, 55))
    lengths = np.concatenate(([12.0], rng.uniform(0.05, 3.0, 54)))
    for start, length in zip(starts, rng.permutation(lengths), strict=True):
        dropped |= (t - T0 >= start) & (t - T0 < start + length)
    slam_t = T0 + np.arange(0.0, 180.0, 1 / 30) + rng.uniform(-0.003, 0.003, 5400)
    slam_s = (slam_t - T0) / 180.0 * 2 * np.pi
    slam_true = np.stack(
        [2.0 * np.cos(3 * slam_s), 1.5 * np.sin(2 * slam_s), 1.2 + 0.3 * np.sin(5 * slam_s)], 1
    )
    slam_rot = Rotation.from_euler(
        "zyx", np.stack([3 * slam_s, 0.2 * np.sin(4 * slam_s), 0.1 * np.cos(slam_s)], 1)
    )
    frame = Rotation.from_euler("z", 0.7)
    drift = np.cumsum(rng.normal(0, 0.002, (len(slam_t), 3)), axis=0)
    slam_p = 0.9 * frame.apply(slam_true + drift) + np.array([3.0, -1.0, 0.5])
    slam_r = frame * Rotation.from_rotvec(rng.normal(0, 0.01, (len(slam_t), 3))) * slam_rot
    with BagWriter(folder) as writer:
        types = writer.types
        writer.add_topic("/mocap", "geometry_msgs/msg/PoseStamped")
        writer.add_topic("/slam", "geometry_msgs/msg/PoseStamped")
        messages = [
            (
                stamp + 0.002,
                "/mocap",
                pose_stamped(types, stamp, "mocap", true_p[i], true_r[i].as_quat()),
            )
            for i, stamp in enumerate(t)
            if not dropped[i]
        ]
        messages += [
            (
                stamp + 0.03,
                "/slam",
                pose_stamped(types, stamp, "slam", slam_p[i], slam_r[i].as_quat()),
            )
            for i, stamp in enumerate(slam_t)
        ]
        _write_sorted(writer, messages)
    return Truth(t, true_p, true_r)
