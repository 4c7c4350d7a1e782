"""Collect scripted-expert demonstrations: one episode bag per (task, seed), plus a summary.

Layout: OUT/<task>/<task>_seed<k>/ (one rosbag2 each, failed episodes included and marked in
their metadata) and OUT/summary.json (settings, success per task and every episode of the
latest collection into OUT).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from daptq_ros.errors import SimError
from daptq_ros.sim.env import ACTION_SPACE, CONTROLS, SimEnv
from daptq_ros.sim.experts import ScriptedExpert
from daptq_ros.sim.rollout import EpisodeResult, record_episode
from daptq_ros.sim.tasks import DEFAULT_TASKS, get_task

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class CollectConfig:
    """What to collect: `episodes` seeds from `seed` on, for each task."""

    out: Path
    tasks: tuple[str, ...] = DEFAULT_TASKS
    episodes: int = 10
    seed: int = 0
    image_size: int = 96
    noise: float = 0.0
    workers: int = 1
    control: str = ACTION_SPACE  # the recorded actions: ee_delta, joint_position, joint_delta
    jobs: tuple[tuple[str, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        for task in self.tasks:
            get_task(task)
        if self.episodes < 1 or self.workers < 1:
            raise SimError(
                f"episodes ({self.episodes}) and workers ({self.workers}) must be at least 1"
            )
        if self.seed < 0:
            raise SimError(f"seed {self.seed} is negative; seeds start at 0")
        if self.control not in CONTROLS:
            raise SimError(f"control {self.control!r} is unknown; use {', '.join(CONTROLS)}")
        seeds = range(self.seed, self.seed + self.episodes)
        # Task-major order, so a worker keeps its env across the seeds of one task.
        jobs = tuple((task, seed) for task in dict.fromkeys(self.tasks) for seed in seeds)
        object.__setattr__(self, "jobs", jobs)


def episode_path(out: Path, task: str, seed: int) -> Path:
    """Where the episode bag of (task, seed) goes."""
    return out / task / f"{task}_seed{seed}"


def collect(config: CollectConfig, *, progress: bool = True) -> dict[str, Any]:
    """Record every (task, seed) of `config`, write OUT/summary.json and return the summary."""
    taken = [
        p for task, seed in config.jobs if (p := episode_path(config.out, task, seed)).exists()
    ]
    if taken:
        raise SimError(
            f"{taken[0]} already exists ({len(taken)} of the {len(config.jobs)} episode folders "
            "do); choose a new --out or delete the old episodes"
        )
    start = time.perf_counter()
    results = []
    bar = tqdm(total=len(config.jobs), unit="episode", desc="collect", disable=not progress)
    with bar:
        for result in _results(config):
            results.append(result)
            successes = sum(r.success for r in results)
            bar.set_postfix(task=result.task, success=f"{successes}/{len(results)}")
            bar.update()
    summary = _summary(config, results, time.perf_counter() - start)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _results(config: CollectConfig) -> Iterator[EpisodeResult]:
    """Episode results in completion order, from this process or from worker processes."""
    if config.workers == 1:
        recorder = _Recorder(config)
        try:
            yield from map(recorder.record, config.jobs)
        finally:
            recorder.close()
        return
    # spawn, not fork: a forked child would inherit the parent's MuJoCo and GL state.
    context = multiprocessing.get_context("spawn")
    with context.Pool(config.workers, initializer=_start_worker, initargs=(config,)) as pool:
        yield from pool.imap_unordered(_record_in_worker, config.jobs)


class _Recorder:
    """Records episodes with one SimEnv at a time, rebuilt only when the task changes."""

    def __init__(self, config: CollectConfig) -> None:
        self.config = config
        self.env: SimEnv | None = None
        self.expert: ScriptedExpert | None = None

    def record(self, job: tuple[str, int]) -> EpisodeResult:
        task, seed = job
        if self.env is None or self.env.spec.name != task:
            self.close()
            env = SimEnv(task, image_size=self.config.image_size, control=self.config.control)
            self.env = env
            self.expert = ScriptedExpert(env.spec, self.config.noise, env.from_ee_action)
        assert self.expert is not None
        return record_episode(self.env, self.expert, seed, episode_path(self.config.out, *job))

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = self.expert = None


_worker: _Recorder | None = None  # the recorder of a worker process


def _start_worker(config: CollectConfig) -> None:
    global _worker
    _worker = _Recorder(config)


def _record_in_worker(job: tuple[str, int]) -> EpisodeResult:
    assert _worker is not None
    return _worker.record(job)


def _summary(config: CollectConfig, results: list[EpisodeResult], wall_s: float) -> dict[str, Any]:
    """Settings, per-task success and steps, every episode, and the cost per step."""
    results = sorted(results, key=lambda r: (config.tasks.index(r.task), r.seed))
    steps = sum(r.steps for r in results)
    per_task = {}
    for task in dict.fromkeys(config.tasks):
        mine = [r for r in results if r.task == task]
        successes = sum(r.success for r in mine)
        per_task[task] = {
            "episodes": len(mine),
            "successes": successes,
            "success_rate": successes / len(mine),
            "mean_steps": sum(r.steps for r in mine) / len(mine),
            "failed_seeds": [r.seed for r in mine if not r.success],
        }
    settings = {k: v for k, v in asdict(config).items() if k != "jobs"}
    return {
        **settings,
        "out": str(config.out),
        "per_task": per_task,
        "steps": steps,
        "wall_s": round(wall_s, 2),
        # Cost of one step within one process (render + physics + expert + recording) ...
        "ms_per_step": round(1000 * sum(r.wall_s for r in results) / steps, 2),
        # ... and the collection's throughput, all workers together.
        "wall_ms_per_step": round(1000 * wall_s / steps, 2),
        "episodes_recorded": [r.to_dict() for r in results],
    }
