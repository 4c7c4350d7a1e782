"""Scripted MetaWorld experts as actors, with optional DART-style noise on the executed action."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import metaworld.policies
import numpy as np

from daptq_ros.errors import SimError
from daptq_ros.sim.env import Observation
from daptq_ros.sim.rollout import Decision
from daptq_ros.sim.tasks import TaskSpec

# MetaWorld's experts warn on most steps that the env will clip their gains to [-1, 1]: intended.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)

EXPERT_MODEL = "expert"
# Second word of the noise generator's seed, so the noise stream never equals the layout stream.
NOISE_STREAM = 0xDA27


class ScriptedExpert:
    """MetaWorld's scripted policy for one task, as an Actor.

    Each step sends a one-row chunk with the clean expert action (the demonstration's label).
    With `noise` > 0 the arm executes that action plus Gaussian noise of that standard deviation
    (DART: the expert then demonstrates recovering from the states a learner drifts into); the
    noise stream is seeded from the episode seed, so noisy episodes are reproducible too.
    `to_control` turns its hand displacements into the env's control (SimEnv.from_ee_action,
    for a joint-space env): labels and executed actions both pass through it.
    """

    model = EXPERT_MODEL
    bit_config = ""

    def __init__(
        self,
        task: TaskSpec,
        noise: float = 0.0,
        to_control: Callable[[Observation, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """The expert of `task`; `noise` is the std of the executed-action noise (0: none)."""
        if not noise >= 0.0:
            raise SimError(f"expert noise {noise} is negative; use a standard deviation >= 0")
        self.noise = float(noise)
        self._policy = getattr(metaworld.policies, task.expert)()
        self._rng = np.random.default_rng([0, NOISE_STREAM])
        self._to_control = to_control

    def reset(self, seed: int) -> None:
        """Reseed the noise for the episode of `seed`."""
        self._rng = np.random.default_rng([seed, NOISE_STREAM])

    def needs_frame(self) -> bool:
        """Always: a demonstration records the camera at every step, for training."""
        return True

    def act(self, observation: Observation) -> Decision:
        """The clean expert action as the label; executed with noise when `noise` > 0."""
        # The env clips actions to [-1, 1]; the label is the action as the env applies it.
        clean = np.clip(self._policy.get_action(observation.privileged), -1.0, 1.0)
        clean = clean.astype(np.float64)
        executed = clean
        if self.noise > 0.0:
            executed = np.clip(clean + self._rng.normal(0.0, self.noise, clean.shape), -1.0, 1.0)
        if self._to_control is not None:
            clean = self._to_control(observation, clean)
            executed = self._to_control(observation, executed)
        return Decision(executed=executed, chunk=clean[None, :])
