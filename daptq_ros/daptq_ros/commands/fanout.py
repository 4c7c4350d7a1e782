"""Ray fan-out of evaluation episodes: a local Ray by default, a cluster by address.

Each worker is a Ray actor that loads the policy once (the driver's model directory, bit
config and the kernels the driver measured, so every worker computes the same arithmetic) and
runs the (task, seed) episodes it is handed, writing each episode bag to the run folder (shared
storage on a cluster) and returning how it went. An episode's outcome depends only on its task
and seed, so the results do not depend on the number of workers. A worker that dies is
restarted once by Ray and its episode retried once; after that the episode is reported as a
failed run, never dropped. Ctrl-C shuts down the local Ray this started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from daptq_ros.errors import DaptqError
from daptq_ros.sim.evaluate import EvalConfig, summarize
from daptq_ros.sim.rollout import EpisodeResult


@dataclass(frozen=True)
class PolicySpec:
    """What a worker needs to rebuild the driver's policy exactly."""

    model: str
    bits: str
    deployed: bool
    kernels_by_layer: dict[str, str]
    threads: int


class EpisodeWorker:
    """One Ray actor: the policy loaded once, one simulator per task, episodes on request."""

    def __init__(self, spec: PolicySpec, config: EvalConfig) -> None:
        import torch

        from daptq_ros.policy.quantize import load_policy_with_bits
        from daptq_ros.sim.evaluate import PolicyActor

        torch.set_num_threads(spec.threads)
        policy, _ = load_policy_with_bits(
            spec.model, spec.bits, spec.deployed, kernels_by_layer=spec.kernels_by_layer
        )
        self.config = config
        self.actor = PolicyActor(policy, config.execute_steps, config.model, config.bit_config)
        self.envs: dict[str, Any] = {}

    def run(self, task: str, seed: int) -> tuple[EpisodeResult, list[float]]:
        """Record one episode; its result and the inference latencies it measured."""
        from daptq_ros.sim.collect import episode_path
        from daptq_ros.sim.env import SimEnv
        from daptq_ros.sim.rollout import record_episode

        if task not in self.envs:
            self.envs[task] = SimEnv(task, image_size=self.config.image_size).__enter__()
        before = len(self.actor.latencies)
        path = episode_path(self.config.out, task, seed)
        result = record_episode(self.envs[task], self.actor, seed, path)
        return result, self.actor.latencies[before:]


def ray_available() -> bool:
    """Whether Ray is installed (without it evaluation stays serial)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_on_ray(
    spec: PolicySpec, config: EvalConfig, workers: int, address: str | None = None
) -> dict[str, Any]:
    """Every (task, seed) of `config` on `workers` Ray actors; the summary serial eval gives.

    `address` None starts a local Ray with `workers` CPUs (shut down at the end, Ctrl-C too);
    "auto" or HOST:PORT joins a running cluster.
    """
    import ray

    from daptq_ros.sim.collect import episode_path

    jobs = [(task, seed) for task in dict.fromkeys(config.tasks) for seed in config.seeds]
    for task, seed in jobs:
        if (path := episode_path(config.out, task, seed)).exists():
            raise DaptqError(f"{path} already exists; choose a new --out")
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            options["num_cpus"] = workers
        ray.init(address=address, **options)
    start = time.perf_counter()
    try:
        worker = ray.remote(num_cpus=1, max_restarts=1, max_task_retries=1)(EpisodeWorker)
        actors = [worker.remote(spec, config) for _ in range(min(workers, len(jobs)))]
        outcomes, failures = _run_jobs(ray, actors, jobs)
    finally:
        if started:
            ray.shutdown()
    results = [outcomes[job][0] for job in jobs]  # serial order: task, then seed
    latencies = [x for job in jobs for x in outcomes[job][1]]
    summary = summarize(config, results, latencies, time.perf_counter() - start)
    summary["workers"] = len(actors)
    summary["failed_runs"] = [
        {"task": task, "seed": seed, "error": why} for (task, seed), why in failures.items()
    ]
    return summary


Job = tuple[str, int]  # (task, seed)


def _run_jobs(
    ray: Any, actors: list[Any], jobs: list[Job]
) -> tuple[dict[Job, tuple[EpisodeResult, list[float]]], dict[Job, str]]:
    """Hand jobs to free actors until all are done, one progress bar over every episode;
    (outcome per job, why each failed job failed)."""
    pending = list(reversed(jobs))
    free = list(actors)
    running: dict[Any, tuple[Any, Job]] = {}
    outcomes: dict[Job, tuple[EpisodeResult, list[float]]] = {}
    failures: dict[Job, str] = {}
    with tqdm(total=len(jobs), unit="episode", desc="eval (ray)") as bar:
        while pending or running:
            while pending and free:
                actor, job = free.pop(), pending.pop()
                running[actor.run.remote(*job)] = (actor, job)
            (done,), _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(done)
            try:
                outcomes[job] = ray.get(done)
            except ray.exceptions.RayError as error:  # Ray retried it once already
                lines = str(error).strip().splitlines()
                failures[job] = lines[0] if lines else type(error).__name__
                outcomes[job] = (EpisodeResult(job[0], job[1], "failed run", False, 0, 0.0), [])
            free.append(actor)
            successes = sum(result.success for result, _ in outcomes.values())
            bar.set_postfix(success=f"{successes}/{len(outcomes)}", failed=len(failures))
            bar.update()
    return outcomes, failures
