"""Per-action-dimension drift scores s_j, the weights of DA-PTQ's drift-weighted loss.

Two constructions (METHOD.md §4.1), both normalised to mean 1 so the weighted loss keeps the
scale of the plain MSE:

- `virtual_chain_scores`: the paper's robot-free heuristic, a virtual planar chain whose joint
  increments are the action values themselves (DA-PTQ, arXiv 2604.11572).
- `jacobian_scores` [beyond]: the real manipulator Jacobian of the arm at the calibration states,
  when its URDF is known.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daptq_ros.drift.kinematics import Kinematics
from daptq_ros.errors import DriftError

# Action spaces whose dimensions are joints, and those whose dimensions are Cartesian axes.
JOINT_SPACES = ("joint_position", "joint_delta", "joint_velocity")
CARTESIAN_SPACES = ("ee_delta", "ee_pose")
# Cartesian action names ("dx", "x", "delta_x", "ee_dx", "drx", "roll", ...) -> their row of the
# 6-row Jacobian (linear x, y, z, then angular x, y, z).
CARTESIAN_NAME = re.compile(r"^(?:ee_)?(?:d|delta_)?(x|y|z|rx|ry|rz|roll|pitch|yaw)$")
CARTESIAN_AXIS = {"x": 0, "y": 1, "z": 2, "rx": 3, "ry": 4, "rz": 5}
CARTESIAN_AXIS.update(roll=3, pitch=4, yaw=5)
# Names of action dimensions that drive the gripper, not the arm: they move no tool frame.
GRIPPER_NAME = re.compile(r"grip|finger", re.IGNORECASE)


def normalise(scores: ArrayLike) -> NDArray[np.float64]:
    """Scores [D] (finite, >= 0, not all 0) divided by their mean, so that they average 1."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise DriftError(f"drift scores must be a non-empty [D] vector, got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise DriftError(f"drift scores must be finite and >= 0, got {values.tolist()}")
    mean = values.mean()
    if mean <= 0:
        raise DriftError(
            "drift scores are all 0: no action dimension moves the end effector; check the "
            "action names and the end-effector frame of the kinematics"
        )
    return values / mean


def virtual_chain_scores(
    actions: ArrayLike,
    translation_dims: Sequence[int] | None = None,
    damping: float = 3e-4,
    w_trans: float = 1.8,
    w_rot: float = 0.15,
) -> NDArray[np.float64]:
    """The paper's drift scores from a virtual planar chain (DA-PTQ, arXiv 2604.11572).

    The m chain dimensions of each action a [N, D] are read as the joint increments of a planar
    chain with unit links: theta_j = sum_{i<=j} a_i. Its 3 x m Jacobian over (x, y, theta):

        J_x(j) = -sum_{k=j..m-1} sin(theta_k),  J_y(j) = sum_{k=j..m-1} cos(theta_k),
        J_theta(j) = 1,

    damped pseudo-inverse J+ = J^T (J J^T + lam I)^-1 (lam = `damping`), and

        s_j = E_a[ w_trans |J+_{j,x}| + w_trans |J+_{j,y}| + w_rot |J+_{j,theta}| ],

    normalised to mean 1. `translation_dims` picks the chain dimensions (default: all D, as the
    paper does with its 7-D actions); the others (e.g. the gripper, whose value is no joint
    increment) get the mean score of the chain dimensions, i.e. exactly 1 after normalising.
    """
    values = np.asarray(actions, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise DriftError(f"actions must be a non-empty [N, D] array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise DriftError("actions hold NaN or inf; drop the broken steps before scoring")
    dims = _chain_dims(translation_dims, values.shape[1])
    theta = np.cumsum(values[:, dims], axis=1)  # [N, m]
    # Suffix sums over k = j..m-1: flip, cumulative sum, flip back.
    jx = -np.flip(np.cumsum(np.flip(np.sin(theta), 1), axis=1), 1)
    jy = np.flip(np.cumsum(np.flip(np.cos(theta), 1), axis=1), 1)
    jacobian = np.stack([jx, jy, np.ones_like(jx)], axis=1)  # [N, 3, m]
    pinv = _damped_pinv(jacobian, damping)  # [N, m, 3]
    weights = np.array([w_trans, w_trans, w_rot])
    chain = (np.abs(pinv) * weights).sum(axis=2).mean(axis=0)  # [m]
    scores = np.full(values.shape[1], chain.mean())
    scores[dims] = chain
    return normalise(scores)


def jacobian_scores(
    kinematics: Kinematics,
    joint_names: Sequence[str],
    joint_positions: ArrayLike,
    action_space: str,
    action_names: Sequence[str],
    *,
    action_scale: ArrayLike | None = None,
    damping: float = 1e-4,
    w_trans: float = 1.8,
    w_rot: float = 0.15,
) -> NDArray[np.float64]:
    """Drift scores from the arm's real Jacobian J(q) [6 x n] at the calibration states.

    For each state q and arm action dimension j, let dx_j(q) be the end-effector twist that a
    unit error in dimension j causes, and W = diag(w_trans I3, w_rot I3) the paper's weights of
    position against orientation. Then s_j = E_q[ ||W dx_j(q)|| * k_j(q) ], normalised to mean 1:

    - joint spaces (joint_position, joint_delta, joint_velocity): the error moves joint j, so
      dx_j = J(q) e_j (the Jacobian's column, METHOD.md §4.1) and k_j = 1. With w_rot = 0
      this is exactly the translational column norm E[||J_pos(q) e_j||].
    - Cartesian spaces (ee_delta, ee_pose): the arm resolves a Cartesian error e_j over the
      commanded axes A with the damped pseudo-inverse of J_A (the rows of A):
      dq_j = J_A+ e_j, so dx_j = J(q) dq_j, and k_j = sigma_max(J_A) ||dq_j|| is the directional
      condition number: 1 for the arm's best resolved direction, up to cond(J_A). Why k_j:
      away from singularities J J+ e_j is e_j itself, so ||W dx_j|| alone is the same for
      every translation axis and says nothing the robot-free weights do not; what differs
      between axes is how much joint motion the arm needs to follow them, and joint-level
      errors (tracking, latency, backlash) grow with that motion and reach the end effector
      with gain up to sigma_max.
      Near a singularity the poorly resolved axes therefore weigh more, as they drift more.

    The default w_rot > 0 keeps joints that only turn the tool (e.g. the Panda's joint7, whose
    axis runs through the TCP) and rotation axes of ee_delta off weight 0: an error there
    misorients the grasp even though the TCP point stays put.

    Dimensions named like a gripper ("grip", "finger") move no tool frame; they get the mean
    score of the arm dimensions (1 after normalising), so the loss weighs them as the plain
    MSE does. `action_scale` [D] is the physical size (rad, m) of one unit of each dimension as
    the loss sees it, e.g. the half-range of the min-max action normalisation (default 1).
    `damping` is lam of J_A+ = J_A^T (J_A J_A^T + lam I)^-1, in m^2 (rad^2 for rotations).
    """
    names = [str(n) for n in action_names]
    positions = np.asarray(joint_positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[0] == 0 or positions.shape[1] != len(joint_names):
        raise DriftError(
            f"joint_positions must be [N, {len(joint_names)}] (one column per joint name), "
            f"got shape {positions.shape}"
        )
    if not np.isfinite(positions).all():
        raise DriftError("joint_positions hold NaN or inf; drop the broken steps before scoring")
    scale = np.ones(len(names)) if action_scale is None else np.asarray(action_scale, float)
    if scale.shape != (len(names),) or not np.isfinite(scale).all():
        raise DriftError(
            f"action_scale must hold {len(names)} finite values (one per action name "
            f"{names}), got shape {scale.shape}"
        )
    qs = kinematics.q_from_joint_state(joint_names, positions)
    jacobians = np.stack([kinematics.jacobian(q) for q in qs])  # [N, 6, n]
    if action_space in JOINT_SPACES:
        arm, columns = _joint_dims(kinematics, names)
        twists = jacobians[:, :, columns]  # [N, 6, m]
        gain = np.ones((twists.shape[0], twists.shape[2]))
    elif action_space in CARTESIAN_SPACES:
        arm, axes = _cartesian_dims(names, action_space)
        task = jacobians[:, axes, :]  # [N, m, n]
        dq = _damped_pinv(task, damping)  # [N, n, m]: column j is the joint motion for e_j
        twists = jacobians @ dq
        sigma_max = np.linalg.norm(task, ord=2, axis=(1, 2))  # [N]
        gain = sigma_max[:, None] * np.linalg.norm(dq, axis=1)
    else:
        raise DriftError(
            f"action space {action_space!r} has no Jacobian mapping; use one of "
            f"{', '.join(JOINT_SPACES + CARTESIAN_SPACES)}, or virtual_chain_scores"
        )
    weights = np.array([w_trans] * 3 + [w_rot] * 3)[None, :, None]
    drift = (np.linalg.norm(weights * twists, axis=1) * gain).mean(axis=0)  # [m]
    arm_scores = drift * np.abs(scale[arm])
    scores = np.full(len(names), arm_scores.mean())
    scores[arm] = arm_scores
    return normalise(scores)


def _chain_dims(translation_dims: Sequence[int] | None, width: int) -> NDArray[np.intp]:
    """Validated indices of the virtual chain's dimensions (all `width` when None)."""
    if translation_dims is None:
        return np.arange(width)
    dims = np.asarray(translation_dims, dtype=np.intp).reshape(-1)
    if dims.size == 0 or len(set(dims.tolist())) != dims.size or not (dims >= 0).all():
        raise DriftError(
            f"translation_dims must be distinct indices in 0..{width - 1}, got "
            f"{list(translation_dims)}"
        )
    if (dims >= width).any():
        raise DriftError(
            f"translation_dims {dims.tolist()} reach past the {width} action dimensions"
        )
    return dims


def _damped_pinv(jacobian: NDArray[np.float64], damping: float) -> NDArray[np.float64]:
    """J^T (J J^T + lam I)^-1 of each [k, n] matrix of a [N, k, n] stack."""
    rows = jacobian.shape[1]
    gram = jacobian @ jacobian.transpose(0, 2, 1) + damping * np.eye(rows)
    # (J J^T + lam I) is symmetric, so J^T G^-1 = (G^-1 J)^T: one batched solve, no inverse.
    return np.linalg.solve(gram, jacobian).transpose(0, 2, 1)


def _joint_dims(kinematics: Kinematics, names: list[str]) -> tuple[list[int], list[int]]:
    """Arm action dimensions and the Jacobian column (model joint) each one drives."""
    index = {name: i for i, name in enumerate(kinematics.joint_names)}
    arm = [j for j, name in enumerate(names) if name in index]
    _check_rest(names, arm, f"joints of {kinematics.source} {list(kinematics.joint_names)}")
    return arm, [index[names[j]] for j in arm]


def _cartesian_dims(names: list[str], space: str) -> tuple[list[int], list[int]]:
    """Arm action dimensions and the Jacobian row (Cartesian axis) each one commands."""
    arm, axes = [], []
    for j, name in enumerate(names):
        if match := CARTESIAN_NAME.match(name.lower()):
            arm.append(j)
            axes.append(CARTESIAN_AXIS[match.group(1)])
    _check_rest(names, arm, f"Cartesian axes of {space} (dx, dy, dz, drx, dry, drz, ...)")
    if len(set(axes)) != len(axes):
        raise DriftError(f"action names {names} command one Cartesian axis twice")
    return arm, axes


def _check_rest(names: list[str], arm: list[int], expected: str) -> None:
    """Every action name not in `arm` must be a gripper's, and `arm` must not be empty."""
    if not arm:
        raise DriftError(
            f"none of the action names {names} names one of the {expected}; rename the "
            "action dimensions or use virtual_chain_scores"
        )
    if unknown := [n for j, n in enumerate(names) if j not in arm and not GRIPPER_NAME.search(n)]:
        raise DriftError(
            f"action names {unknown} are neither {expected} nor a gripper's ('grip' or "
            "'finger' in the name); rename them or use virtual_chain_scores"
        )
