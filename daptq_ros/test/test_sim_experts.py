"""Scripted experts: they solve every default task, and DART noise is reproducible."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

from daptq_ros.errors import SimError
from daptq_ros.sim.env import Observation, SimEnv
from daptq_ros.sim.experts import ScriptedExpert
from daptq_ros.sim.rollout import Decision, run_episode
from daptq_ros.sim.tasks import DEFAULT_TASKS, get_task

pytestmark = [pytest.mark.sim, pytest.mark.usefixtures("sim_renders")]


class Recording:
    """Wraps an actor and keeps every observation and decision."""

    def __init__(self, actor: ScriptedExpert) -> None:
        self.actor, self.model, self.bit_config = actor, actor.model, actor.bit_config
        self.steps: list[tuple[Observation, Decision]] = []

    def reset(self, seed: int) -> None:
        self.actor.reset(seed)

    def needs_frame(self) -> bool:
        return self.actor.needs_frame()

    def act(self, observation: Observation) -> Decision:
        decision = self.actor.act(observation)
        self.steps.append((observation, decision))
        return decision


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_expert_solves_the_task(task: str) -> None:
    # Aliased rendering: the expert reads the privileged state, and it halves the test's time.
    with SimEnv(task, image_size=32) as env:
        result = run_episode(env, ScriptedExpert(env.spec), seed=11)
    assert result.success and result.steps < env.max_steps


def test_noise_changes_the_executed_action_not_the_label_and_repeats() -> None:
    runs = []
    with SimEnv("reach", image_size=32) as env:
        for _ in range(2):
            actor = Recording(ScriptedExpert(env.spec, noise=0.2))
            run_episode(env, actor, seed=2)
            runs.append(actor.steps)
    first, second = runs
    assert len(first) == len(second)
    for (obs_a, dec_a), (obs_b, dec_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(obs_a.state, obs_b.state)
        np.testing.assert_array_equal(dec_a.executed, dec_b.executed)
    (obs, decision) = first[5]
    assert decision.chunk is not None and decision.chunk.shape == (1, 4)
    clean = np.clip(ScriptedExpert(get_task("reach")).act(obs).executed, -1, 1)
    np.testing.assert_array_equal(decision.chunk[0], clean)
    assert not np.allclose(decision.executed, clean)
    assert np.all(np.abs(decision.executed) <= 1.0)


def test_negative_noise_is_refused() -> None:
    with pytest.raises(SimError, match="negative"):
        ScriptedExpert(get_task("reach"), noise=-0.1)


@pytest.mark.parametrize("control", ["joint_position", "joint_delta"])
@pytest.mark.parametrize("task", ["pick-place", "button-press-topdown"])
def test_the_expert_solves_the_task_in_joint_space(task: str, control: str) -> None:
    """Its hand goals taken to the joints (SimEnv.from_ee_action) drive the joint-space arm."""
    with SimEnv(task, image_size=32, control=control) as env:
        actor = Recording(ScriptedExpert(env.spec, to_control=env.from_ee_action))
        result = run_episode(env, actor, seed=17)
    assert result.success and result.steps < env.max_steps
    observation, decision = actor.steps[10]
    assert decision.executed.shape == (8,)
    arm = observation.joint_positions[:7]
    step = decision.executed[:7] - (arm if control == "joint_position" else 0.0)
    assert 0 < np.abs(step).max() < 0.2  # rad per 12.5 ms: a small move, not a jump


def test_a_held_joint_target_is_a_setpoint_the_hand_settles_at() -> None:
    with SimEnv("push", image_size=32, control="joint_position") as env:
        observation = env.reset(seed=4)
        target = observation.joint_positions[:7] + np.array([0.15, 0.1, -0.1, 0.1, 0, 0.1, 0])
        goal = env.hand_position(target)
        hands = []
        for _ in range(120):
            observation, _ = env.step(np.append(target, -1.0), render=False)
            hands.append(observation.ee_position)
    errors = np.linalg.norm(np.array(hands) - goal, axis=1)
    assert errors[0] > 0.02  # it started away from the goal
    # Settled: within the weld's sag of the goal, and no longer moving (no wind-up).
    assert errors[-1] < 0.01 and np.ptp(errors[-40:]) < 0.001
