"""Tests of drift.monitor: one behaviour of the online drift monitor each."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from daptq_ros.drift import metrics
from daptq_ros.drift.metrics import Trajectory
from daptq_ros.drift.monitor import DriftMonitor, DriftWindow, Level, MonitorConfig
from daptq_ros.errors import ConfigError, DriftError

MSG = Path(__file__).resolve().parents[2] / "daptq_ros_interfaces" / "msg" / "DriftReport.msg"
NAMES = ["j0", "j1", "j2"]
T0 = 1000.0  # executed stamps are absolute; the reference starts at 0
DT = 0.01


def _joints(t: np.ndarray) -> np.ndarray:
    return np.stack([np.sin(t), np.cos(t), 0.1 * t], axis=1)


def _positions(t: np.ndarray) -> np.ndarray:
    return np.stack([0.3 * np.cos(t), 0.2 * np.sin(t), 0.05 * t], axis=1)


def _quaternions(t: np.ndarray) -> np.ndarray:
    return Rotation.from_rotvec(np.outer(t, [0.0, 0.0, 0.3])).as_quat()


def _reference(duration: float = 10.0, dt: float = 0.05) -> Trajectory:
    t = np.arange(0.0, duration + dt / 2, dt)
    return Trajectory(t, _joints(t), tuple(NAMES), _positions(t), _quaternions(t))


def _monitor(reference: Trajectory | None = None, **config: float) -> DriftMonitor:
    monitor = DriftMonitor(MonitorConfig(**config))
    monitor.set_reference(reference or _reference())
    monitor.start_episode(T0)
    return monitor


def _times(start: float, stop: float) -> np.ndarray:
    return np.arange(round(start / DT), round(stop / DT)) * DT


def _feed(monitor: DriftMonitor, times: np.ndarray, offset: float = 0.0) -> list[DriftWindow]:
    """Feed joint states q(t) + offset at T0 + t; return the windows they closed."""
    windows = [
        monitor.update_joints(T0 + t, NAMES, _joints(np.array([t]))[0] + offset) for t in times
    ]
    return [w for w in windows if w is not None]


def _feed_poses(
    monitor: DriftMonitor,
    reference: Trajectory,
    times: np.ndarray,
    shift=(0.0, 0.0, 0.0),
    angle: float = 0.0,
) -> list[DriftWindow]:
    """Feed the reference pose interpolated at t, moved by shift(t) and turned `angle` rad
    further about z, at T0 + t; return the windows they closed."""
    t = np.asarray(times)
    positions = metrics.interpolate_linear(reference.stamps, reference.ee_positions, t)
    rotations = metrics.interpolate_rotations(reference.stamps, reference.ee_quaternions, t)
    turn = Rotation.from_rotvec([0.0, 0.0, angle])
    windows = []
    for ti, position, quaternion in zip(t, positions, rotations, strict=True):
        moved = position + (shift(ti) if callable(shift) else shift)
        turned = (Rotation.from_quat(quaternion) * turn).as_quat()
        windows.append(monitor.update_pose(T0 + ti, moved, turned))
    return [w for w in windows if w is not None]


# --- the message contract -------------------------------------------------------------------


def test_levels_equal_the_message_constants():
    constants = dict(re.findall(r"uint8 LEVEL_(\w+)=(\d+)", MSG.read_text()))
    assert {name: int(value) for name, value in constants.items()} == {
        level.name: level.value for level in Level
    }


def test_window_carries_every_message_field_but_header_and_bit_config():
    declared = re.findall(r"^\S+\s+(\w+)\s*(?:#.*)?$", MSG.read_text(), flags=re.MULTILINE)
    window = _feed(_monitor(), _times(0.0, 1.01))[0]
    assert set(declared) - {"header", "bit_config"} <= set(window.to_dict())


def test_window_to_dict_is_json_ready():
    window = _feed(_monitor(), _times(0.0, 1.01))[0]
    assert json.loads(json.dumps(window.to_dict()))["level"] == 0


# --- configuration --------------------------------------------------------------------------


def test_config_rejects_a_nonpositive_window():
    with pytest.raises(ConfigError, match="window_s"):
        MonitorConfig(window_s=0.0)


def test_config_rejects_a_warn_threshold_above_the_error_threshold():
    with pytest.raises(ConfigError, match="joint_rms_warn"):
        MonitorConfig(joint_rms_warn=0.5, joint_rms_error=0.1)


def test_config_rejects_a_tiny_capacity():
    with pytest.raises(ConfigError, match="capacity"):
        MonitorConfig(capacity=2)


def test_reference_without_joint_names_is_an_error():
    t = np.arange(0.0, 1.0, 0.1)
    with pytest.raises(DriftError, match="joint_names"):
        DriftMonitor().set_reference(Trajectory(t, joint_positions=_joints(t)))


# --- windows --------------------------------------------------------------------------------


def test_a_window_closes_after_window_s():
    windows = _feed(_monitor(), _times(0.0, 1.5))
    assert len(windows) == 1
    assert (windows[0].window_start, windows[0].window_end) == (T0, T0 + 1.0)
    assert windows[0].joint_samples == 100


def test_matching_the_reference_is_ok():
    window = _feed(_monitor(), _times(0.0, 1.01))[0]
    assert (window.level, window.reason) == (Level.OK, "")
    np.testing.assert_allclose(window.joint_rms_error, 0.0, atol=2e-3)


def test_a_constant_joint_offset_is_recovered():
    window = _feed(_monitor(), _times(0.0, 1.01), offset=0.03)[0]
    np.testing.assert_allclose(window.joint_rms_error, 0.03, atol=2e-3)
    np.testing.assert_allclose(window.joint_max_error, 0.03, atol=2e-3)
    np.testing.assert_allclose(window.joint_final_error, 0.03, atol=2e-3)


def test_an_error_above_the_error_threshold_is_error_naming_the_joint():
    window = _feed(_monitor(), _times(0.0, 1.01), offset=np.array([0.0, 0.3, 0.0]))[0]
    assert window.level == Level.ERROR
    assert "'j1'" in window.reason and "joint_rms_error" in window.reason


def test_an_error_between_the_thresholds_is_warn():
    window = _feed(_monitor(), _times(0.0, 1.01), offset=0.1)[0]
    assert window.level == Level.WARN
    assert "joint_rms_warn" in window.reason


def test_linear_interpolation_of_the_reference_is_exact_between_its_samples():
    reference = _reference(dt=0.1)
    monitor = _monitor(reference)
    t = _times(0.0, 1.01)
    exact = metrics.interpolate_linear(reference.stamps, reference.joint_positions, t)
    windows = [monitor.update_joints(T0 + ti, NAMES, q) for ti, q in zip(t, exact, strict=True)]
    window = next(w for w in windows if w is not None)
    np.testing.assert_allclose(window.joint_max_error, 0.0, atol=1e-12)


def test_a_gap_skips_the_empty_windows():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 0.5))
    closed = monitor.update_joints(T0 + 3.2, NAMES, _joints(np.array([3.2]))[0])
    assert closed is not None and closed.window_start == T0
    late = _feed(monitor, _times(4.0, 4.01))
    assert late[0].window_start == T0 + 3.0


def test_a_window_without_accepted_samples_is_stale():
    monitor = _monitor()
    window = monitor.update_joints(T0 + 1.5, NAMES, _joints(np.array([1.5]))[0])
    assert window is not None and window.level == Level.STALE
    assert window.samples == 0


def test_ring_overflow_keeps_the_newest_samples_and_warns():
    window = _feed(_monitor(capacity=8), _times(0.0, 1.01))[0]
    assert window.joint_samples == 8
    assert window.level == Level.WARN and "capacity" in window.reason


def test_dtw_lag_of_a_late_robot_is_recovered():
    monitor = _monitor(window_s=2.0)
    times = _times(0.0, 4.01)
    windows = [monitor.update_joints(T0 + t, NAMES, _joints(np.array([t - 0.1]))[0]) for t in times]
    second = [w for w in windows if w is not None][1]
    assert second.dtw_lag == pytest.approx(0.1, rel=0.05)


# --- episodes -------------------------------------------------------------------------------


def test_updates_before_an_episode_are_ignored():
    monitor = DriftMonitor()
    monitor.set_reference(_reference())
    assert monitor.update_joints(T0, NAMES, [0.0, 1.0, 0.0]) is None
    assert not monitor.active


def test_updates_without_a_reference_are_ignored():
    monitor = DriftMonitor()
    monitor.start_episode(T0)
    assert monitor.update_joints(T0 + 5.0, NAMES, [0.0, 1.0, 0.0]) is None


def test_stop_episode_returns_the_partial_window():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 0.5))
    window = monitor.stop_episode()
    assert window is not None and window.joint_samples == 50
    assert window.window_end == pytest.approx(T0 + 0.49)
    assert monitor.update_joints(T0 + 0.6, NAMES, [0.0, 1.0, 0.0]) is None


def test_stop_episode_without_input_returns_none():
    assert _monitor().stop_episode() is None


def test_start_episode_resets_the_counters():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 0.5))
    monitor.update_joints(T0, NAMES, [0.0, 1.0, 0.0])  # out of order: dropped
    monitor.start_episode(T0 + 100.0)
    windows = [
        monitor.update_joints(T0 + 100.0 + t, NAMES, _joints(np.array([t]))[0])
        for t in _times(0.0, 1.01)
    ]
    window = next(w for w in windows if w is not None)
    assert window.dropped == 0 and window.level == Level.OK


def test_reference_start_sets_the_time_base():
    monitor = DriftMonitor()
    monitor.set_reference(_reference(), start=T0 + 0.5)
    monitor.start_episode(T0)
    times = _times(0.5, 1.51)
    windows = [monitor.update_joints(T0 + t, NAMES, _joints(np.array([t - 0.5]))[0]) for t in times]
    window = next(w for w in windows if w is not None)
    np.testing.assert_allclose(window.joint_rms_error, 0.0, atol=2e-3)


def test_a_reference_swap_applies_to_later_samples_only():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 0.5))
    reference = _reference()
    shifted = Trajectory(reference.stamps, reference.joint_positions + 0.1, tuple(NAMES))
    monitor.set_reference(shifted)
    window = _feed(monitor, _times(0.5, 1.01))[0]
    # 50 samples with error 0 and 50 with error 0.1: rms = sqrt(50 * 0.01 / 100).
    np.testing.assert_allclose(window.joint_rms_error, math.sqrt(0.005), atol=2e-3)


def test_a_swap_to_other_joints_mid_episode_is_an_error():
    monitor = _monitor()
    t = np.arange(0.0, 1.0, 0.1)
    other = Trajectory(t, joint_positions=np.zeros((10, 1)), joint_names=("k0",))
    with pytest.raises(DriftError, match="stop the episode"):
        monitor.set_reference(other)


# --- input faults ---------------------------------------------------------------------------


def test_joints_in_another_order_are_matched_by_name():
    monitor = _monitor()
    windows = [
        monitor.update_joints(T0 + t, NAMES[::-1], _joints(np.array([t]))[0][::-1])
        for t in _times(0.0, 1.01)
    ]
    window = next(w for w in windows if w is not None)
    np.testing.assert_allclose(window.joint_rms_error, 0.0, atol=2e-3)


def test_a_name_missing_from_the_reference_is_an_error_naming_both_lists():
    with pytest.raises(DriftError, match=r"\['j0', 'j1', 'gripper'\].*\['j0', 'j1', 'j2'\]"):
        _monitor().update_joints(T0, ["j0", "j1", "gripper"], [0.0, 0.0, 0.0])


def test_positions_that_do_not_fit_the_names_are_an_error():
    with pytest.raises(DriftError, match="one position per name"):
        _monitor().update_joints(T0, NAMES, [0.0, 0.0])


def test_a_bad_message_does_not_close_the_window():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 1.0))
    with pytest.raises(DriftError):
        monitor.update_joints(T0 + 1.5, ["j0", "j1", "gripper"], [0.0, 0.0, 0.0])
    window = _feed(monitor, _times(1.0, 1.01))[0]
    assert window.joint_samples == 100


def test_a_pose_of_the_wrong_shape_is_an_error():
    with pytest.raises(DriftError, match="give 3 and 4 values"):
        _monitor().update_pose(T0, [0.0, 0.0], [0.0, 0.0, 0.0, 1.0])


def test_a_duplicate_stamp_is_dropped_and_counted():
    monitor = _monitor()
    monitor.update_joints(T0 + 0.2, NAMES, _joints(np.array([0.2]))[0])
    assert monitor.update_joints(T0 + 0.2, NAMES, [9.0, 9.0, 9.0]) is None
    window = _feed(monitor, _times(0.3, 1.01))[0]
    assert window.dropped == 1 and window.level == Level.OK


def test_an_out_of_order_stamp_is_dropped_and_counted():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 0.5))
    monitor.update_joints(T0 + 0.1, NAMES, [9.0, 9.0, 9.0])
    window = _feed(monitor, _times(0.5, 1.01))[0]
    assert window.dropped == 1
    assert window.joint_samples == 100


def test_a_nan_stamp_is_dropped():
    monitor = _monitor()
    monitor.update_joints(math.nan, NAMES, [0.0, 1.0, 0.0])
    window = _feed(monitor, _times(0.0, 1.01))[0]
    assert window.dropped == 1


def test_a_nan_joint_is_rejected_counted_and_warned():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 0.5))
    monitor.update_joints(T0 + 0.505, NAMES, [0.0, math.nan, 0.0])
    window = _feed(monitor, _times(0.51, 1.01))[0]
    assert window.rejected == 1 and window.joint_samples == 99  # t = 0.50 was never sent
    assert window.level == Level.WARN and "NaN" in window.reason
    np.testing.assert_allclose(window.joint_max_error, 0.0, atol=2e-3)


def test_a_pose_with_a_zero_quaternion_is_rejected():
    reference = _reference()
    monitor = _monitor(reference)
    monitor.update_pose(T0 + 0.1, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    window = _feed_poses(monitor, reference, _times(0.2, 1.01))[0]
    assert window.rejected == 1


def test_time_beyond_the_reference_end_holds_its_last_point():
    monitor = _monitor(_reference(duration=1.5))
    window = _feed(monitor, _times(0.0, 2.01))[1]  # [1, 2): 0.5 s past the end
    assert window.held == 49  # t = 1.51 .. 1.99; 1.50 is the reference's last sample
    assert window.level == Level.WARN and "after the reference end" in window.reason
    last = _joints(np.array([1.5]))[0]
    assert window.joint_final_error[0] == pytest.approx(abs(math.sin(1.99) - last[0]))


def test_a_late_pose_after_the_joints_closed_the_window_is_dropped():
    monitor = _monitor()
    _feed(monitor, _times(0.0, 1.02))
    assert monitor.update_pose(T0 + 0.99, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]) is None
    window = _feed(monitor, _times(1.02, 2.01))[0]
    assert window.dropped == 1


# --- end-effector poses ---------------------------------------------------------------------


def test_pose_errors_drift_and_growth_rate():
    # The position deviation grows as 0.01 t along x: rate 0.01 m/s; over the samples
    # t = 0 .. 0.99 its integral is 0.01 * 0.99^2 / 2 (the trapezoid is exact for a line).
    def shift(t: float) -> tuple[float, float, float]:
        return (0.01 * t, 0.0, 0.0)

    reference = _reference()
    window = _feed_poses(_monitor(reference), reference, _times(0.0, 1.01), shift)[0]
    assert window.pose_samples == 100 and window.joint_samples == 0
    assert window.drift_growth_rate == pytest.approx(0.01)
    assert window.cumulative_drift == pytest.approx(0.01 * 0.99**2 / 2)
    assert window.ee_position_final_error == pytest.approx(0.0099)


def test_a_constant_rotation_offset_is_recovered():
    reference = _reference()
    window = _feed_poses(_monitor(reference), reference, _times(0.0, 1.01), angle=0.05)[0]
    assert window.ee_rotation_rmse == pytest.approx(0.05)
    assert window.ee_position_rmse == pytest.approx(0.0, abs=1e-12)


def test_a_reference_without_rotations_gives_no_rotation_error():
    reference = _reference()
    monitor = _monitor(Trajectory(reference.stamps, ee_positions=reference.ee_positions))
    window = _feed_poses(monitor, reference, _times(0.0, 1.01))[0]
    assert window.ee_rotation_rmse is None and window.ee_position_rmse is not None


def test_a_joint_only_window_has_no_end_effector_fields():
    window = _feed(_monitor(), _times(0.0, 1.01))[0]
    assert window.ee_position_rmse is None and window.cumulative_drift is None
    assert window.dtw_distance is not None


# --- staleness ------------------------------------------------------------------------------


def test_check_reports_stale_with_the_age():
    monitor = _monitor(stale_timeout_s=0.5)
    _feed(monitor, _times(0.0, 0.3))
    status = monitor.check(T0 + 1.29)
    assert status.level == Level.STALE
    assert status.age == pytest.approx(1.0)
    assert "1 s" in status.reason


def test_check_within_the_timeout_is_ok():
    monitor = _monitor(stale_timeout_s=0.5)
    _feed(monitor, _times(0.0, 0.3))
    assert monitor.check(T0 + 0.5).level == Level.OK


def test_check_outside_an_episode_is_ok():
    assert DriftMonitor().check(T0).level == Level.OK


def test_check_without_a_reference_is_stale():
    monitor = DriftMonitor()
    monitor.start_episode(T0)
    status = monitor.check(T0)
    assert status.level == Level.STALE and "set_reference" in status.reason
