"""The drift monitor node without rclpy: joint states / poses against a reference -> DriftReport.

The reference comes from a bag (e.g. the full-precision run of the same task) or from a
trajectory_msgs/JointTrajectory on a topic; without either, the policy node's shadow (a
higher-precision copy of its model, ShadowDivergence on shadow_topic) is the reference, its
divergences grouped into windows (drift/shadow_windows.py). An episode (sample stamps from 0
against the reference) starts with the first sample after the reference is set, after `restart` (the
node's ~/restart service), after the policy node is enabled again (PolicyStatus.enabled false
-> true) or after an EpisodeInfo (the simulator ended an episode). Each closed window becomes a
DriftReport; a window at ERROR can ask the policy node for an e-stop (parameter
estop_on_error).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from daptq_ros.bags import bag_info
from daptq_ros.bags.convert import (
    TypeSource,
    float_sequence,
    header,
    joint_state_to_numpy,
    message_class,
    pose_stamped_to_numpy,
    sec_to_ns,
    sec_to_time,
    time_to_sec,
)
from daptq_ros.bags.robot_msgs import diagnostic_array_msg
from daptq_ros.drift.analysis import BagEntry, Sources, load_episode
from daptq_ros.drift.kinematics import Kinematics
from daptq_ros.drift.metrics import Trajectory
from daptq_ros.drift.monitor import DriftMonitor, DriftWindow, Level, MonitorConfig
from daptq_ros.drift.shadow_windows import ShadowWindows
from daptq_ros.errors import ControlError, DaptqError, DriftError
from daptq_ros.robot.arm import ArmModel, arm_model
from daptq_ros.robot.params import check_overrides, defaults
from daptq_ros.robot.presets import load_robot

NODE = "drift_monitor"
DRIFT_REPORT = "daptq_ros_interfaces/msg/DriftReport"
LEVEL_NAMES = {Level.OK: "OK", Level.WARN: "WARN", Level.ERROR: "ERROR", Level.STALE: "STALE"}
MONITOR_FIELDS = {f.name for f in fields(MonitorConfig)}


class DriftMonitorCore:
    """Feeds a DriftMonitor from messages and turns closed windows into DriftReport messages.

    The /diagnostics level is STALE while there is nothing to compare: no reference yet, or no
    executed sample (joint_states or ee_pose) within stale_timeout_s, never included. Without
    a reference it is STALE, not WARN: no drift is measured at all, which is what STALE (no
    usable data) means, whereas WARN would claim a measured drift. Otherwise it is the last
    closed window's level (OK until the first window closes).
    """

    def __init__(self, params: Mapping[str, Any], types: TypeSource) -> None:
        if reasons := check_overrides(NODE, params):
            raise ControlError("; ".join(reasons))
        self.params: dict[str, Any] = {**defaults(NODE), **params}
        self.types = types
        config = {k: v for k, v in self.params.items() if k in MONITOR_FIELDS}
        self.monitor = DriftMonitor(MonitorConfig(**config))
        self.shadow = ShadowWindows(self.monitor.config)
        self._shadow_seen = False
        self.robot = load_robot(str(self.params["robot"]))
        # With the arm's kinematics, joint states also give end-effector poses (by FK) when no
        # pose topic is published, so the report has Cartesian drift too.
        self.arm: ArmModel | None = arm_model(self.robot, str(self.params["urdf_path"]))
        self.bit_config = ""
        self.last_window: DriftWindow | None = None
        self.estop_requests = 0
        self._restart = True
        self._pose_topic_seen = False
        self.has_reference = False
        self._last_sample: float | None = None  # stamp of the newest executed sample, s
        self._policy_enabled: bool | None = None  # None until the first PolicyStatus
        if self.params["reference_bag"]:
            self.set_reference(
                reference_from_bag(str(self.params["reference_bag"]), self.params, self.arm)
            )

    @property
    def estop_on_error(self) -> bool:
        """Whether an ERROR window asks the policy node for an e-stop."""
        return bool(self.params["estop_on_error"])

    def set_reference(self, reference: Trajectory) -> None:
        """Compare against `reference` (stamps from 0) from the next sample on."""
        self.monitor.set_reference(reference)
        self.has_reference = True
        self._restart = True

    def restart(self) -> None:
        """Start a new episode at the next sample (e.g. when the policy is enabled again)."""
        self._restart = True

    def on_reference(self, msg: Any) -> None:
        """A trajectory_msgs/JointTrajectory reference (times from start, positions by name)."""
        self.set_reference(trajectory_from_msg(msg, self.arm))

    def on_robot_description(self, msg: Any) -> None:
        """The URDF (std_msgs/String, e.g. /robot_description) gives the kinematics for FK."""
        kinematics = Kinematics.from_urdf(str(msg.data), self.robot.ee_frame, self.robot.gripper)
        self.arm = ArmModel(kinematics, self.robot.joints.names)

    def on_policy_status(self, msg: Any) -> None:
        """Our PolicyStatus: the active bit config; enabled false -> true starts a new episode."""
        self.bit_config = str(msg.bit_config)
        enabled = bool(msg.enabled)
        if enabled and self._policy_enabled is False:
            self.restart()
        self._policy_enabled = enabled

    def on_episode(self, msg: Any) -> Any | None:
        """An EpisodeInfo (the simulator ended an episode): the DriftReport of its last, partial
        window (None when it held nothing), so that an episode shorter than a window is
        reported too; the next sample starts a new episode."""
        window = self.monitor.stop_episode() if self.has_reference else self.shadow.flush()
        self.restart()
        return self._report(window)

    def on_joint_states(self, msg: Any) -> Any | None:
        """Feed a JointState; the DriftReport of the window it closed, else None."""
        sample = joint_state_to_numpy(msg)
        self._last_sample = sample.stamp
        self._start(sample.stamp)
        window = self.monitor.update_joints(sample.stamp, sample.names, sample.positions)
        if self.arm is not None and not self._pose_topic_seen:
            q = self.arm.kinematics.q_from_joint_state(sample.names, sample.positions)
            position, quat = self.arm.pose(q)
            window = self.monitor.update_pose(sample.stamp, position, quat) or window
        return self._report(window)

    def on_ee_pose(self, msg: Any) -> Any | None:
        """Feed a PoseStamped of the end effector; like on_joint_states."""
        sample = pose_stamped_to_numpy(msg)
        self._pose_topic_seen = True
        self._last_sample = sample.stamp
        self._start(sample.stamp)
        return self._report(
            self.monitor.update_pose(sample.stamp, sample.position, sample.quat_xyzw)
        )

    def on_shadow(self, msg: Any) -> Any | None:
        """A ShadowDivergence: with no recorded reference, the DriftReport of the window it
        closed, else None (a recorded reference, when set, is the one compared against)."""
        if self.has_reference:
            return None
        self._shadow_seen = True
        self._last_sample = time_to_sec(msg.header.stamp)
        has_hand = bool(msg.has_hand_divergence)
        window = self.shadow.add(
            self._last_sample,
            float(msg.hand_max_divergence) if has_hand else None,
            float(msg.hand_final_divergence) if has_hand else None,
        )
        return self._report(window)

    def wants_estop(self) -> bool:
        """True once per ERROR window when estop_on_error is set (the node calls the service)."""
        window = self.last_window
        if not (self.estop_on_error and window is not None and window.level is Level.ERROR):
            return False
        self.last_window = None
        self.estop_requests += 1
        return True

    def diagnostics_msg(self, now: float) -> Any:
        """/diagnostics: STALE without a reference or fresh input, else the last window's level."""
        level, message = self.status(now)
        window = self.last_window
        values: dict[str, object] = {
            "bit_config": self.bit_config,
            "active": self.monitor.active,
            "has_reference": self.has_reference,
            "reference": "recorded"
            if self.has_reference
            else "shadow"
            if self._shadow_seen
            else "none",
        }
        if window is not None:
            values.update(
                {k: v for k, v in window.to_dict().items() if isinstance(v, float | int | str)}
            )
        status = (f"daptq {NODE}", LEVEL_NAMES[level], message, values)
        return diagnostic_array_msg(self.types, sec_to_ns(now), [status])

    def status(self, now: float) -> tuple[Level, str]:
        """The level and its reason at `now` (s, the clock of the sample stamps)."""
        stale = [r for r in (self._reference_problem(), self._input_problem(now)) if r]
        if stale:
            return Level.STALE, "; ".join(stale)
        window = self.last_window
        if window is None:
            return Level.OK, "ok"
        return window.level, window.reason or "ok"

    def _reference_problem(self) -> str:
        if self.has_reference or self._shadow_seen:
            return ""
        return (
            "no reference trajectory to compare against: set the reference_bag parameter to a "
            "recorded rosbag2 run (e.g. an episode bag under RUN_DIR/<task>/ of `daptq eval "
            "--out RUN_DIR`), or publish a trajectory_msgs/JointTrajectory on "
            f"{self.params['reference_topic']} (parameter reference_topic), or run the policy "
            "node with a shadow (its shadow_bit_config parameter)"
        )

    def _input_problem(self, now: float) -> str:
        inputs = (
            f"joint_states on {self.params['joint_states_topic']} or ee_pose on "
            f"{self.params['ee_pose_topic']}"
        )
        fix = "check that the arm publishes them and the joint_states_topic / ee_pose_topic"
        if self._last_sample is None:
            return f"no {inputs} received yet; {fix} parameters"
        age, timeout = now - self._last_sample, self.monitor.config.stale_timeout_s
        if age > timeout:
            return f"no {inputs} for {age:.3g} s (stale_timeout_s {timeout:g} s); {fix} parameters"
        return ""

    def _start(self, stamp: float) -> None:
        if self._restart:
            self.monitor.start_episode(stamp)
            self._restart = False

    def _report(self, window: DriftWindow | None) -> Any | None:
        if window is None:
            return None
        self.last_window = window
        return drift_report_msg(self.types, window, self.bit_config)


def reference_from_bag(
    path: str, params: Mapping[str, Any], arm: ArmModel | None = None
) -> Trajectory:
    """The joint states and poses (topic, else FK with `arm`) of a bag as a reference.

    ControlError (one line: the path, the cause, the fix) when the bag cannot be read.
    """
    folder = Path(path)
    joint_topic = str(params["joint_states_topic"])
    fix = (
        f"set reference_bag to a rosbag2 folder that recorded {joint_topic} (e.g. an episode "
        "bag under RUN_DIR/<task>/ of `daptq eval --out RUN_DIR`), or to '' and publish the "
        f"reference on {params['reference_topic']}"
    )
    if not folder.exists():
        raise ControlError(f"reference_bag {path} does not exist; {fix}")
    sources = Sources(
        joint_topic, str(params["ee_pose_topic"]), None if arm is None else arm.kinematics
    )
    try:
        return load_episode(BagEntry(folder, bag_info(folder)), sources).trajectory
    except (DaptqError, OSError) as error:
        cause = " ".join(str(error).split())
        raise ControlError(f"reference_bag {path} cannot be read ({cause}); {fix}") from error


def trajectory_from_msg(msg: Any, arm: ArmModel | None = None) -> Trajectory:
    """trajectory_msgs/JointTrajectory -> a reference (stamps = time_from_start; FK poses)."""
    points = list(msg.points)
    if len(points) < 2:
        raise DriftError("a reference JointTrajectory needs at least 2 points")
    stamps = np.array([time_to_sec(p.time_from_start) for p in points])
    positions = np.stack([np.asarray(p.positions, dtype=np.float64) for p in points])
    names = tuple(msg.joint_names)
    if arm is None:
        return Trajectory(stamps, positions, names)
    ee_positions, quats = arm.kinematics.fk_batch(
        arm.kinematics.q_from_joint_state(names, positions)
    )
    return Trajectory(stamps, positions, names, ee_positions, quats)


def drift_report_msg(types: TypeSource, window: DriftWindow, bit_config: str) -> Any:
    """daptq_ros_interfaces/DriftReport from a closed window (missing metrics as NaN)."""

    def value(x: float | None) -> float:
        return math.nan if x is None else float(x)

    cls = message_class(types, DRIFT_REPORT)
    return cls(
        header=header(types, sec_to_ns(window.window_end)),
        window_start=sec_to_time(types, window.window_start),
        window_end=sec_to_time(types, window.window_end),
        samples=window.samples,
        joint_names=list(window.joint_names),
        joint_rms_error=float_sequence(cls, np.asarray(window.joint_rms_error, dtype=np.float64)),
        joint_max_error=float_sequence(cls, np.asarray(window.joint_max_error, dtype=np.float64)),
        joint_final_error=float_sequence(
            cls, np.asarray(window.joint_final_error, dtype=np.float64)
        ),
        ee_position_rmse=value(window.ee_position_rmse),
        ee_position_max_error=value(window.ee_position_max_error),
        ee_position_final_error=value(window.ee_position_final_error),
        ee_rotation_rmse=value(window.ee_rotation_rmse),
        cumulative_drift=value(window.cumulative_drift),
        drift_growth_rate=value(window.drift_growth_rate),
        dtw_distance=value(window.dtw_distance),
        dtw_lag=value(window.dtw_lag),
        level=int(window.level),
        reason=window.reason,
        bit_config=bit_config,
    )
