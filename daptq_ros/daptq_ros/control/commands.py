"""Turn one sampled policy action into a target for the safety filter, in the command's space.

Policies speak in action spaces (an end-effector displacement per policy step, joint
positions, ...); controllers take joint positions or a Cartesian pose/twist. A `TargetBuilder`
maps one onto the other for one command period: end-effector deltas become a Cartesian
velocity integrated over the period, and, for joint controllers, a joint target through one
damped-least-squares step on the arm's kinematics (passed in, so this module stays numpy only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daptq_ros.errors import ControlError

JOINT_INTERFACES = ("joint_trajectory", "position_array")
CARTESIAN_INTERFACES = ("twist", "pose")
COMMAND_INTERFACES = JOINT_INTERFACES + CARTESIAN_INTERFACES
CARTESIAN_AXES = ("x", "y", "z")
EE_DELTA_AXES = ("dx", "dy", "dz")
GRIPPER_ACTION = "gripper"
# Damping of the least-squares IK step (m): small enough to track, large enough near singularities.
IK_DAMPING = 0.05


class ArmKinematics(Protocol):
    """What joint-space commands need of an arm: tool position and its Jacobian."""

    def position(self, q: NDArray[np.float64]) -> NDArray[np.float64]:
        """Tool position [3] (m) at joint positions q [n]."""
        ...

    def position_jacobian(self, q: NDArray[np.float64]) -> NDArray[np.float64]:
        """d position / d q, [3, n]."""
        ...


@dataclass(frozen=True)
class Target:
    """A command-space target for the safety filter, plus the gripper command if any."""

    position: NDArray[np.float64]
    gripper: float | None


def damped_least_squares(jacobian: NDArray[np.float64], error: NDArray[np.float64]) -> NDArray:
    """dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e (Wampler 1986; Nakamura & Hanafusa 1986), λ = IK_DAMPING."""
    rows = jacobian.shape[0]
    gram = jacobian @ jacobian.T + IK_DAMPING**2 * np.eye(rows)
    return jacobian.T @ np.linalg.solve(gram, error)


class TargetBuilder:
    """Maps rows of one action space to targets of one command interface."""

    def __init__(
        self,
        action_space: str,
        action_names: Sequence[str],
        interface: str,
        action_scale: float,
        joint_count: int = 0,
        kinematics: ArmKinematics | None = None,
    ) -> None:
        if interface not in COMMAND_INTERFACES:
            raise ControlError(
                f"command_interface {interface!r} is unknown; use one of "
                f"{', '.join(COMMAND_INTERFACES)}"
            )
        if not (np.isfinite(action_scale) and action_scale > 0):
            raise ControlError(f"action_scale={action_scale}: need a positive number of metres")
        names = tuple(action_names)
        self.action_space = action_space
        self.interface = interface
        self.action_scale = float(action_scale)
        self.kinematics = kinematics
        self.joint_count = joint_count
        self._gripper = names.index(GRIPPER_ACTION) if GRIPPER_ACTION in names else None
        joint_space = interface in JOINT_INTERFACES
        if action_space == "ee_delta":
            if names[:3] != EE_DELTA_AXES:
                raise ControlError(
                    f"an ee_delta policy must name its first actions {EE_DELTA_AXES}, got {names}"
                )
            if joint_space and kinematics is None:
                raise ControlError(
                    f"command_interface {interface} needs the arm's kinematics to turn "
                    "end-effector deltas into joint targets; give the robot a URDF (urdf_path "
                    "or the robot preset), or use command_interface pose or twist"
                )
        elif action_space in ("joint_position", "joint_delta"):
            if not joint_space:
                raise ControlError(
                    f"a {action_space} policy commands joints; use command_interface "
                    f"{' or '.join(JOINT_INTERFACES)}"
                )
            arm_dims = len(names) - (self._gripper is not None)
            if arm_dims != joint_count:
                raise ControlError(
                    f"the policy commands {arm_dims} joints, the robot preset has {joint_count}; "
                    "use a robot preset whose joint_names match the policy's actions"
                )
        else:
            raise ControlError(
                f"action space {action_space!r} cannot drive a robot here; supported: "
                "ee_delta, joint_position, joint_delta"
            )

    @property
    def joint_space(self) -> bool:
        """Whether targets are joint positions (else a Cartesian tool position)."""
        return self.interface in JOINT_INTERFACES

    def target(
        self,
        action: NDArray[np.float64],
        reference: NDArray[np.float64],
        period: float,
        action_dt: float,
    ) -> Target:
        """The target one command `period` after `reference` (the last command, same space).

        `action_dt` is the time one policy action stands for: an ee_delta row moves the tool
        by action * action_scale over that time.
        """
        action = np.asarray(action, dtype=np.float64)
        reference = np.asarray(reference, dtype=np.float64)
        gripper = None if self._gripper is None else float(action[self._gripper])
        fraction = period / action_dt
        if self.action_space == "joint_position":
            return Target(self._arm(action), gripper)
        if self.action_space == "joint_delta":
            return Target(reference + fraction * self._arm(action), gripper)
        step = action[:3] * self.action_scale * fraction
        if not self.joint_space:
            return Target(reference + step, gripper)
        assert self.kinematics is not None  # checked in __init__
        jacobian = self.kinematics.position_jacobian(reference)
        return Target(reference + damped_least_squares(jacobian, step), gripper)

    def _arm(self, action: NDArray[np.float64]) -> NDArray[np.float64]:
        """The action without its gripper column."""
        if self._gripper is None:
            return action
        return np.delete(action, self._gripper)


# An ee_delta action outside [-1, 1] is clipped (MetaWorld's convention); one beyond this bound
# means the policy diverged and the whole chunk is rejected.
EE_DELTA_REJECT = 1.5


def checked_chunk(actions: ArrayLike, space: str) -> tuple[NDArray[np.float64] | None, str, int]:
    """A policy's chunk made safe to schedule: (actions or None if rejected, why, how many
    values were clipped). NaN/inf is rejected; ee_delta is clipped to [-1, 1], or rejected
    beyond EE_DELTA_REJECT (a diverged policy)."""
    rows = np.asarray(actions, dtype=np.float64)
    if not np.isfinite(rows).all():
        return None, "the policy returned NaN/inf actions; chunk rejected", 0
    if space != "ee_delta":
        return rows, "", 0
    largest = float(np.abs(rows).max())
    if largest > EE_DELTA_REJECT:
        return (
            None,
            f"the policy returned ee_delta actions up to {largest:.2f} (valid: [-1, 1]); "
            "chunk rejected",
            0,
        )
    clipped = np.clip(rows, -1.0, 1.0)
    return clipped, "", int(np.count_nonzero(clipped != rows))
