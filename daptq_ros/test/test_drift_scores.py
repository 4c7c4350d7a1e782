"""Drift scores s_j: the paper's virtual chain against its formula, real Jacobians on the Panda."""

from __future__ import annotations

import numpy as np
import pytest

from daptq_ros.drift.kinematics import Kinematics, available_arms
from daptq_ros.drift.scores import jacobian_scores, normalise, virtual_chain_scores
from daptq_ros.errors import DriftError

PANDA_ARM = [f"panda_joint{i}" for i in range(1, 8)]
needs_panda = pytest.mark.skipif(
    "panda" not in available_arms(), reason="example-robot-data is not installed"
)

# A planar two-link arm (unit links along x, both joints about z) to build states by hand.
PLANAR_URDF = """<robot name="planar">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="tip"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
    <axis xyz="0 0 1"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
  <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/>
    <origin xyz="1 0 0"/><axis xyz="0 0 1"/><limit lower="-3" upper="3" effort="1" velocity="1"/>
  </joint>
  <joint name="tool" type="fixed"><parent link="l2"/><child link="tip"/>
    <origin xyz="1 0 0"/></joint>
</robot>"""


def reference_chain_scores(actions, lam=3e-4, w=(1.8, 1.8, 0.15)):
    """The paper's formula, one action at a time, with an explicit inverse."""
    total = np.zeros(actions.shape[1])
    for a in actions:
        theta = np.cumsum(a)
        m = len(a)
        jacobian = np.array(
            [
                [-sum(np.sin(theta[k]) for k in range(j, m)) for j in range(m)],
                [sum(np.cos(theta[k]) for k in range(j, m)) for j in range(m)],
                [1.0] * m,
            ]
        )
        pinv = jacobian.T @ np.linalg.inv(jacobian @ jacobian.T + lam * np.eye(3))
        total += (np.abs(pinv) * np.array(w)).sum(axis=1)
    return total / total.mean()


@pytest.fixture(scope="module")
def panda() -> Kinematics:
    return Kinematics.from_robot_name("panda")


@pytest.fixture(scope="module")
def panda_states(panda) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(panda.model.lowerPositionLimit, panda.model.upperPositionLimit, (200, 7))


def test_virtual_chain_matches_the_papers_formula():
    actions = np.random.default_rng(1).normal(0.0, 0.4, size=(30, 7))
    scores = virtual_chain_scores(actions)
    np.testing.assert_allclose(scores, reference_chain_scores(actions), rtol=1e-10)
    assert scores.shape == (7,) and scores.mean() == pytest.approx(1.0)


def test_virtual_chain_weights_change_the_scores():
    actions = np.random.default_rng(2).normal(0.0, 0.4, size=(30, 4))
    plain = virtual_chain_scores(actions)
    np.testing.assert_allclose(
        virtual_chain_scores(actions, w_trans=1.0, w_rot=1.0),
        reference_chain_scores(actions, w=(1.0, 1.0, 1.0)),
        rtol=1e-10,
    )
    assert not np.allclose(plain, virtual_chain_scores(actions, w_rot=5.0))


def test_virtual_chain_dims_outside_the_chain_score_one():
    actions = np.random.default_rng(3).normal(0.0, 0.4, size=(20, 4))
    scores = virtual_chain_scores(actions, translation_dims=[0, 1, 2])
    assert scores[3] == pytest.approx(1.0)
    chain = reference_chain_scores(actions[:, :3])
    np.testing.assert_allclose(scores[:3], chain, rtol=1e-10)


@pytest.mark.parametrize(
    ("actions", "dims", "match"),
    [
        (np.zeros(5), None, r"\[N, D\]"),
        (np.array([[0.0, np.nan]]), None, "NaN"),
        (np.zeros((3, 2)), [0, 0], "distinct"),
        (np.zeros((3, 2)), [2], "past the 2 action dimensions"),
    ],
)
def test_virtual_chain_rejects_bad_input(actions, dims, match):
    with pytest.raises(DriftError, match=match):
        virtual_chain_scores(actions, translation_dims=dims)


def test_normalise_averages_one_and_rejects_bad_scores():
    np.testing.assert_allclose(normalise([1.0, 3.0]), [0.5, 1.5])
    for bad, match in (([], "non-empty"), ([1.0, -1.0], ">= 0"), ([0.0, 0.0], "all 0")):
        with pytest.raises(DriftError, match=match):
            normalise(bad)


@needs_panda
def test_joint_scores_are_column_norms_of_the_panda_jacobian(panda, panda_states):
    names = [*PANDA_ARM, "gripper"]
    scores = jacobian_scores(panda, PANDA_ARM, panda_states, "joint_position", names, w_rot=0.0)
    norms = np.mean([np.linalg.norm(panda.jacobian(q)[:3], axis=0) for q in panda_states], 0)
    np.testing.assert_allclose(scores[:7], norms / norms.mean(), rtol=1e-10)
    # The gripper gets the arm's mean; the shoulder moves the TCP more than the last wrist
    # joint, whose axis runs through the TCP.
    assert scores[7] == pytest.approx(1.0) and scores.mean() == pytest.approx(1.0)
    assert scores[6] < 1e-6 and scores[1] > scores[4] > scores[6]


@needs_panda
def test_joint_scores_keep_tool_rotation_with_the_default_weights(panda, panda_states):
    scores = jacobian_scores(panda, PANDA_ARM, panda_states, "joint_delta", PANDA_ARM)
    assert np.isfinite(scores).all() and (scores > 0.05).all()
    assert scores.mean() == pytest.approx(1.0)


@needs_panda
def test_joint_scores_follow_the_names_not_the_column_order(panda, panda_states):
    order = [3, 0, 6, 2, 5, 1, 4]
    names = [PANDA_ARM[i] for i in order]
    plain = jacobian_scores(panda, PANDA_ARM, panda_states, "joint_position", PANDA_ARM)
    shuffled_states = panda_states[:, order]
    reordered = jacobian_scores(panda, names, shuffled_states, "joint_position", names)
    np.testing.assert_allclose(reordered, plain[order], rtol=1e-12)


@needs_panda
def test_ee_delta_scores_on_the_panda(panda, panda_states):
    names = ["dx", "dy", "dz", "gripper"]
    scores = jacobian_scores(panda, PANDA_ARM, panda_states, "ee_delta", names)
    assert scores.shape == (4,) and np.isfinite(scores).all() and (scores > 0).all()
    assert scores.mean() == pytest.approx(1.0) and scores[3] == pytest.approx(1.0)
    # Reference: per state, damped pseudo-inverse of the translational rows.
    weights = np.array([1.8] * 3 + [0.15] * 3)
    total = np.zeros(3)
    for q in panda_states:
        jacobian = panda.jacobian(q)
        task = jacobian[:3]
        dq = task.T @ np.linalg.inv(task @ task.T + 1e-4 * np.eye(3))
        kappa = np.linalg.svd(task, compute_uv=False)[0] * np.linalg.norm(dq, axis=0)
        total += np.linalg.norm(weights[:, None] * (jacobian @ dq), axis=0) * kappa
    np.testing.assert_allclose(scores[:3], total / total.mean(), rtol=1e-10)


@needs_panda
def test_action_scale_weighs_the_physical_size_of_a_unit(panda, panda_states):
    names = [*PANDA_ARM, "gripper"]
    plain = jacobian_scores(panda, PANDA_ARM, panda_states, "joint_position", names)
    scale = np.ones(8)
    scale[0] = 3.0
    scaled = jacobian_scores(
        panda, PANDA_ARM, panda_states, "joint_position", names, action_scale=scale
    )
    assert scaled[0] / scaled[1] == pytest.approx(3.0 * plain[0] / plain[1])


def test_ee_delta_weighs_the_poorly_resolved_axis_more():
    arm = Kinematics.from_urdf(PLANAR_URDF, "tip")
    # Nearly stretched along x: moving along x needs far more joint motion than along y.
    states = np.column_stack([np.zeros(20), np.linspace(0.15, 0.3, 20)])
    scores = jacobian_scores(arm, ["j1", "j2"], states, "ee_delta", ["dx", "dy", "grip"])
    assert scores[0] > 2.0 * scores[1]


@pytest.mark.parametrize(
    ("space", "names", "match"),
    [
        ("ee_velocity", ["dx"], "no Jacobian mapping"),
        ("ee_delta", ["dx", "elbow"], r"\['elbow'\] are neither"),
        ("ee_delta", ["gripper"], "none of the action names"),
        ("ee_delta", ["dx", "x"], "axis twice"),
        ("joint_position", ["j1", "j3"], r"\['j3'\] are neither"),
    ],
)
def test_jacobian_scores_reject_action_names_they_cannot_map(space, names, match):
    arm = Kinematics.from_urdf(PLANAR_URDF, "tip")
    with pytest.raises(DriftError, match=match):
        jacobian_scores(arm, ["j1", "j2"], np.zeros((3, 2)), space, names)


def test_jacobian_scores_reject_bad_states_and_scales():
    arm = Kinematics.from_urdf(PLANAR_URDF, "tip")
    with pytest.raises(DriftError, match=r"joint_positions must be \[N, 2\]"):
        jacobian_scores(arm, ["j1", "j2"], np.zeros((3, 3)), "joint_position", ["j1"])
    with pytest.raises(DriftError, match="NaN"):
        jacobian_scores(arm, ["j1", "j2"], np.full((3, 2), np.nan), "joint_position", ["j1"])
    with pytest.raises(DriftError, match="action_scale"):
        jacobian_scores(
            arm, ["j1", "j2"], np.zeros((3, 2)), "joint_position", ["j1"], action_scale=[1, 2]
        )
