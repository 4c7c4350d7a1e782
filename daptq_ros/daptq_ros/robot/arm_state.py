"""What the policy node knows of the arm: its newest joint states and tool pose, read two ways.

The safety filter needs the measured state in the command's space (the preset's joints, or the
tool position); the policy needs its own state vector, as the model's StateSpec says (the tool
position and Sawyer gripper opening, or named joints of /joint_states). Both come from the same
two messages, and when either cannot be built, `problem(now)` says why in one line: the node
refuses to enable and holds with that reason.

Arms often publish /joint_states from several drivers (the arm's controller, the gripper's),
each message naming its own joints. Each joint keeps its newest position and when it came; a
joint older than `timeout` s counts as absent, so a gripper driver that stops makes the node
hold and name its joint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import (
    JointSample,
    PoseSample,
    joint_state_to_numpy,
    pose_stamped_to_numpy,
)
from daptq_ros.bags.state import GRIPPER_JOINTS, StateSpec, gripper_opening
from daptq_ros.control.commands import JOINT_INTERFACES
from daptq_ros.robot.arm import ArmModel
from daptq_ros.robot.presets import RobotPreset


class ArmState:
    """The newest /joint_states and /ee_pose of one arm, as the filter and the policy read them."""

    def __init__(
        self,
        robot: RobotPreset,
        interface: str,
        arm: ArmModel | None,
        state: StateSpec,
        timeout: float,
    ) -> None:
        self.robot = robot
        self.interface = interface
        self.arm = arm  # forward kinematics, when the preset or urdf_path gives a URDF
        self.state = state  # the model's state
        self.timeout = timeout  # s after which a joint no message names any more is absent
        self.ee_pose: PoseSample | None = None
        self._positions: dict[str, tuple[float, float]] = {}  # name -> (position, time)
        self.joints: JointSample | None = None  # the fresh joints, as of the last refresh

    def on_joint_states(self, msg: Any, now: float) -> None:
        """A sensor_msgs/JointState updates the joints it names."""
        sample = joint_state_to_numpy(msg)
        for name, position in zip(sample.names, sample.positions, strict=True):
            self._positions[name] = (float(position), now)
        self.refresh(now)

    def refresh(self, now: float) -> None:
        """Forget joints no message has named for `timeout` s (they count as absent)."""
        fresh = {n: p for n, (p, t) in self._positions.items() if now - t <= self.timeout}
        if not fresh:
            self.joints = None
            return
        names = tuple(fresh)
        positions = np.array([fresh[n] for n in names])
        self.joints = JointSample(now, names, positions, np.full(len(names), np.nan))

    def on_ee_pose(self, msg: Any) -> None:
        """A geometry_msgs/PoseStamped becomes the newest tool pose."""
        self.ee_pose = pose_stamped_to_numpy(msg)

    def measured(self) -> NDArray[np.float64] | None:
        """The measured state in the command's space (joints, or the tool position)."""
        if self.interface in JOINT_INTERFACES:
            return self._preset_joints()
        if self.ee_pose is not None:
            return self.ee_pose.position
        q = self._preset_joints()
        return None if q is None or self.arm is None else self.arm.position(q)

    def policy_state(self) -> NDArray[np.float64] | None:
        """The policy's state vector as the model's StateSpec says; None until it can be built.

        ee_position_gripper: the tool position (/ee_pose, else the arm's kinematics) and the
        Sawyer finger opening (1, open, on an arm without them); joint_positions: the named
        joints of /joint_states, the gripper's among them.
        """
        joints = self.joints
        if self.state.source == "joint_positions":
            if joints is None or self.state.missing(joints.names):
                return None
            return self.state.vector(joints.names, joints.positions)
        if self.ee_pose is not None:
            position = self.ee_pose.position
        else:
            q = self._preset_joints()
            if q is None or self.arm is None:
                return None
            position = self.arm.position(q)
        return np.append(position, self._gripper_opening())

    def problem(self) -> str:
        """Why the arm's state or the policy's cannot be built now; "" when both can."""
        names = self.joints.names if self.joints is not None else ()
        if self.measured() is None:
            missing = [n for n in self.robot.joints.names if n not in names]
            if self.joints is None or not missing:  # nothing yet, or no ee_pose nor kinematics
                return "no measured state (joint_states / ee_pose)"
            return (
                f"joint_states lack {', '.join(missing)} of robot {self.robot.name} (they name "
                f"{', '.join(names) or 'no joint'}): fix the robot preset's joint_names"
            )
        if self.state.source == "joint_positions" and self.state.missing(names):
            return self.state.describe_missing(names)
        return ""

    def joint_positions(self) -> NDArray[np.float64] | None:
        """The arm's joints in the preset's order; None until a joint state names them all."""
        return self._preset_joints()

    def _preset_joints(self) -> NDArray[np.float64] | None:
        """The preset's joints, in its order; None until a joint state names them all."""
        if self.joints is None:
            return None
        index = {name: i for i, name in enumerate(self.joints.names)}
        names = self.robot.joints.names
        if any(name not in index for name in names):
            return None
        return self.joints.positions[[index[name] for name in names]]

    def _gripper_opening(self) -> float:
        """Opening in [0, 1] from the Sawyer's finger joints; 1 (open) when the arm has none."""
        if self.joints is None:
            return 1.0
        names = self.joints.names
        if all(g in names for g in GRIPPER_JOINTS):
            right, left = (self.joints.positions[names.index(g)] for g in GRIPPER_JOINTS)
            return float(gripper_opening(right, left))
        return 1.0
