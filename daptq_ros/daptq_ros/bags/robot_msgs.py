"""Build the messages the robot-side nodes publish: commands, chunks, status, diagnostics.

Like bags.convert, builders take the message classes by type name (a rosbags typestore's
`types` mapping, or rclpy's `get_message`), so the node logic is tested with rosbags classes
and runs on the robot with rclpy ones.
"""

from __future__ import annotations

import array
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from daptq_ros.bags.convert import (
    TypeSource,
    float_sequence,
    header,
    is_rclpy_class,
    message_class,
    sec_to_time,
)
from daptq_ros.errors import BagError

ACTION_CHUNK = "daptq_ros_interfaces/msg/ActionChunk"
POLICY_STATUS = "daptq_ros_interfaces/msg/PolicyStatus"
SHADOW_DIVERGENCE = "daptq_ros_interfaces/msg/ShadowDivergence"
DIAGNOSTIC_LEVELS = {"OK": 0, "WARN": 1, "ERROR": 2, "STALE": 3}


def joint_trajectory_msg(
    types: TypeSource,
    stamp_ns: int,
    names: Sequence[str],
    positions: ArrayLike,
    times_from_start: ArrayLike,
    velocities: ArrayLike | None = None,
) -> Any:
    """trajectory_msgs/JointTrajectory: P points of positions [P, J] at times_from_start [P] s."""
    rows = np.atleast_2d(np.asarray(positions, dtype=np.float64))
    times = np.asarray(times_from_start, dtype=np.float64).reshape(-1)
    speeds = None if velocities is None else np.atleast_2d(np.asarray(velocities, np.float64))
    if rows.shape[1] != len(names) or times.size != rows.shape[0]:
        raise BagError(
            f"JointTrajectory: {rows.shape} positions for {len(names)} joints and "
            f"{times.size} times; give one row per time and one column per joint"
        )
    point_cls = message_class(types, "trajectory_msgs/msg/JointTrajectoryPoint")
    points = [
        point_cls(
            positions=float_sequence(point_cls, rows[i]),
            velocities=float_sequence(point_cls, np.empty(0) if speeds is None else speeds[i]),
            accelerations=float_sequence(point_cls, np.empty(0)),
            effort=float_sequence(point_cls, np.empty(0)),
            time_from_start=_duration(types, float(times[i])),
        )
        for i in range(rows.shape[0])
    ]
    return message_class(types, "trajectory_msgs/msg/JointTrajectory")(
        header=header(types, stamp_ns), joint_names=list(names), points=points
    )


def float64_array_msg(types: TypeSource, values: ArrayLike) -> Any:
    """std_msgs/Float64MultiArray with one unlabelled dimension (forward controllers' format)."""
    cls = message_class(types, "std_msgs/msg/Float64MultiArray")
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    layout = message_class(types, "std_msgs/msg/MultiArrayLayout")(dim=[], data_offset=0)
    return cls(layout=layout, data=float_sequence(cls, flat))


def twist_stamped_msg(
    types: TypeSource, stamp_ns: int, linear: ArrayLike, angular: ArrayLike, frame_id: str
) -> Any:
    """geometry_msgs/TwistStamped from linear [3] (m/s) and angular [3] (rad/s) velocities."""
    vector = message_class(types, "geometry_msgs/msg/Vector3")
    lin = np.asarray(linear, dtype=np.float64).reshape(3)
    ang = np.asarray(angular, dtype=np.float64).reshape(3)
    twist = message_class(types, "geometry_msgs/msg/Twist")(
        linear=vector(x=float(lin[0]), y=float(lin[1]), z=float(lin[2])),
        angular=vector(x=float(ang[0]), y=float(ang[1]), z=float(ang[2])),
    )
    return message_class(types, "geometry_msgs/msg/TwistStamped")(
        header=header(types, stamp_ns, frame_id), twist=twist
    )


def action_chunk_msg(
    types: TypeSource,
    stamp_ns: int,
    actions: ArrayLike,
    dt: float,
    space: str,
    names: Sequence[str],
    inference_latency: float,
    bit_config: str,
    frame_id: str = "",
) -> Any:
    """daptq_ros_interfaces/ActionChunk from actions [H, D] (row i for stamp + i * dt)."""
    rows = np.asarray(actions, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise BagError(
            f"an action chunk must be [H, {len(names)}] ({', '.join(names)}), "
            f"got shape {rows.shape}"
        )
    cls = message_class(types, ACTION_CHUNK)
    return cls(
        header=header(types, stamp_ns, frame_id),
        space=space,
        names=list(names),
        dt=float(dt),
        horizon=rows.shape[0],
        dimension=rows.shape[1],
        actions=float_sequence(cls, rows.reshape(-1)),
        inference_latency=float(inference_latency),
        bit_config=bit_config,
    )


def policy_status_msg(types: TypeSource, stamp_ns: int, fields: Mapping[str, Any]) -> Any:
    """daptq_ros_interfaces/PolicyStatus from a mapping of its field names to values."""
    return message_class(types, POLICY_STATUS)(header=header(types, stamp_ns), **fields)


def diagnostic_array_msg(
    types: TypeSource,
    stamp_ns: int,
    statuses: Sequence[tuple[str, str, str, Mapping[str, object]]],
    hardware_id: str = "",
) -> Any:
    """diagnostic_msgs/DiagnosticArray from (name, level OK/WARN/ERROR/STALE, message, values)."""
    status_cls = message_class(types, "diagnostic_msgs/msg/DiagnosticStatus")
    key_value = message_class(types, "diagnostic_msgs/msg/KeyValue")
    entries = []
    for name, level, message, values in statuses:
        if level not in DIAGNOSTIC_LEVELS:
            raise BagError(f"diagnostic level {level!r}: use one of {', '.join(DIAGNOSTIC_LEVELS)}")
        code = DIAGNOSTIC_LEVELS[level]
        entries.append(
            status_cls(
                level=bytes([code]) if is_rclpy_class(status_cls) else code,
                name=name,
                message=message,
                hardware_id=hardware_id,
                values=[key_value(key=str(k), value=_text(v)) for k, v in values.items()],
            )
        )
    return message_class(types, "diagnostic_msgs/msg/DiagnosticArray")(
        header=header(types, stamp_ns), status=entries
    )


def clock_msg(types: TypeSource, seconds: float) -> Any:
    """rosgraph_msgs/Clock at `seconds` of simulated time."""
    return message_class(types, "rosgraph_msgs/msg/Clock")(clock=sec_to_time(types, seconds))


def twist_to_numpy(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/TwistStamped -> (linear [3], angular [3])."""
    lin, ang = msg.twist.linear, msg.twist.angular
    return np.array([lin.x, lin.y, lin.z]), np.array([ang.x, ang.y, ang.z])


def float64_array_to_numpy(msg: Any) -> np.ndarray:
    """std_msgs/Float64MultiArray -> its data as a flat float64 array."""
    data = msg.data
    if isinstance(data, array.array):
        return np.frombuffer(data, dtype=np.float64).copy()
    return np.asarray(data, dtype=np.float64).reshape(-1)


def _duration(types: TypeSource, seconds: float) -> Any:
    """builtin_interfaces/Duration of `seconds` (>= 0)."""
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return message_class(types, "builtin_interfaces/msg/Duration")(
        sec=int(sec), nanosec=int(nanosec)
    )


def _text(value: object) -> str:
    """A diagnostics value as text; floats with 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def shadow_divergence_msg(types: TypeSource, stamp_ns: int, fields: Mapping[str, Any]) -> Any:
    """daptq_ros_interfaces/ShadowDivergence from a mapping of its field names to values."""
    return message_class(types, SHADOW_DIVERGENCE)(header=header(types, stamp_ns), **fields)
