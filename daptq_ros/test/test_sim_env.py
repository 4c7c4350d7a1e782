"""SimEnv: paired seeding, the observation contract, visible goals and refused misuse."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

from daptq_ros.bags.state import gripper_opening
from daptq_ros.errors import SimError
from daptq_ros.sim.env import GOAL_RGBA, JOINT_NAMES, Observation, SimEnv

pytestmark = [pytest.mark.sim, pytest.mark.usefixtures("sim_renders")]

SIZE = 64


def assert_same(a: Observation, b: Observation) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.privileged, b.privileged)
    np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
    assert a.instruction == b.instruction


def test_same_task_and_seed_give_the_same_start_in_any_env() -> None:
    with SimEnv("push", image_size=SIZE) as env:
        first = env.reset(5)
        env.reset(6)
        env.step([1.0, 0.0, 0.0, 0.0])
        again = env.reset(5)
    with SimEnv("push", image_size=SIZE) as env:  # a fresh env (and GL context) after the old
        fresh = env.reset(5)
    assert_same(first, again)
    assert_same(first, fresh)


def test_different_seeds_give_different_layouts() -> None:
    with SimEnv("pick-place", image_size=SIZE) as env:
        a, b = env.reset(0), env.reset(1)
    # privileged[4:7]: the puck; [-3:]: the goal.
    assert not np.allclose(a.privileged[4:7], b.privileged[4:7])
    assert not np.allclose(a.privileged[-3:], b.privileged[-3:])
    assert not np.array_equal(a.image, b.image)


def test_reset_leaves_the_global_generator_alone() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    with SimEnv("reach", image_size=SIZE) as env:
        np.random.seed(123)
        env.reset(3)
        assert np.random.rand() == expected


def test_observation_contract() -> None:
    with SimEnv("drawer-open", image_size=SIZE) as env:
        obs = env.reset(4)
        after, success = env.step([0.0, 0.0, 0.0, 1.0])
    assert obs.image.shape == env.image_shape == (SIZE, 2 * SIZE, 3)
    assert obs.image.dtype == np.uint8 and obs.image.mean() > 20
    assert obs.instruction == env.spec.instructions[4 % len(env.spec.instructions)]
    assert obs.joint_names == JOINT_NAMES and obs.joint_positions.shape == (9,)
    # The state is what an episode bag reconstructs: ee position and finger-joint opening.
    np.testing.assert_allclose(obs.state[:3], obs.ee_position, atol=1e-12)
    np.testing.assert_allclose(obs.state[3], gripper_opening(*obs.joint_positions[7:]), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(after.ee_quat_xyzw), 1.0)
    assert (obs.time, after.time, success) == (0.0, env.dt, False)
    assert after.state[3] < obs.state[3]  # gripper effort +1 closes the fingers


@pytest.mark.parametrize("task", ["reach", "push", "pick-place", "drawer-open"])
def test_goal_marker_is_visible(task: str) -> None:
    with SimEnv(task, image_size=SIZE) as env:
        image = env.reset(0).image.astype(int)
    colour = (np.array(GOAL_RGBA[:3]) * 255).astype(int)
    marker = np.all(np.abs(image - colour) < 90, axis=2)
    assert marker.sum() >= 4


def goal_marker_centre(image: np.ndarray) -> np.ndarray:
    """Pixel centroid (x, y) of the goal colour in each camera view, [views, 2]."""
    colour = (np.array(GOAL_RGBA[:3]) * 255).astype(int)
    marker = np.all(np.abs(image.astype(int) - colour) < 90, axis=2)
    views = np.split(marker, image.shape[1] // image.shape[0], axis=1)
    return np.array([np.argwhere(view)[:, ::-1].mean(axis=0) for view in views])


@pytest.mark.parametrize("task", ["reach", "pick-place"])
def test_first_frame_draws_this_episodes_goal(task: str) -> None:
    # The goal moves between these seeds by several pixels; the first frame must already show
    # it where the episode put it, not where the previous episode had it.
    with SimEnv(task, image_size=SIZE) as env:
        env.reset(1)
        first = env.reset(2)
        moved, _ = env.step([0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(
        goal_marker_centre(first.image), goal_marker_centre(moved.image), atol=0.5
    )


def test_misuse_is_refused() -> None:
    with SimEnv("reach", image_size=SIZE, max_steps=1) as env:
        with pytest.raises(SimError, match="call reset"):
            env.step([0, 0, 0, 0])
        env.reset(0)
        with pytest.raises(SimError, match="4 finite values"):
            env.step([0, 0, 0])
        with pytest.raises(SimError, match="4 finite values"):
            env.step([0, 0, np.nan, 0])
        env.step([0, 0, 0, 0])
        with pytest.raises(SimError, match="reached its 1 steps"):
            env.step([0, 0, 0, 0])
    with pytest.raises(SimError, match="closed"):
        env.reset(0)
    with pytest.raises(SimError, match="unknown task 'fly'"):
        SimEnv("fly")
