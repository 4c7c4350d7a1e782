"""The simulated Sawyer's hand Jacobian agrees with finite differences of its position."""

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

import mujoco

from daptq_ros.errors import SimError
from daptq_ros.sim.kinematics import SawyerKinematics

pytestmark = pytest.mark.sim
HOME = np.array([1.889, -0.576, -0.977, 1.642, 0.943, 1.044, 2.293])


def hand_position(kin: SawyerKinematics, q: np.ndarray) -> np.ndarray:
    kin.data.qpos[kin._qpos] = q
    mujoco.mj_kinematics(kin.model, kin.data)
    return kin.data.xpos[kin._hand].copy()


def test_linear_rows_match_finite_differences():
    kin = SawyerKinematics()
    jacobian = kin.jacobian(HOME)
    assert jacobian.shape == (6, 7)
    step = 1e-6
    for j in range(7):
        dq = np.zeros(7)
        dq[j] = step
        numeric = (hand_position(kin, HOME + dq) - hand_position(kin, HOME - dq)) / (2 * step)
        np.testing.assert_allclose(jacobian[:3, j], numeric, atol=1e-6)


def test_joint_states_are_reordered_and_checked():
    kin = SawyerKinematics()
    names = [*reversed(kin.joint_names), "r_close"]
    q = kin.q_from_joint_state(names, [*reversed(HOME), 0.0])
    np.testing.assert_allclose(q, HOME)
    with pytest.raises(SimError, match="right_j6"):
        kin.q_from_joint_state(names[1:], np.zeros(7))
