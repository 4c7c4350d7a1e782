"""Closed-loop evaluation of a Policy in the simulator: paired seeds, bags, success with CIs.

The same (task, seed) starts from the same scene for every model, so a full-precision run and a
quantized run of one seed are paired episodes: their end-effector paths can be compared
directly (`daptq drift`). The policy acts in receding horizon: it predicts a chunk of H
actions, the arm executes the first `execute_steps` of them, then the policy predicts again.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from daptq_ros.bags.state import EE_STATE, StateSpec
from daptq_ros.drift.stats import success_rate
from daptq_ros.errors import SimError
from daptq_ros.sim.collect import episode_path
from daptq_ros.sim.env import ACTION_SPACE, CONTROLS, Observation, SimEnv
from daptq_ros.sim.rollout import Decision, EpisodeResult, record_episode
from daptq_ros.sim.tasks import DEFAULT_EVAL_SEED, DEFAULT_TASKS, get_task

SUMMARY_FILE = "eval.json"


class ChunkPolicy(Protocol):
    """The part of the Policy contract evaluation needs (policy.contract.Policy satisfies it)."""

    def predict(
        self, image: np.ndarray, instruction: str, state: np.ndarray, seed: int | None = None
    ):
        """An ActionChunk (actions [H, D], dt) for one observation."""


class PolicyActor:
    """A Policy as an Actor: predict a chunk, execute its first `execute_steps` rows, repeat."""

    def __init__(
        self,
        policy: ChunkPolicy,
        execute_steps: int,
        model: str,
        bit_config: str,
        state: StateSpec = EE_STATE,
    ) -> None:
        if execute_steps < 1:
            raise SimError(f"execute_steps={execute_steps}: execute at least one action per chunk")
        self.policy = policy
        self.execute_steps = execute_steps
        self.model = model
        self.bit_config = bit_config
        self.state = state  # how the model's state is built from the observation
        self.latencies: list[float] = []
        self._queue: list[np.ndarray] = []
        self._seed = 0
        self._calls = 0

    def reset(self, seed: int) -> None:
        """Drop any pending actions; the sampling noise of this episode derives from `seed`."""
        self._queue = []
        self._seed = seed
        self._calls = 0

    def needs_frame(self) -> bool:
        """Only when the queue is empty: the policy reads the camera when it predicts."""
        return not self._queue

    def act(self, observation: Observation) -> Decision:
        """The next queued action, predicting a new chunk when the queue is empty."""
        if self._queue:
            return Decision(executed=self._queue.pop(0))
        start = time.perf_counter()
        state = observation.state  # MetaWorld's hand position and gripper opening
        if self.state.source != EE_STATE.source:
            state = self.state.vector(observation.joint_names, observation.joint_positions)
        chunk = self.policy.predict(
            observation.image,
            observation.instruction,
            state,
            seed=self._seed * 10_007 + self._calls,
        )
        latency = time.perf_counter() - start
        self.latencies.append(latency)
        self._calls += 1
        actions = np.asarray(chunk.actions, dtype=np.float64)
        self._queue = list(actions[1 : self.execute_steps])
        return Decision(actions[0], chunk=actions, chunk_dt=chunk.dt, inference_latency=latency)


@dataclass(frozen=True)
class EvalConfig:
    """Which episodes to run: `episodes` seeds from `seed` on, for each task."""

    out: Path
    tasks: tuple[str, ...] = DEFAULT_TASKS
    episodes: int = 10
    seed: int = DEFAULT_EVAL_SEED
    image_size: int = 96
    execute_steps: int = 4
    model: str = "policy"
    bit_config: str = ""
    control: str = ACTION_SPACE  # the model's action space (env.CONTROLS)
    state: StateSpec = EE_STATE  # the model's state

    @property
    def seeds(self) -> range:
        """The seeds every task is evaluated on."""
        return range(self.seed, self.seed + self.episodes)

    def __post_init__(self) -> None:
        for task in self.tasks:
            get_task(task)
        if self.episodes < 1:
            raise SimError(f"episodes={self.episodes}: evaluate at least one episode per task")
        if self.control not in CONTROLS:
            raise SimError(
                f"the simulated Sawyer runs {', '.join(CONTROLS)} models, not {self.control}"
            )


def evaluate(policy: ChunkPolicy, config: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run every (task, seed), write one bag per episode and OUT/eval.json; return the summary."""
    actor = PolicyActor(policy, config.execute_steps, config.model, config.bit_config, config.state)
    results: list[EpisodeResult] = []
    total = len(config.tasks) * config.episodes
    start = time.perf_counter()
    with tqdm(total=total, unit="episode", desc="eval", disable=not progress) as bar:
        for task in dict.fromkeys(config.tasks):
            with SimEnv(task, image_size=config.image_size, control=config.control) as env:
                for seed in config.seeds:
                    path = episode_path(config.out, task, seed)
                    if path.exists():
                        raise SimError(f"{path} already exists; choose a new --out")
                    results.append(record_episode(env, actor, seed, path))
                    successes = sum(r.success for r in results)
                    bar.set_postfix(task=task, success=f"{successes}/{len(results)}")
                    bar.update()
    summary = summarize(config, results, actor.latencies, time.perf_counter() - start)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _rate(successes: int, n: int) -> dict[str, Any]:
    rate = success_rate(successes, n)
    return {
        "successes": successes,
        "episodes": n,
        "success_rate": rate.mean,
        "ci95": [rate.ci_low, rate.ci_high],
    }


def summarize(
    config: EvalConfig, results: list[EpisodeResult], latencies: list[float], wall_s: float
) -> dict[str, Any]:
    """Success per task and overall with 95 % Wilson intervals, inference latency, episodes."""
    per_task = {}
    for task in dict.fromkeys(config.tasks):
        mine = [r for r in results if r.task == task]
        per_task[task] = _rate(sum(r.success for r in mine), len(mine))
    latency_ms = sorted(1000 * x for x in latencies)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    settings["state"] = {"source": config.state.source, "names": list(config.state.names)}
    return {
        **settings,
        "per_task": per_task,
        "overall": _rate(sum(r.success for r in results), len(results)),
        "inference_ms": {
            "calls": len(latency_ms),
            "p50": statistics.median(latency_ms) if latency_ms else None,
            "p95": latency_ms[int(0.95 * (len(latency_ms) - 1))] if latency_ms else None,
        },
        "wall_s": round(wall_s, 2),
        "episodes_run": [r.to_dict() for r in results],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of an evaluation summary."""
    lines = [
        f"model {summary['model']}  bits {summary['bit_config'] or 'fp32'}  "
        f"seeds {summary['seed']}..{summary['seed'] + summary['episodes'] - 1}",
        f"{'task':<22} {'success':>9} {'95 % CI':>16}",
    ]
    rows = [*summary["per_task"].items(), ("overall", summary["overall"])]
    for task, rate in rows:
        low, high = rate["ci95"]
        lines.append(
            f"{task:<22} {rate['successes']:>4}/{rate['episodes']:<4} "
            f"[{100 * low:5.1f}, {100 * high:5.1f}] %"
        )
    latency = summary["inference_ms"]
    if latency["calls"]:
        lines.append(
            f"inference per chunk: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms"
        )
    return "\n".join(lines)
