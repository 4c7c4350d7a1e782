"""The simulated Sawyer's kinematics from its MuJoCo model (it has no URDF here).

Gives the two things drift.scores.jacobian_scores asks of an arm: joint vectors from joint
states, and the 6 x 7 Jacobian of the hand (MetaWorld's end effector), linear rows first, in
world-aligned axes (pinocchio's LOCAL_WORLD_ALIGNED, which drift.kinematics uses).
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from numpy.typing import ArrayLike, NDArray

from daptq_ros.errors import SimError
from daptq_ros.sim.env import ARM_JOINTS, HAND_BODY
from daptq_ros.sim.tasks import get_task


class SawyerKinematics:
    """Hand Jacobian of the MetaWorld Sawyer at given arm joint positions."""

    def __init__(self, task: str = "reach") -> None:
        env = ALL_V3_ENVIRONMENTS[get_task(task).env_name]()
        self.model: mujoco.MjModel = env.model
        self.data = mujoco.MjData(self.model)
        self.joint_names: tuple[str, ...] = ARM_JOINTS
        self.ee_frame = HAND_BODY
        self.source = f"MetaWorld {task} (MuJoCo)"
        self._qpos = [int(self.model.joint(n).qposadr[0]) for n in ARM_JOINTS]
        self._dofs = [int(self.model.joint(n).dofadr[0]) for n in ARM_JOINTS]
        self._hand = self.model.body(HAND_BODY).id
        env.close()

    def q_from_joint_state(self, names: Sequence[str], positions: ArrayLike) -> NDArray:
        """JointState names and positions ([J] or [N, J]) -> arm joints in ARM_JOINTS order."""
        index = {name: i for i, name in enumerate(names)}
        if missing := [n for n in self.joint_names if n not in index]:
            raise SimError(f"the joint states lack the Sawyer's joints {missing}")
        columns = [index[n] for n in self.joint_names]
        return np.asarray(positions, dtype=np.float64)[..., columns]

    def jacobian(self, q: ArrayLike) -> NDArray[np.float64]:
        """The 6 x 7 hand Jacobian (linear rows, then angular) in world-aligned axes."""
        self.data.qpos[self._qpos] = np.asarray(q, dtype=np.float64)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        linear = np.zeros((3, self.model.nv))
        angular = np.zeros((3, self.model.nv))
        mujoco.mj_jacBody(self.model, self.data, linear, angular, self._hand)
        return np.vstack([linear, angular])[:, self._dofs]
