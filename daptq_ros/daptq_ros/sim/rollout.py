"""Run one closed-loop episode of an actor in a SimEnv, optionally recorded as an episode bag."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import sec_to_ns
from daptq_ros.bags.episode import EpisodeWriter
from daptq_ros.sim.env import Observation, SimEnv


@dataclass(frozen=True)
class Decision:
    """What an actor does at one step: the action it applies, and any chunk it computed."""

    executed: NDArray[np.float64]  # [D] applied to the arm at this step
    chunk: NDArray[np.float64] | None = None  # [H, D] computed from this observation, if any
    chunk_dt: float | None = None  # s between chunk rows; None: the env's control period
    inference_latency: float = 0.0  # s


class Actor(Protocol):
    """Anything that acts in a SimEnv: a scripted expert or a policy with its chunk scheduler."""

    model: str  # recorded as the episode's model
    bit_config: str  # recorded as the episode's bit configuration ("" for full precision)

    def reset(self, seed: int) -> None:
        """Start an episode of `seed` (reseed any noise, drop any pending chunk)."""

    def act(self, observation: Observation) -> Decision:
        """The decision for this step."""

    def needs_frame(self) -> bool:
        """Whether the next act() reads a new camera frame; if not, the env holds the last one."""


@dataclass(frozen=True)
class EpisodeResult:
    """How one episode went."""

    task: str
    seed: int
    instruction: str
    success: bool
    steps: int
    wall_s: float  # s of wall-clock time, rendering and recording included
    path: Path | None = None  # the episode bag, when recorded

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "task": self.task,
            "seed": self.seed,
            "instruction": self.instruction,
            "success": self.success,
            "steps": self.steps,
            "wall_s": round(self.wall_s, 3),
            "path": None if self.path is None else str(self.path),
        }


def run_episode(
    env: SimEnv, actor: Actor, seed: int, writer: EpisodeWriter | None = None
) -> EpisodeResult:
    """Act from reset(seed) until success or env.max_steps; record every step to `writer`."""
    start = time.perf_counter()
    observation = env.reset(seed)
    actor.reset(seed)
    success = False
    while not success and env.steps < env.max_steps:
        decision = actor.act(observation)
        if writer is not None:
            _record_step(writer, observation, decision, env.dt)
        # Rendering is most of a step's cost: a receding-horizon policy reads a frame only when
        # it predicts, so between predictions the recorded frame is the one it acted on.
        observation, success = env.step(decision.executed, render=actor.needs_frame())
    if writer is not None:
        writer.finish(success, env.steps * env.dt)
    return EpisodeResult(
        env.spec.name,
        seed,
        observation.instruction,
        success,
        env.steps,
        time.perf_counter() - start,
    )


def record_episode(
    env: SimEnv, actor: Actor, seed: int, path: str | Path, *, episode_index: int = 0
) -> EpisodeResult:
    """Run an episode and write it as an episode bag at `path` (a new folder)."""
    writer = EpisodeWriter(
        path,
        task=env.spec.name,
        seed=seed,
        instruction=env.spec.instruction(seed),
        action_space=env.action_space,
        action_names=env.action_names,
        # Wall-clock start, on a whole second: float seconds near today's epoch lie on a
        # 2**-22 s grid, and an integer start puts every episode's samples at the same offsets
        # on it, so the drift between two rollouts does not depend on when they were recorded.
        start_ns=time.time_ns() // 1_000_000_000 * 1_000_000_000,
        episode_index=episode_index,
        model=actor.model,
        bit_config=actor.bit_config,
    )
    with writer:
        result = run_episode(env, actor, seed, writer)
    return replace(result, path=writer.path)


def _record_step(
    writer: EpisodeWriter, observation: Observation, decision: Decision, dt: float
) -> None:
    stamp = writer.start_ns + sec_to_ns(observation.time)
    writer.write_observation(
        stamp,
        observation.image,
        observation.joint_names,
        observation.joint_positions,
        observation.ee_position,
        observation.ee_quat_xyzw,
    )
    if decision.chunk is not None:
        chunk_dt = dt if decision.chunk_dt is None else decision.chunk_dt
        writer.write_action_chunk(stamp, decision.chunk, chunk_dt, decision.inference_latency)
    writer.write_executed(stamp, decision.executed, dt)
