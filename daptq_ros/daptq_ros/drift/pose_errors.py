"""Pose errors as evo defines them: APE and RPE, after an optional Umeyama (1991) alignment.

Also the per-sample position and rotation deviations the other drift metrics build on.
Positions in m; rotation angles in rad, APE and RPE rotations in degrees (as evo reports them).
numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np
from scipy.spatial.transform import Rotation

from daptq_ros.errors import DriftError


def position_deviation(p_exec: np.ndarray, p_ref: np.ndarray) -> np.ndarray:
    """End-effector deviation d_i = ||p_exec_i - p_ref_i||_2 per sample, [N] m."""
    return np.linalg.norm(p_exec - p_ref, axis=1)


def position_errors(p_exec: np.ndarray, p_ref: np.ndarray) -> tuple[float, float, float]:
    """End-effector position (RMSE, max, final) in m.

    With d_i = ||p_exec_i - p_ref_i||: rmse = sqrt(1/N sum_i d_i^2), max = max_i d_i, final = d_N.
    """
    d = position_deviation(p_exec, p_ref)
    return float(np.sqrt(np.mean(d * d))), float(d.max()), float(d[-1])


def rotation_angles(quat_exec: np.ndarray, quat_ref: np.ndarray) -> np.ndarray:
    """Geodesic angle between executed and reference orientations per sample, [N] rad.

    theta_i = |log(R_ref_i^T R_exec_i)| in [0, pi]: the angle of the relative rotation.
    """
    relative = Rotation.from_quat(quat_ref).inv() * Rotation.from_quat(quat_exec)
    return relative.magnitude()


def rotation_rmse(quat_exec: np.ndarray, quat_ref: np.ndarray) -> float:
    """End-effector rotation RMSE sqrt(1/N sum_i theta_i^2) of the geodesic angles, rad."""
    theta = rotation_angles(quat_exec, quat_ref)
    return float(np.sqrt(np.mean(theta * theta)))


# --- APE and RPE, as evo defines them ---------------------------------------------------------

PoseAlignment = Literal["none", "se3", "sim3"]
DeltaUnit = Literal["frames", "m"]
POSE_ALIGNMENTS: tuple[str, ...] = get_args(PoseAlignment)
DELTA_UNITS: tuple[str, ...] = get_args(DeltaUnit)


@dataclass(frozen=True)
class PoseErrorSettings:
    """evo's options for APE and RPE: the alignment of the run, and RPE's delta and its unit.

    alignment: "none" (the frames are shared: the default, alignment would hide drift), "se3"
    (rotation and translation) or "sim3" (and scale), by Umeyama on the time-associated
    positions. RPE compares poses `delta` apart: that many frames (run samples), or the first
    sample where the run's path since the previous one reaches `delta` m.
    """

    alignment: PoseAlignment = "none"
    delta: float = 1.0
    delta_unit: DeltaUnit = "frames"

    def __post_init__(self) -> None:
        if self.alignment not in POSE_ALIGNMENTS:
            raise DriftError(
                f"pose alignment {self.alignment!r}: unknown; pass one of "
                f"{', '.join(POSE_ALIGNMENTS)} (--align)"
            )
        if self.delta_unit not in DELTA_UNITS:
            raise DriftError(
                f"RPE delta unit {self.delta_unit!r}: unknown; pass one of "
                f"{', '.join(DELTA_UNITS)} (--delta-unit)"
            )
        delta = float(self.delta)
        if not (math.isfinite(delta) and delta > 0):
            raise DriftError(f"RPE delta {self.delta!r}: need a number > 0 (--delta N)")
        if self.delta_unit == "frames" and not delta.is_integer():
            raise DriftError(
                f"RPE delta {self.delta!r} frames: need a whole number of frames; pass an "
                "integer --delta, or --delta-unit m for a distance"
            )
        object.__setattr__(self, "delta", delta)

    def to_dict(self) -> dict[str, object]:
        """The settings as a JSON-ready dict."""
        return {"alignment": self.alignment, "delta": self.delta, "delta_unit": self.delta_unit}


class Similarity(NamedTuple):
    """x -> scale * rotation @ x + translation: rotation [3, 3], translation [3], scale."""

    rotation: np.ndarray
    translation: np.ndarray
    scale: float


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool) -> Similarity:
    """The similarity (or rigid motion) that best maps points `source` [N, 3] onto `target`.

    Umeyama (1991): with means mu, sigma_s^2 = 1/N sum ||s_i - mu_s||^2 and the covariance
    C = 1/N sum (t_i - mu_t)(s_i - mu_s)^T = U D V^T, R = U S V^T with S = diag(1, 1, -1) when
    det(U) det(V) < 0 (else I), c = tr(D S) / sigma_s^2 (1 without scale), t = mu_t - c R mu_s.
    DriftError when the points lie on a line (the rotation about it is then undetermined).
    """
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    ds, dt = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(dt.T @ ds / len(source))
    if len(source) < 3 or d[1] <= 1e-12 * max(d[0], np.finfo(float).tiny):
        raise DriftError(
            f"Umeyama alignment: the {len(source)} associated positions (run or reference) lie "
            "on a line or at a point, so no rotation aligns them; pass --align none "
            "(alignment='none')"
        )
    s = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2] = -1.0
    rotation = u @ np.diag(s) @ vt
    scale = float(np.dot(d, s) / np.mean(np.sum(ds * ds, axis=1))) if with_scale else 1.0
    return Similarity(rotation, mu_t - scale * rotation @ mu_s, scale)


def apply_similarity(
    similarity: Similarity, positions: np.ndarray, quats: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Poses moved by a similarity: p' = c R p + t, orientation R * q (quaternions xyzw)."""
    rotation, translation, scale = similarity
    moved = scale * positions @ rotation.T + translation
    if quats is None:
        return moved, None
    return moved, (Rotation.from_matrix(rotation) * Rotation.from_quat(quats)).as_quat()


def _rmse(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values * values)))


def ape(
    p_run: np.ndarray, q_run: np.ndarray | None, p_ref: np.ndarray, q_ref: np.ndarray | None
) -> tuple[float, float | None]:
    """APE (translation RMSE m, rotation RMSE deg) over associated poses, as in evo.

    translation: sqrt(1/N sum_i ||t_ref_i - t_run_i||^2); rotation: the RMSE of the angle of
    R_ref_i^T R_run_i in degrees (None without orientations).
    """
    translation = _rmse(position_deviation(p_run, p_ref))
    if q_run is None or q_ref is None:
        return translation, None
    return translation, math.degrees(rotation_rmse(q_run, q_ref))


def rpe_index_pairs(positions: np.ndarray, delta: float, unit: DeltaUnit) -> np.ndarray:
    """Index pairs [K, 2] (i, j) of consecutive RPE segments, as evo picks them by default.

    frames: 0, d, 2d, ... paired in turn. m: sample 0, then each sample where the path
    travelled since the previous one first reaches `delta`, paired in turn (evo 1.38).
    """
    if unit == "frames":
        ids = np.arange(0, len(positions), int(delta))
    else:
        ids = _path_marks(positions, delta)
    return np.stack([ids[:-1], ids[1:]], axis=1) if len(ids) > 1 else np.empty((0, 2), np.intp)


def _path_marks(positions: np.ndarray, delta: float) -> np.ndarray:
    """Sample 0, then each sample where the path since the previous mark first reaches delta."""
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    travelled = np.concatenate(([0.0], np.cumsum(steps)))
    marks, last = [0], 0
    while last + 1 < len(travelled):
        ahead = travelled[last + 1 :]
        k = int(np.searchsorted(ahead, travelled[last] + delta, side="left"))
        if k == len(ahead):
            break
        last += 1 + k
        marks.append(last)
    return np.array(marks, dtype=np.intp)


def rpe(
    p_run: np.ndarray,
    q_run: np.ndarray,
    p_ref: np.ndarray,
    q_ref: np.ndarray,
    pairs: np.ndarray,
) -> tuple[float, float]:
    """RPE (translation RMSE m, rotation RMSE deg) over index pairs (i, j), as in evo."""
    translation, rotation = rpe_errors(p_run, q_run, p_ref, q_ref, pairs)
    return _rmse(translation), _rmse(rotation)


def rpe_errors(
    p_run: np.ndarray,
    q_run: np.ndarray,
    p_ref: np.ndarray,
    q_ref: np.ndarray,
    pairs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per index pair (i, j): RPE translation error (m) and rotation error (deg), as in evo.

    E = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j) with Q the reference poses and P the run's; translation
    error ||trans(E)||, rotation error the angle of rot(E).
    """
    i, j = pairs[:, 0], pairs[:, 1]
    ref_rel, ref_step = _relative(p_ref, Rotation.from_quat(q_ref), i, j)
    run_rel, run_step = _relative(p_run, Rotation.from_quat(q_run), i, j)
    error_translation = ref_rel.inv().apply(run_step - ref_step)
    error_rotation = (ref_rel.inv() * run_rel).magnitude()
    return np.linalg.norm(error_translation, axis=1), np.degrees(error_rotation)


def _relative(
    positions: np.ndarray, rotations: Rotation, i: np.ndarray, j: np.ndarray
) -> tuple[Rotation, np.ndarray]:
    """Poses j in the frames of poses i: rotation R_i^T R_j, translation R_i^T (p_j - p_i)."""
    inverse = rotations[i].inv()
    return inverse * rotations[j], inverse.apply(positions[j] - positions[i])
