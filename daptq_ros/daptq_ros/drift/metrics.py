"""Drift metrics of an executed robot trajectory against a reference trajectory.

Time alignment (the reference interpolated onto executed stamps), joint and end-effector
errors, cumulative drift and its growth rate, banded DTW with the lag it implies, path-length
ratio and jerk; APE and RPE (pose_errors.py) as evo defines them, for each pair.
numpy and scipy only: the online monitor and the offline analysis share these.
Units: joints in their own unit (rad or m), positions in m, rotations in rad (APE and RPE
rotations in degrees, as evo reports them), times in s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation, Slerp

from daptq_ros.drift.pose_errors import (
    PoseErrorSettings,
    ape,
    apply_similarity,
    position_deviation,
    position_errors,
    rotation_rmse,
    rpe,
    rpe_index_pairs,
    umeyama,
)
from daptq_ros.errors import DriftError


def check_stamps(stamps: ArrayLike, name: str = "stamps") -> np.ndarray:
    """Return `stamps` as a float array [N]; DriftError unless finite and strictly increasing."""
    t = np.array(stamps, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise DriftError(f"{name}: expected a non-empty 1-D array of times in s, got {t.shape}")
    if not np.isfinite(t).all():
        raise DriftError(f"{name}: contains NaN or inf; drop those samples before comparing")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0])
        raise DriftError(
            f"{name}: not strictly increasing at index {i + 1} ({t[i]!r} then {t[i + 1]!r}); "
            "sort the samples by time and drop duplicate stamps"
        )
    return t


def _rows(
    values: ArrayLike, name: str, n: int | None = None, width: int | None = None
) -> np.ndarray:
    """`values` as a finite float array [N, D] (a 1-D input is one column), checked in shape."""
    v = np.array(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise DriftError(f"{name}: expected a 2-D array [samples, dims], got shape {v.shape}")
    if n is not None and v.shape[0] != n:
        raise DriftError(f"{name}: has {v.shape[0]} rows but there are {n} stamps; give one each")
    if width is not None and v.shape[1] != width:
        raise DriftError(f"{name}: expected {width} columns, got {v.shape[1]}")
    if not np.isfinite(v).all():
        raise DriftError(f"{name}: contains NaN or inf; drop those samples before comparing")
    return v


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A timed trajectory: joint positions and/or end-effector poses at increasing stamps.

    stamps [N] s; joint_positions [N, J] with optional joint_names (J); ee_positions [N, 3] m;
    ee_quaternions [N, 4] xyzw (normalised on construction; they need ee_positions).
    """

    stamps: np.ndarray
    joint_positions: np.ndarray | None = None
    joint_names: tuple[str, ...] | None = None
    ee_positions: np.ndarray | None = None
    ee_quaternions: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = check_stamps(self.stamps, "Trajectory.stamps")
        n = len(t)
        object.__setattr__(self, "stamps", _frozen(t))
        if self.joint_positions is None and self.ee_positions is None:
            raise DriftError("Trajectory: give joint_positions, ee_positions or both")
        if self.joint_positions is not None:
            q = _rows(self.joint_positions, "Trajectory.joint_positions", n)
            object.__setattr__(self, "joint_positions", _frozen(q))
            if self.joint_names is not None:
                object.__setattr__(self, "joint_names", _check_names(self.joint_names, q))
        elif self.joint_names is not None:
            raise DriftError("Trajectory: joint_names given without joint_positions")
        if self.ee_positions is not None:
            p = _rows(self.ee_positions, "Trajectory.ee_positions", n, width=3)
            object.__setattr__(self, "ee_positions", _frozen(p))
        if self.ee_quaternions is not None:
            if self.ee_positions is None:
                raise DriftError("Trajectory: ee_quaternions need ee_positions (a pose is both)")
            quat = _rows(self.ee_quaternions, "Trajectory.ee_quaternions", n, width=4)
            norm = np.linalg.norm(quat, axis=1, keepdims=True)
            if (norm < 1e-9).any():
                raise DriftError("Trajectory.ee_quaternions: a quaternion has zero norm")
            object.__setattr__(self, "ee_quaternions", _frozen(quat / norm))

    def __len__(self) -> int:
        return len(self.stamps)


def _check_names(names: Sequence[str], q: np.ndarray) -> tuple[str, ...]:
    names = tuple(names)
    if len(names) != q.shape[1]:
        raise DriftError(
            f"Trajectory: {len(names)} joint_names {list(names)} for {q.shape[1]} joint columns"
        )
    if len(set(names)) != len(names):
        raise DriftError(f"Trajectory: joint_names {list(names)} contain a duplicate")
    return names


def joint_order(names: Sequence[str], reference_names: Sequence[str]) -> np.ndarray:
    """Indices that reorder columns named `names` into the order of `reference_names`.

    DriftError naming both lists when either holds a name the other lacks, or a duplicate.
    """
    index = {name: i for i, name in enumerate(names)}
    known = set(reference_names)
    unknown = [name for name in names if name not in known]
    missing = [name for name in reference_names if name not in index]
    if unknown or missing or len(index) != len(names):
        raise DriftError(
            f"joint names {list(names)} do not match the reference joint names "
            f"{list(reference_names)} (not in the reference: {unknown}, missing: {missing}); "
            "record the same joints as the reference"
        )
    return np.array([index[name] for name in reference_names], dtype=np.intp)


def interpolate_linear(t_ref: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Values [M, D] sampled at t_ref, interpolated linearly at times t; held outside t_ref.

    x(t) = v_k + (t - t_k) / (t_{k+1} - t_k) * (v_{k+1} - v_k) for t_k <= t <= t_{k+1}.
    """
    if len(t_ref) < 2:
        raise DriftError("interpolation needs a reference of at least 2 samples")
    k = np.clip(np.searchsorted(t_ref, t, side="right") - 1, 0, len(t_ref) - 2)
    w = np.clip((t - t_ref[k]) / (t_ref[k + 1] - t_ref[k]), 0.0, 1.0)
    return values[k] + w[:, None] * (values[k + 1] - values[k])


def interpolate_rotations(t_ref: np.ndarray, quaternions: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Unit quaternions [M, 4] (xyzw) at t_ref, slerped at times t; held outside t_ref.

    q(t) = q_k (q_k^-1 q_{k+1})^w, w = (t - t_k) / (t_{k+1} - t_k): constant angular velocity.
    """
    if len(t_ref) < 2:
        raise DriftError("interpolation needs a reference of at least 2 samples")
    slerp = Slerp(t_ref, Rotation.from_quat(quaternions))
    return slerp(np.clip(t, t_ref[0], t_ref[-1])).as_quat()


@dataclass(frozen=True, eq=False)
class AlignedPair:
    """Executed samples inside the reference's time span, with the reference at the same stamps.

    Each executed/reference pair is None when either trajectory lacks that signal.
    """

    stamps: np.ndarray
    joint_names: tuple[str, ...] | None
    exec_joints: np.ndarray | None
    ref_joints: np.ndarray | None
    exec_positions: np.ndarray | None
    ref_positions: np.ndarray | None
    exec_quaternions: np.ndarray | None
    ref_quaternions: np.ndarray | None


def align(executed: Trajectory, reference: Trajectory) -> AlignedPair:
    """Interpolate the reference at the executed stamps that fall inside its time span.

    Joints and positions are interpolated linearly, rotations by slerp. Joints are matched by
    name when both trajectories name them, else by column (the counts must then agree).
    """
    t_ref = reference.stamps
    if len(t_ref) < 2:
        raise DriftError("align: the reference needs at least 2 samples to interpolate")
    inside = (executed.stamps >= t_ref[0]) & (executed.stamps <= t_ref[-1])
    if not inside.any():
        raise DriftError(
            f"align: no overlap: executed spans [{executed.stamps[0]:.6g}, "
            f"{executed.stamps[-1]:.6g}] s, reference [{t_ref[0]:.6g}, {t_ref[-1]:.6g}] s; "
            "put both on one time base (e.g. seconds since the episode start)"
        )
    t = executed.stamps[inside]
    names = q_exec = q_ref = p_exec = p_ref = r_exec = r_ref = None
    if executed.joint_positions is not None and reference.joint_positions is not None:
        order = _column_order(executed, reference)
        names = reference.joint_names or executed.joint_names
        q_exec = executed.joint_positions[inside][:, order]
        q_ref = interpolate_linear(t_ref, reference.joint_positions, t)
    if executed.ee_positions is not None and reference.ee_positions is not None:
        p_exec = executed.ee_positions[inside]
        p_ref = interpolate_linear(t_ref, reference.ee_positions, t)
    if executed.ee_quaternions is not None and reference.ee_quaternions is not None:
        r_exec = executed.ee_quaternions[inside]
        r_ref = interpolate_rotations(t_ref, reference.ee_quaternions, t)
    return AlignedPair(t, names, q_exec, q_ref, p_exec, p_ref, r_exec, r_ref)


def _column_order(executed: Trajectory, reference: Trajectory) -> np.ndarray:
    if executed.joint_names is not None and reference.joint_names is not None:
        return joint_order(executed.joint_names, reference.joint_names)
    j_exec, j_ref = executed.joint_positions.shape[1], reference.joint_positions.shape[1]
    if j_exec != j_ref:
        raise DriftError(
            f"align: executed has {j_exec} joints, reference {j_ref}; give joint_names to both "
            "so the joints can be matched by name"
        )
    return np.arange(j_ref)


def joint_errors(
    q_exec: np.ndarray, q_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-joint (RMS, max, final) error over N aligned samples, each an array [J].

    e_ij = |q_exec_ij - q_ref_ij|; rms_j = sqrt(1/N sum_i e_ij^2); max_j = max_i e_ij;
    final_j = e_Nj.
    """
    e = np.abs(q_exec - q_ref)
    return np.sqrt(np.mean(e * e, axis=0)), e.max(axis=0), e[-1].copy()


def cumulative_drift(stamps: np.ndarray, deviation: np.ndarray) -> np.ndarray:
    """Running trapezoid integral of the deviation over time, [N] (m*s for positions).

    C_0 = 0; C_i = C_{i-1} + (t_i - t_{i-1}) (d_i + d_{i-1}) / 2.
    """
    steps = np.diff(stamps) * (deviation[1:] + deviation[:-1]) / 2.0
    return np.concatenate(([0.0], np.cumsum(steps)))


def drift_growth_rate(stamps: np.ndarray, deviation: np.ndarray) -> float | None:
    """Least-squares slope of deviation against time (m/s); None below 2 samples.

    rate = sum_i (t_i - t_mean)(d_i - d_mean) / sum_i (t_i - t_mean)^2.
    """
    if len(stamps) < 2:
        return None
    dt = stamps - stamps.mean()
    return float(np.dot(dt, deviation - deviation.mean()) / np.dot(dt, dt))


class DtwResult(NamedTuple):
    """Result of `dtw`: see its docstring for the definitions."""

    distance: float
    total: float
    path: np.ndarray
    lag: float


def dtw(x: ArrayLike, y: ArrayLike, t_x: ArrayLike, t_y: ArrayLike, window: int) -> DtwResult:
    """Dynamic time warping of x [N, D] against y [M, D] inside a Sakoe-Chiba band.

    D(i, j) = ||x_i - y_j|| + min(D(i-1, j-1), D(i-1, j), D(i, j-1)), D(0, 0) = ||x_0 - y_0||,
    over the cells |j - c_i| <= w around the diagonal c_i = floor(i (M-1) / (N-1)), with
    w = max(window, ceil((M-1) / (N-1)), 1) so the band stays connected. Only the band is
    stored: O(N w) time and memory. total = D(N-1, M-1); path = the optimal pairs (i, j) [K, 2]
    from (0, 0) to (N-1, M-1); distance = total / K (mean cost per step);
    lag = median over the path of t_x[i] - t_y[j] (positive: x lags y).
    """
    x2, y2 = _rows(x, "dtw x"), _rows(y, "dtw y")
    n, m = len(x2), len(y2)
    tx, ty = np.asarray(t_x, dtype=float), np.asarray(t_y, dtype=float)
    if x2.shape[1] != y2.shape[1] or tx.shape != (n,) or ty.shape != (m,):
        raise DriftError(
            f"dtw: x {x2.shape} with t_x {tx.shape} and y {y2.shape} with t_y {ty.shape} "
            "do not fit; give one stamp per row and the same number of columns"
        )
    if window < 0:
        raise DriftError(f"dtw: window must be >= 0 samples, got {window}")
    w = max(int(window), math.ceil((m - 1) / max(n - 1, 1)), 1)
    centre = (np.arange(n) * (m - 1)) // max(n - 1, 1)
    lo = np.maximum(centre - w, 0).tolist()
    hi = np.minimum(centre + w, m - 1).tolist()
    band = _dtw_band(x2, y2, lo, hi, w)
    path = _dtw_path(band, lo, n, m)
    total = float(band[n - 1, m - lo[n - 1]])
    lag = float(np.median(tx[path[:, 0]] - ty[path[:, 1]]))
    return DtwResult(total / len(path), total, path, lag)


def _dtw_band(x: np.ndarray, y: np.ndarray, lo: list[int], hi: list[int], w: int) -> np.ndarray:
    # Row i holds columns lo[i]..hi[i] at offsets 1...; offset 0 and the tail stay inf, so a
    # neighbour outside the band reads as unreachable without bounds checks. The width covers
    # the previous row's columns j-1..j for every j of this row (lo moves by <= w per row).
    band = np.full((len(x), 3 * w + 2), np.inf)
    for i in range(len(x)):
        a, b = lo[i], hi[i] + 1
        cost = np.linalg.norm(y[a:b] - x[i], axis=1)
        if i == 0:
            enter = np.full(b - a, np.inf)
            enter[0] = cost[0]
        else:
            prev, off = band[i - 1], a - lo[i - 1] + 1
            enter = cost + np.minimum(prev[off - 1 : off - 1 + b - a], prev[off : off + b - a])
        # Entering the row at column k (from below) and walking right to j costs
        # enter_k + run_j - run_k, with run the running sum of the row's costs; so the row's
        # sequential recurrence is one cumulative minimum, vectorised.
        run = np.cumsum(cost)
        band[i, 1 : 1 + b - a] = run + np.minimum.accumulate(enter - run)
    return band


def _dtw_path(band: np.ndarray, lo: list[int], n: int, m: int) -> np.ndarray:
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag = band[i - 1, j - lo[i - 1]]
            up = band[i - 1, j - lo[i - 1] + 1]
            left = band[i, j - lo[i]]
            # Ties go to the diagonal, then up: the shortest of the equal-cost paths.
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        path.append((i, j))
    return np.array(path[::-1], dtype=np.intp)


def dtw_window_samples(stamps: np.ndarray, window_s: float) -> int:
    """The DTW band half-width in samples for `window_s` seconds at the median sample period."""
    if len(stamps) < 2:
        return 1
    return max(1, round(window_s / float(np.median(np.diff(stamps)))))


def path_length(values: np.ndarray) -> float:
    """Length of a sampled path [N, D]: L = sum_i ||v_{i+1} - v_i||."""
    return float(np.linalg.norm(np.diff(values, axis=0), axis=1).sum())


def path_length_ratio(executed: np.ndarray, reference: np.ndarray) -> float | None:
    """L(executed) / L(reference) of two sampled paths; None when the reference does not move."""
    ref_length = path_length(reference)
    return path_length(executed) / ref_length if ref_length > 0.0 else None


def jerk(stamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Third time derivative of values [N, D] at actual stamps, [N-3, D].

    j_i = 6 f[t_i, ..., t_{i+3}], the third divided difference (f[a, b] = (f_b - f_a)/(t_b - t_a),
    recursively): exact for cubics on any grid, (x_{i+3} - 3x_{i+2} + 3x_{i+1} - x_i)/h^3
    on a uniform one.
    """
    v = _rows(values, "jerk values", len(stamps))
    t = np.asarray(stamps, dtype=float)
    for order in (1, 2, 3):
        v = np.diff(v, axis=0) / (t[order:] - t[:-order])[:, None]
    return 6.0 * v


def jerk_rms(stamps: np.ndarray, values: np.ndarray) -> float | None:
    """RMS jerk magnitude sqrt(1/K sum_k ||j_k||^2) over the K = N-3 jerks; None below 4 samples."""
    if len(stamps) < 4:
        return None
    j = jerk(stamps, values)
    return float(np.sqrt(np.mean(np.sum(j * j, axis=1))))


# The TrajectoryMetrics fields that `pose_errors` fills.
POSE_ERROR_FIELDS = (
    "ape_translation_rmse",
    "ape_rotation_rmse",
    "rpe_translation_rmse",
    "rpe_rotation_rmse",
    "rpe_pairs",
    "pose_alignment",
    "pose_alignment_scale",
)


def pose_errors(pair: AlignedPair, settings: PoseErrorSettings) -> dict[str, object]:
    """APE and RPE fields of TrajectoryMetrics for an aligned pair (None without poses)."""
    out: dict[str, object] = dict.fromkeys(POSE_ERROR_FIELDS)
    if pair.exec_positions is None or pair.ref_positions is None:
        return out
    p_run, q_run = pair.exec_positions, pair.exec_quaternions
    p_ref, q_ref = pair.ref_positions, pair.ref_quaternions
    out["pose_alignment"] = settings.alignment
    if settings.alignment != "none":
        similarity = umeyama(p_run, p_ref, with_scale=settings.alignment == "sim3")
        p_run, q_run = apply_similarity(similarity, p_run, q_run)
        out["pose_alignment_scale"] = similarity.scale
    out["ape_translation_rmse"], out["ape_rotation_rmse"] = ape(p_run, q_run, p_ref, q_ref)
    if q_run is None or q_ref is None:
        return out
    pairs = rpe_index_pairs(p_run, settings.delta, settings.delta_unit)
    out["rpe_pairs"] = len(pairs)
    if len(pairs):
        out["rpe_translation_rmse"], out["rpe_rotation_rmse"] = rpe(
            p_run, q_run, p_ref, q_ref, pairs
        )
    return out


@dataclass(frozen=True)
class TrajectoryMetrics:
    """Every drift metric of one executed trajectory against its reference.

    A metric the inputs cannot support (no poses, no joints, too few samples) is None. DTW and
    the path-length ratio use end-effector positions when both trajectories have them, else
    joint positions (`dtw_space` says which). Errors are over the `samples` executed samples
    inside the reference's time span [start, end].
    """

    samples: int
    start: float
    end: float
    joint_names: tuple[str, ...] | None
    joint_rms_error: tuple[float, ...] | None
    joint_max_error: tuple[float, ...] | None
    joint_final_error: tuple[float, ...] | None
    ee_position_rmse: float | None
    ee_position_max_error: float | None
    ee_position_final_error: float | None
    ee_rotation_rmse: float | None
    cumulative_drift: float | None
    drift_growth_rate: float | None
    dtw_space: str | None
    dtw_distance: float | None
    dtw_lag: float | None
    path_length_ratio: float | None
    ee_jerk_rms: float | None
    action_jerk_rms: float | None
    ape_translation_rmse: float | None = None
    ape_rotation_rmse: float | None = None
    rpe_translation_rmse: float | None = None
    rpe_rotation_rmse: float | None = None
    rpe_pairs: int | None = None
    pose_alignment: str | None = None
    pose_alignment_scale: float | None = None

    def to_dict(self) -> dict[str, object]:
        """The metrics as a JSON-ready dict (tuples become lists)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def compute_metrics(
    executed: Trajectory,
    reference: Trajectory,
    *,
    action_stamps: ArrayLike | None = None,
    actions: ArrayLike | None = None,
    dtw_window_s: float = 0.25,
    pose_settings: PoseErrorSettings | None = None,
) -> TrajectoryMetrics:
    """All drift metrics of `executed` against `reference` (and the jerk of `actions` [K, D]).

    DTW runs on the aligned pair (the reference resampled at executed stamps), with a band of
    `dtw_window_s` seconds: a lag longer than that cannot be recovered. APE and RPE follow
    `pose_settings` (default: no alignment, RPE delta 1 frame).
    """
    pair = align(executed, reference)
    t = pair.stamps
    joints = _joint_fields(pair)
    ee = _ee_fields(pair)
    space, exec_path, ref_path = _path_signals(pair)
    match = dtw(exec_path, ref_path, t, t, dtw_window_samples(t, dtw_window_s))
    return TrajectoryMetrics(
        samples=len(t),
        start=float(t[0]),
        end=float(t[-1]),
        joint_names=pair.joint_names,
        **joints,
        **ee,
        dtw_space=space,
        dtw_distance=match.distance,
        dtw_lag=match.lag,
        path_length_ratio=path_length_ratio(exec_path, ref_path),
        ee_jerk_rms=None if pair.exec_positions is None else jerk_rms(t, pair.exec_positions),
        action_jerk_rms=_action_jerk(action_stamps, actions),
        **pose_errors(pair, pose_settings or PoseErrorSettings()),
    )


def _joint_fields(pair: AlignedPair) -> dict[str, tuple[float, ...] | None]:
    keys = ("joint_rms_error", "joint_max_error", "joint_final_error")
    if pair.exec_joints is None:
        return dict.fromkeys(keys)
    stats = joint_errors(pair.exec_joints, pair.ref_joints)
    return {key: tuple(float(v) for v in s) for key, s in zip(keys, stats, strict=True)}


def _ee_fields(pair: AlignedPair) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "ee_position_rmse": None,
        "ee_position_max_error": None,
        "ee_position_final_error": None,
        "ee_rotation_rmse": None,
        "cumulative_drift": None,
        "drift_growth_rate": None,
    }
    if pair.exec_positions is not None:
        d = position_deviation(pair.exec_positions, pair.ref_positions)
        rmse, worst, final = position_errors(pair.exec_positions, pair.ref_positions)
        out["ee_position_rmse"], out["ee_position_max_error"] = rmse, worst
        out["ee_position_final_error"] = final
        out["cumulative_drift"] = float(cumulative_drift(pair.stamps, d)[-1])
        out["drift_growth_rate"] = drift_growth_rate(pair.stamps, d)
    if pair.exec_quaternions is not None:
        out["ee_rotation_rmse"] = rotation_rmse(pair.exec_quaternions, pair.ref_quaternions)
    return out


def _path_signals(pair: AlignedPair) -> tuple[str, np.ndarray, np.ndarray]:
    if pair.exec_positions is not None:
        return "ee_position", pair.exec_positions, pair.ref_positions
    if pair.exec_joints is not None:
        return "joint", pair.exec_joints, pair.ref_joints
    raise DriftError(
        "compute_metrics: the trajectories share no signal (one has only joints, the other only "
        "poses); give both the same kind, or compute poses with drift.kinematics"
    )


def _action_jerk(action_stamps: ArrayLike | None, actions: ArrayLike | None) -> float | None:
    if action_stamps is None and actions is None:
        return None
    if action_stamps is None or actions is None:
        raise DriftError("compute_metrics: give action_stamps and actions together")
    t = check_stamps(action_stamps, "action_stamps")
    return jerk_rms(t, _rows(actions, "actions", len(t)))
