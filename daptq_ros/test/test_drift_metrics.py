"""Tests of drift.metrics: each metric against a case computed by hand, plus recovery tests."""

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from daptq_ros.drift import metrics, pose_errors
from daptq_ros.drift.metrics import Trajectory, compute_metrics
from daptq_ros.errors import DaptqError, DriftError


def _curve(t: np.ndarray) -> np.ndarray:
    """A smooth, non-repeating 3-D path (m) for lag and offset tests."""
    return np.stack([0.3 * np.cos(1.3 * t), 0.2 * np.sin(0.9 * t), 0.05 * t * t], axis=1)


def _brute_dtw(x: np.ndarray, y: np.ndarray) -> float:
    """Unbanded DTW by the textbook double loop, as an independent check."""
    d = np.full((len(x) + 1, len(y) + 1), np.inf)
    d[0, 0] = 0.0
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            cost = np.linalg.norm(x[i - 1] - y[j - 1])
            d[i, j] = cost + min(d[i - 1, j - 1], d[i - 1, j], d[i, j - 1])
    return float(d[-1, -1])


# --- input checks ---------------------------------------------------------------------------


def test_drift_error_is_a_daptq_error():
    assert issubclass(DriftError, DaptqError)


def test_stamps_not_increasing_are_rejected_with_the_index():
    with pytest.raises(DriftError, match="index 2"):
        metrics.check_stamps([0.0, 1.0, 1.0, 2.0])


def test_stamps_with_nan_are_rejected():
    with pytest.raises(DriftError, match="NaN"):
        metrics.check_stamps([0.0, math.nan])


def test_stamps_must_be_one_dimensional():
    with pytest.raises(DriftError, match="1-D"):
        metrics.check_stamps(np.zeros((2, 2)))


def test_trajectory_rows_must_match_stamps():
    with pytest.raises(DriftError, match="3 rows but there are 2 stamps"):
        Trajectory([0.0, 1.0], joint_positions=np.zeros((3, 2)))


def test_trajectory_needs_joints_or_poses():
    with pytest.raises(DriftError, match="joint_positions, ee_positions"):
        Trajectory([0.0, 1.0])


def test_trajectory_quaternions_need_positions():
    with pytest.raises(DriftError, match="need ee_positions"):
        Trajectory([0.0, 1.0], joint_positions=np.zeros((2, 1)), ee_quaternions=np.eye(4)[:2])


def test_trajectory_rejects_a_zero_quaternion():
    with pytest.raises(DriftError, match="zero norm"):
        Trajectory([0.0, 1.0], ee_positions=np.zeros((2, 3)), ee_quaternions=np.zeros((2, 4)))


def test_trajectory_names_must_fit_the_columns():
    with pytest.raises(DriftError, match="2 joint_names"):
        Trajectory([0.0, 1.0], joint_positions=np.zeros((2, 3)), joint_names=("a", "b"))


def test_trajectory_normalises_quaternions():
    traj = Trajectory([0.0, 1.0], ee_positions=np.zeros((2, 3)), ee_quaternions=[[0, 0, 0, 2]] * 2)
    np.testing.assert_allclose(traj.ee_quaternions, [[0, 0, 0, 1]] * 2)


def test_align_rejects_an_empty_overlap():
    executed = Trajectory([5.0, 6.0], joint_positions=np.zeros((2, 1)))
    reference = Trajectory([0.0, 1.0], joint_positions=np.zeros((2, 1)))
    with pytest.raises(DriftError, match="no overlap"):
        metrics.align(executed, reference)


def test_align_rejects_different_joint_counts_without_names():
    executed = Trajectory([0.0, 1.0], joint_positions=np.zeros((2, 2)))
    reference = Trajectory([0.0, 1.0], joint_positions=np.zeros((2, 3)))
    with pytest.raises(DriftError, match="2 joints, reference 3"):
        metrics.align(executed, reference)


def test_joint_order_names_both_lists_when_a_name_is_unknown():
    with pytest.raises(DriftError, match=r"\['a', 'x'\].*\['a', 'b'\]"):
        metrics.joint_order(["a", "x"], ["a", "b"])


def test_joint_order_reorders_by_name():
    np.testing.assert_array_equal(metrics.joint_order(["c", "a", "b"], ["a", "b", "c"]), [1, 2, 0])


# --- interpolation --------------------------------------------------------------------------


def test_linear_interpolation_by_hand():
    # v = 0, 2, 6 at t = 0, 1, 3: t=0.5 -> 1; t=2 -> 2 + (2-1)/(3-1) * 4 = 4; t=5 -> held 6.
    out = metrics.interpolate_linear(
        np.array([0.0, 1.0, 3.0]), np.array([[0.0], [2.0], [6.0]]), np.array([0.5, 2.0, 5.0])
    )
    np.testing.assert_allclose(out[:, 0], [1.0, 4.0, 6.0])


def test_slerp_halfway_between_0_and_90_degrees_about_z_is_45_degrees():
    # Halfway in time -> half the angle: 45 deg about z = [0, 0, sin(22.5 deg), cos(22.5 deg)].
    quats = Rotation.from_euler("z", [[0.0], [90.0]], degrees=True).as_quat()
    out = metrics.interpolate_rotations(np.array([0.0, 1.0]), quats, np.array([0.5]))
    half = math.radians(22.5)
    np.testing.assert_allclose(np.abs(out[0]), [0.0, 0.0, math.sin(half), math.cos(half)])


# --- errors ---------------------------------------------------------------------------------


def test_joint_errors_by_hand():
    # |e| column 0 = 0, 1, 2: rms = sqrt(5/3), max 2, final 2.
    # |e| column 1 = 0, 1, 0: rms = sqrt(1/3), max 1, final 0.
    q_exec = np.array([[0.0, 0.0], [1.0, -1.0], [2.0, 0.0]])
    rms, worst, final = metrics.joint_errors(q_exec, np.zeros((3, 2)))
    np.testing.assert_allclose(rms, [math.sqrt(5 / 3), math.sqrt(1 / 3)])
    np.testing.assert_allclose(worst, [2.0, 1.0])
    np.testing.assert_allclose(final, [2.0, 0.0])


def test_position_errors_by_hand():
    # d = ||(3, 4, 0)|| = 5 then 0: rmse = sqrt(25/2), max 5, final 0.
    p_exec = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    rmse, worst, final = pose_errors.position_errors(p_exec, np.zeros((2, 3)))
    assert rmse == pytest.approx(math.sqrt(12.5))
    assert (worst, final) == (pytest.approx(5.0), pytest.approx(0.0))


def test_rotation_rmse_by_hand():
    # 0.3 rad about x and 0.4 rad about y against identity: sqrt((0.09 + 0.16) / 2).
    quat_exec = Rotation.from_rotvec([[0.3, 0, 0], [0, 0.4, 0]]).as_quat()
    quat_ref = np.array([[0.0, 0, 0, 1], [0.0, 0, 0, 1]])
    np.testing.assert_allclose(pose_errors.rotation_angles(quat_exec, quat_ref), [0.3, 0.4])
    assert pose_errors.rotation_rmse(quat_exec, quat_ref) == pytest.approx(math.sqrt(0.125))


def test_rotation_angle_ignores_the_quaternion_sign():
    q = Rotation.from_rotvec([0.2, 0, 0]).as_quat()
    assert pose_errors.rotation_angles(-q[None], q[None])[0] == pytest.approx(0.0, abs=1e-7)


# --- drift ----------------------------------------------------------------------------------


def test_cumulative_drift_by_hand():
    # t = 0, 1, 3; d = 0, 2, 2: steps 1 * (0+2)/2 = 1 and 2 * (2+2)/2 = 4 -> 0, 1, 5.
    out = metrics.cumulative_drift(np.array([0.0, 1.0, 3.0]), np.array([0.0, 2.0, 2.0]))
    np.testing.assert_allclose(out, [0.0, 1.0, 5.0])


def test_growth_rate_by_hand():
    # t = 0, 1, 2 (mean 1); d = 1, 1, 4 (mean 2): (1*1 + 0 + 1*2) / (1 + 0 + 1) = 1.5.
    rate = metrics.drift_growth_rate(np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 4.0]))
    assert rate == pytest.approx(1.5)


def test_growth_rate_of_one_sample_is_none():
    assert metrics.drift_growth_rate(np.array([0.0]), np.array([1.0])) is None


# --- DTW ------------------------------------------------------------------------------------


def test_dtw_by_hand():
    # x = 0, 1, 1.5, 3 and y = 0, 1, 3 (1-D, cost |x_i - y_j|). Accumulated D by rows:
    #   i=0: 0   1    4
    #   i=1: 1   0    2
    #   i=2: 2.5 0.5  1.5
    #   i=3: 5.5 2.5  0.5
    # Back from (3, 2): (2, 1) = 0.5 -> (1, 1) = 0 -> (0, 0): total 0.5 over 4 steps = 0.125.
    # Lags t_x[i] - t_y[j] on the path with t_x = 0..3, t_y = 0..2: 0, 0, 1, 1 -> median 0.5.
    result = metrics.dtw([0.0, 1.0, 1.5, 3.0], [0.0, 1.0, 3.0], [0, 1, 2, 3], [0, 1, 2], 1)
    assert result.total == pytest.approx(0.5)
    assert result.distance == pytest.approx(0.125)
    np.testing.assert_array_equal(result.path, [[0, 0], [1, 1], [2, 1], [3, 2]])
    assert result.lag == pytest.approx(0.5)


@pytest.mark.parametrize(("n", "m"), [(6, 6), (7, 13), (13, 7), (1, 4), (4, 1)])
def test_dtw_with_a_wide_band_equals_unbanded_dtw(n, m):
    rng = np.random.default_rng(n * 100 + m)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    result = metrics.dtw(x, y, np.arange(n), np.arange(m), window=max(n, m))
    assert result.total == pytest.approx(_brute_dtw(x, y))
    path_cost = sum(np.linalg.norm(x[i] - y[j]) for i, j in result.path)
    assert path_cost == pytest.approx(result.total)


def test_dtw_narrow_band_costs_at_least_the_unbanded_optimum():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    narrow = metrics.dtw(x, y, np.arange(30), np.arange(30), window=1)
    assert narrow.total >= _brute_dtw(x, y) - 1e-9
    assert np.abs(narrow.path[:, 0] - narrow.path[:, 1]).max() <= 1


def test_dtw_of_long_sequences_stays_in_the_band():
    # 50 000 x 50 000 as a full float matrix would need 20 GB; the band needs a few MB.
    x = np.linspace(0.0, 1.0, 50_000)
    result = metrics.dtw(x, x, np.arange(50_000), np.arange(50_000), window=3)
    assert result.total == 0.0
    assert len(result.path) == 50_000


def test_dtw_rejects_mismatched_stamps():
    with pytest.raises(DriftError, match="one stamp per row"):
        metrics.dtw([0.0, 1.0], [0.0, 1.0], [0.0], [0.0, 1.0], 1)


# --- path length and jerk -------------------------------------------------------------------


def test_path_length_ratio_by_hand():
    # Executed (0,0) -> (3,4): 5. Reference (0,0) -> (1,0): 1. Ratio 5.
    ratio = metrics.path_length_ratio(np.array([[0.0, 0], [3, 4]]), np.array([[0.0, 0], [1, 0]]))
    assert ratio == pytest.approx(5.0)


def test_path_length_ratio_of_a_still_reference_is_none():
    assert metrics.path_length_ratio(np.ones((3, 2)), np.zeros((3, 2))) is None


def test_jerk_of_a_cubic_on_an_uneven_grid_by_hand():
    # x = t^3 at t = 0, 1, 3, 4 -> 0, 1, 27, 64. Divided differences:
    # first 1, 13, 37; second (13-1)/3 = 4, (37-13)/3 = 8; third (8-4)/4 = 1 -> jerk 6 * 1 = 6.
    t = np.array([0.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(metrics.jerk(t, t**3), [[6.0]])


def test_jerk_rms_by_hand():
    # (t^3, 2 t^3) has jerk (6, 12): norm sqrt(36 + 144) = sqrt(180) at every sample.
    t = np.array([0.0, 0.5, 1.0, 2.0, 2.5])
    values = np.stack([t**3, 2 * t**3], axis=1)
    assert metrics.jerk_rms(t, values) == pytest.approx(math.sqrt(180.0))


def test_jerk_rms_below_four_samples_is_none():
    assert metrics.jerk_rms(np.array([0.0, 1.0, 2.0]), np.zeros((3, 1))) is None


# --- compute_metrics ------------------------------------------------------------------------


def _pose_trajectory(t: np.ndarray, positions: np.ndarray) -> Trajectory:
    quats = Rotation.from_rotvec(np.outer(t, [0.0, 0.0, 0.2])).as_quat()
    return Trajectory(t, ee_positions=positions, ee_quaternions=quats)


def test_constant_offset_is_recovered():
    t = np.arange(0.0, 4.0, 0.01)
    offset = np.array([0.03, -0.04, 0.0])  # |offset| = 0.05 m
    names = ("a", "b")
    joints = np.stack([np.sin(t), np.cos(t)], axis=1)
    reference = Trajectory(t, joints, names, _curve(t))
    executed = Trajectory(t, joints + np.array([0.1, -0.2]), names, _curve(t) + offset)
    result = compute_metrics(executed, reference)
    np.testing.assert_allclose(result.joint_rms_error, [0.1, 0.2])
    np.testing.assert_allclose(result.joint_max_error, [0.1, 0.2])
    np.testing.assert_allclose(result.joint_final_error, [0.1, 0.2])
    assert result.ee_position_rmse == pytest.approx(0.05)
    assert result.ee_position_final_error == pytest.approx(0.05)
    assert result.cumulative_drift == pytest.approx(0.05 * (t[-1] - t[0]))
    assert result.drift_growth_rate == pytest.approx(0.0, abs=1e-9)
    assert result.path_length_ratio == pytest.approx(1.0)


def test_known_lag_is_recovered_by_dtw():
    lag = 0.3
    t_exec = np.arange(0.0, 6.0, 0.01)
    t_ref = np.arange(0.0, 6.0, 0.02)  # another rate: the reference is interpolated
    reference = _pose_trajectory(t_ref, _curve(t_ref))
    executed = _pose_trajectory(t_exec, _curve(t_exec - lag))  # the robot runs `lag` s late
    result = compute_metrics(executed, reference, dtw_window_s=0.5)
    assert result.dtw_space == "ee_position"
    assert result.dtw_lag == pytest.approx(lag, rel=0.05)


def test_executed_ahead_gives_a_negative_lag_in_joint_space():
    t = np.arange(0.0, 6.0, 0.01)
    reference = Trajectory(t, joint_positions=_curve(t), joint_names=("x", "y", "z"))
    executed = Trajectory(t, joint_positions=_curve(t + 0.2), joint_names=("x", "y", "z"))
    result = compute_metrics(executed, reference, dtw_window_s=0.5)
    assert result.dtw_space == "joint"
    assert result.dtw_lag == pytest.approx(-0.2, rel=0.05)


def test_joints_are_matched_by_name():
    t = np.arange(0.0, 1.0, 0.1)
    joints = np.stack([t, 2 * t], axis=1)
    reference = Trajectory(t, joints, ("a", "b"))
    executed = Trajectory(t, joints[:, ::-1], ("b", "a"))
    np.testing.assert_allclose(compute_metrics(executed, reference).joint_rms_error, [0.0, 0.0])


def test_missing_poses_give_none_not_nan():
    t = np.arange(0.0, 1.0, 0.1)
    trajectory = Trajectory(t, joint_positions=np.stack([t], axis=1))
    result = compute_metrics(trajectory, trajectory)
    for key in ("ee_position_rmse", "ee_rotation_rmse", "cumulative_drift", "ee_jerk_rms"):
        assert getattr(result, key) is None
    assert result.joint_rms_error == (0.0,)


def test_missing_joints_give_none():
    t = np.arange(0.0, 1.0, 0.1)
    trajectory = _pose_trajectory(t, _curve(t))
    result = compute_metrics(trajectory, trajectory)
    assert result.joint_rms_error is None and result.joint_names is None
    assert result.ee_rotation_rmse == pytest.approx(0.0, abs=1e-7)


def test_no_shared_signal_is_an_error():
    t = np.arange(0.0, 1.0, 0.1)
    with pytest.raises(DriftError, match="share no signal"):
        compute_metrics(Trajectory(t, joint_positions=t[:, None]), _pose_trajectory(t, _curve(t)))


def test_only_the_overlap_is_scored():
    executed = Trajectory(np.arange(0.0, 3.0, 0.5), joint_positions=np.zeros((6, 1)))
    reference = Trajectory(np.array([1.0, 2.0]), joint_positions=np.zeros((2, 1)))
    result = compute_metrics(executed, reference)
    assert (result.samples, result.start, result.end) == (3, 1.0, 2.0)


def test_action_jerk_is_reported():
    t = np.array([0.0, 1.0, 3.0, 4.0])
    trajectory = Trajectory(t, joint_positions=t[:, None])
    result = compute_metrics(trajectory, trajectory, action_stamps=t, actions=t**3)
    assert result.action_jerk_rms == pytest.approx(6.0)


def test_actions_without_stamps_are_an_error():
    t = np.arange(0.0, 1.0, 0.1)
    trajectory = Trajectory(t, joint_positions=t[:, None])
    with pytest.raises(DriftError, match="together"):
        compute_metrics(trajectory, trajectory, actions=np.zeros((10, 1)))


def test_metrics_to_dict_is_json_ready():
    t = np.arange(0.0, 1.0, 0.1)
    trajectory = Trajectory(t, joint_positions=t[:, None], joint_names=("a",))
    data = compute_metrics(trajectory, trajectory).to_dict()
    assert json.loads(json.dumps(data))["joint_names"] == ["a"]
