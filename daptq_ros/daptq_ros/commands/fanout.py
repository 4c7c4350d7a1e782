"""Ray fan-out of evaluation episodes: a local Ray by default, a cluster by address.

Each worker is a Ray actor that loads the policy once (the driver's model directory, bit
config and the kernels the driver measured, so every worker computes the same arithmetic) and
runs the (task, seed) episodes it is handed, writing each episode bag to the run folder (shared
storage on a cluster) and returning how it went. An episode's outcome depends only on its task
and seed, so the results do not depend on the number of workers. A worker that dies is
restarted once by Ray and its episode retried once; after that the episode is reported as a
failed run, never dropped, and a fresh worker takes the remaining episodes. `daptq report`
also runs each method's quantization here, as a Ray task. Ctrl-C cancels the tasks and kills
the workers this run started, and shuts down the local Ray it started.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from daptq_ros.errors import DaptqError
from daptq_ros.sim.evaluate import EvalConfig, summarize
from daptq_ros.sim.rollout import EpisodeResult

CONNECT_TIMEOUT_S = 5.0  # how long a cluster address may take to accept a connection
RAY_WORKER_NICENESS = "RAY_worker_niceness"  # Ray's setting of its workers' niceness


@dataclass(frozen=True)
class PolicySpec:
    """What a worker needs to rebuild the driver's policy exactly."""

    model: str
    bits: str
    deployed: bool
    kernels_by_layer: dict[str, str]
    threads: int
    runtime: str = "torch"


class EpisodeWorker:
    """One Ray actor: the policy loaded once, one simulator per task, episodes on request."""

    def __init__(self, spec: PolicySpec, config: EvalConfig) -> None:
        import torch

        from daptq_ros.policy.quantize import load_policy_with_bits
        from daptq_ros.sim.evaluate import PolicyActor

        torch.set_num_threads(spec.threads)
        policy, _ = load_policy_with_bits(
            spec.model,
            spec.bits,
            spec.deployed,
            kernels_by_layer=spec.kernels_by_layer,
            runtime=spec.runtime,
        )
        self.config = config
        self.actor = PolicyActor(
            policy, config.execute_steps, config.model, config.bit_config, config.state
        )
        self.envs: dict[str, Any] = {}

    def run(self, task: str, seed: int) -> tuple[EpisodeResult, list[float]]:
        """Record one episode; its result and the inference latencies it measured."""
        from daptq_ros.sim.collect import episode_path
        from daptq_ros.sim.env import SimEnv
        from daptq_ros.sim.rollout import record_episode

        if task not in self.envs:
            self.envs[task] = SimEnv(
                task, image_size=self.config.image_size, control=self.config.control
            ).__enter__()
        before = len(self.actor.latencies)
        path = episode_path(self.config.out, task, seed)
        # Left by an attempt whose worker died (the driver checked that none existed before).
        shutil.rmtree(path, ignore_errors=True)
        result = record_episode(self.envs[task], self.actor, seed, path)
        return result, self.actor.latencies[before:]


def ray_available() -> bool:
    """Whether Ray is installed (without it evaluation stays serial)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def available_cores() -> int:
    """The cores this process may run on: the default number of workers."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def ray_session(workers: int, address: str | None = None) -> Iterator[Any]:
    """The `ray` module, initialised: a local Ray with `workers` CPUs when `address` is None,
    else the cluster at `address` ("auto" or HOST:PORT). A Ray already initialised in this
    process is used as it is. A local Ray started here is shut down on leaving, Ctrl-C too."""
    import ray

    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:  # "local": a new Ray, even where `ray start` runs a cluster
            address, options["num_cpus"] = "local", workers
            # Ray runs its workers at niceness 15: beside any busy process (a ROS graph, a
            # build) they starved, 27x slower (4 episodes: 18 s alone, 486 s beside two busy
            # loops, 34 s at niceness 0). The episodes are this command's work, not background.
            os.environ.setdefault(RAY_WORKER_NICENESS, "0")
        else:
            address = _reachable(address)
        ray.init(address=address, **options)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _reachable(address: str) -> str:
    """HOST:PORT of the cluster at `address` ("auto": the one Ray finds on this machine),
    checked to accept connections: Ray 2.60 retries a stopped cluster's address forever."""
    # Ray's own resolution of "auto" (RAY_ADDRESS, then the last `ray start`); ray is pinned.
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        resolved = canonicalize_bootstrap_address_or_die(address)
        host, port = resolved.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as error:  # ConnectionError is an OSError
        raise DaptqError(
            f"no Ray cluster at --address {address} ({_first_line(error)}): start one with "
            "`ray start --head` (and `ray start --address HEAD:6379` on the other nodes), "
            "or drop --address for a local Ray"
        ) from None
    return resolved


def evaluate_on_ray(
    spec: PolicySpec,
    config: EvalConfig,
    workers: int,
    address: str | None = None,
    worker_class: type[EpisodeWorker] = EpisodeWorker,
) -> dict[str, Any]:
    """Every (task, seed) of `config` on `workers` Ray actors; the summary serial eval gives.

    Ray as `ray_session` gives it; `worker_class` is the actor (a test passes one that dies).
    """
    from daptq_ros.sim.collect import episode_path

    jobs = [(task, seed) for task in dict.fromkeys(config.tasks) for seed in config.seeds]
    for task, seed in jobs:
        if (path := episode_path(config.out, task, seed)).exists():
            raise DaptqError(f"{path} already exists; choose a new --out")
    start = time.perf_counter()
    with ray_session(workers, address) as ray:
        worker = ray.remote(num_cpus=1, max_restarts=1, max_task_retries=1)(worker_class)
        pool = _ActorPool(lambda: worker.remote(spec, config), min(workers, len(jobs)))
        try:
            outcomes, failures = _run_jobs(ray, pool, jobs)
        finally:
            pool.kill(ray)
        nodes = sum(node["Alive"] for node in ray.nodes())
    for task, seed in failures:  # a dead worker's partial bag is no episode
        shutil.rmtree(episode_path(config.out, task, seed), ignore_errors=True)
    results = [outcomes[job][0] for job in jobs]  # serial order: task, then seed
    latencies = [x for job in jobs for x in outcomes[job][1]]
    summary = summarize(config, results, latencies, time.perf_counter() - start)
    summary["workers"] = pool.size
    summary["ray_nodes"] = nodes
    summary["failed_runs"] = [
        {"task": task, "seed": seed, "error": why} for (task, seed), why in failures.items()
    ]
    return summary


class _ActorPool:
    """`size` live actors; one that died for good is replaced by a fresh one."""

    def __init__(self, make: Callable[[], Any], size: int) -> None:
        """`make()` starts one actor (a Ray actor handle)."""
        self.make = make
        self.size = size
        self.free = [make() for _ in range(size)]
        self.started = list(self.free)

    def replace(self) -> None:
        """Add a fresh actor in place of one that died."""
        fresh = self.make()
        self.started.append(fresh)
        self.free.append(fresh)

    def kill(self, ray: Any) -> None:
        """Stop every actor this pool started (done, interrupted or failed)."""
        for actor in self.started:
            with contextlib.suppress(Exception):
                ray.kill(actor)


Job = tuple[str, int]  # (task, seed)


def _run_jobs(
    ray: Any, pool: _ActorPool, jobs: list[Job]
) -> tuple[dict[Job, tuple[EpisodeResult, list[float]]], dict[Job, str]]:
    """Hand jobs to free actors until all are done, one progress bar over every episode;
    (outcome per job, why each failed job failed)."""
    pending = list(reversed(jobs))
    running: dict[Any, tuple[Any, Job]] = {}
    outcomes: dict[Job, tuple[EpisodeResult, list[float]]] = {}
    failures: dict[Job, str] = {}
    with tqdm(total=len(jobs), unit="episode", desc="eval (ray)") as bar:
        while pending or running:
            while pending and pool.free:
                actor, job = pool.free.pop(), pending.pop()
                running[actor.run.remote(*job)] = (actor, job)
            (done,), _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(done)
            try:
                outcomes[job] = ray.get(done)
                pool.free.append(actor)
            except ray.exceptions.RayError as error:  # Ray retried it once already
                failures[job] = _first_line(error)
                outcomes[job] = (EpisodeResult(job[0], job[1], "failed run", False, 0, 0.0), [])
                if isinstance(error, ray.exceptions.RayActorError):
                    pool.replace()  # this one died twice: Ray will not restart it again
                else:
                    pool.free.append(actor)
            successes = sum(result.success for result, _ in outcomes.values())
            bar.set_postfix(success=f"{successes}/{len(outcomes)}", failed=len(failures))
            bar.update()
    return outcomes, failures


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _run_cli(argv: list[str]) -> tuple[int, str]:
    """In a Ray worker: one `daptq` command; its exit status and the end of its stderr."""
    from daptq_ros.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return status, stderr.getvalue()[-2000:]


def run_commands_on_ray(
    ray: Any, commands: Sequence[list[str]], desc: str
) -> list[tuple[int, str]]:
    """`daptq` commands as Ray tasks (one CPU each, a task whose worker died retried once);
    per command its exit status and the end of its stderr, in order. Ctrl-C cancels them."""
    task = ray.remote(num_cpus=1, max_retries=1)(_run_cli)
    refs = [task.remote(list(argv)) for argv in commands]
    results: dict[Any, tuple[int, str]] = {}
    try:
        with tqdm(total=len(refs), unit="step", desc=desc) as bar:
            waiting = list(refs)
            while waiting:
                (done,), waiting = ray.wait(waiting, num_returns=1)
                try:
                    results[done] = ray.get(done)
                except ray.exceptions.RayError as error:
                    results[done] = (1, _first_line(error))
                bar.update()
    finally:
        for ref in refs:
            if ref not in results:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
    return [results[ref] for ref in refs]
