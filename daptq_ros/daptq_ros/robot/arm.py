"""The arm's kinematics for the nodes: a robot preset's URDF as tool position and Jacobian."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from daptq_ros.drift.kinematics import ARMS, Kinematics, arm_urdf
from daptq_ros.errors import ControlError
from daptq_ros.robot.presets import RobotPreset


class ArmModel:
    """Tool position and position Jacobian in the preset's joint order (control.ArmKinematics)."""

    def __init__(self, kinematics: Kinematics, joint_names: tuple[str, ...]) -> None:
        if tuple(kinematics.joint_names) != joint_names:
            raise ControlError(
                f"the URDF ({kinematics.source}) has joints {list(kinematics.joint_names)} "
                f"(gripper locked), the robot preset {list(joint_names)}; make the preset's "
                "joint_names the URDF's arm joints in URDF order"
            )
        self.kinematics = kinematics
        self.joint_names = joint_names

    def position(self, q: NDArray[np.float64]) -> NDArray[np.float64]:
        """Tool position [3] (m) at joint positions q."""
        return self.kinematics.fk(q)[0]

    def position_jacobian(self, q: NDArray[np.float64]) -> NDArray[np.float64]:
        """d position / d q, [3, n]."""
        return self.kinematics.jacobian(q)[:3]

    def pose(self, q: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Tool position [3] and quaternion xyzw [4]."""
        return self.kinematics.fk(q)


def arm_model(preset: RobotPreset, urdf_override: str = "") -> ArmModel | None:
    """The preset's arm model (URDF from `urdf_override`, a path or XML, else the preset's)."""
    source = urdf_override or preset.urdf
    if not source:
        return None
    if source in ARMS:
        arm = ARMS[source]
        path: str | Path = arm_urdf(source)
        locked, ee_frame = arm.gripper_joints, preset.ee_frame or arm.ee_frame
    else:
        path, locked, ee_frame = source, preset.gripper, preset.ee_frame
        if not ee_frame:
            raise ControlError(
                f"robot preset {preset.name}: a URDF needs ee_frame (the tool frame's name)"
            )
    kinematics = Kinematics.from_urdf(path, ee_frame, locked)
    return ArmModel(kinematics, preset.joints.names)
