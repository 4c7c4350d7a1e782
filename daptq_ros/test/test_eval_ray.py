"""`daptq eval` on a local Ray (loopback): the serial outcomes and end-effector paths on the same
seeds, a worker that dies reported as failed runs, and Ctrl-C stopping every process it started."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daptq_ros.cli import main
from daptq_ros.commands.fanout import EpisodeWorker, PolicySpec, evaluate_on_ray
from daptq_ros.policy.model_dir import default_model_dir
from daptq_ros.sim.evaluate import EvalConfig

pytest.importorskip("ray")
pytestmark = pytest.mark.sim

ARGS = ["eval", "--tasks", "reach", "push", "--episodes", "2", "--bits", "w4a16", "--json"]
DYING_SEED = 100_001


def _eval(capsys: pytest.CaptureFixture[str], out: Path, *extra: str) -> dict:
    model = str(default_model_dir("pi0"))
    assert main([*ARGS, "--model", model, "--out", str(out), "--threads", "1", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_two_ray_workers_give_the_serial_outcomes(
    sim_renders: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import numpy as np

    from daptq_ros.bags.trajectory import read_trajectory
    from daptq_ros.sim.collect import episode_path

    serial = _eval(capsys, tmp_path / "serial", "--workers", "0")
    parallel = _eval(capsys, tmp_path / "ray", "--workers", "2")
    assert "workers" not in serial
    assert parallel["workers"] == 2 and parallel["failed_runs"] == []

    def outcomes(summary: dict) -> list[tuple]:
        return [(e["task"], e["seed"], e["success"], e["steps"]) for e in summary["episodes_run"]]

    assert outcomes(parallel) == outcomes(serial) and len(outcomes(serial)) == 4
    assert parallel["per_task"] == serial["per_task"]
    assert parallel["inference_ms"]["calls"] == serial["inference_ms"]["calls"]
    assert json.loads((tmp_path / "ray" / "eval.json").read_text())["workers"] == 2
    for task, seed, *_ in outcomes(serial):  # the same end-effector path, sample for sample
        ray_ee, serial_ee = (
            read_trajectory(episode_path(tmp_path / run, task, seed)).ee
            for run in ("ray", "serial")
        )
        np.testing.assert_array_equal(ray_ee.positions, serial_ee.positions)


class DyingWorker(EpisodeWorker):
    """A worker whose process dies (as on an out-of-memory kill) during one episode."""

    def run(self, task: str, seed: int):
        if seed == DYING_SEED:
            os._exit(1)
        return super().run(task, seed)


def test_a_worker_that_dies_is_retried_then_its_episode_is_a_failed_run(
    sim_renders: None, tmp_path: Path
):
    from ray import cloudpickle

    from daptq_ros.sim.collect import episode_path

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    config = EvalConfig(out=tmp_path, tasks=("reach",), episodes=4, seed=100_000, image_size=96)
    spec = PolicySpec(str(default_model_dir("pi0")), "fp32", True, {}, 1)
    summary = evaluate_on_ray(spec, config, 2, worker_class=DyingWorker)
    (failed,) = summary["failed_runs"]
    assert (failed["task"], failed["seed"]) == ("reach", DYING_SEED)
    assert "died" in failed["error"].lower() or "actor" in failed["error"].lower()
    runs = {e["seed"]: e for e in summary["episodes_run"]}
    assert sorted(runs) == [100_000, 100_001, 100_002, 100_003]  # none dropped
    assert runs[DYING_SEED]["steps"] == 0 and not runs[DYING_SEED]["success"]
    for seed in (100_000, 100_002, 100_003):  # a fresh worker took over after the death
        assert runs[seed]["steps"] > 0 and episode_path(tmp_path, "reach", seed).is_dir()
    assert not episode_path(tmp_path, "reach", DYING_SEED).exists()  # no partial bag left


def test_ctrl_c_stops_the_local_ray_and_its_workers(sim_renders: None, tmp_path: Path):
    import psutil

    model = str(default_model_dir("pi0"))
    command = [sys.executable, "-m", "daptq_ros.cli", "eval", "--model", model, "--workers", "2"]
    # 50 episodes (~1 s each): still running when the first one's folder appears and Ctrl-C comes
    command += ["--tasks", "reach", "push", "--episodes", "25", "--threads", "1"]
    run = subprocess.Popen(
        [*command, "--out", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
        # As in a terminal: a shell without job control starts background jobs with SIGINT
        # ignored, and Python then never raises KeyboardInterrupt (a CI runner may do that).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 180
        while not any((tmp_path / task).is_dir() for task in ("reach", "push")):
            assert run.poll() is None and time.monotonic() < deadline, "no episode started"
            time.sleep(0.2)
        started = psutil.Process(run.pid).children(recursive=True)
        names = " ".join(p.name() for p in started)
        assert "raylet" in names and "EpisodeWorker" in names, names
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    assert "daptq eval: interrupted" in run.stderr.read()
    _, alive = psutil.wait_procs(started, timeout=10)
    assert [p.name() for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


def test_bad_worker_options_fail_with_one_line(tmp_path: Path, capsys):
    model = str(default_model_dir("pi0"))
    base = ["eval", "--model", model, "--out", str(tmp_path), "--tasks", "reach"]
    assert main([*base, "--workers", "-1"]) == 2
    assert "--workers -1: pass 0 (serial) or more" in capsys.readouterr().err
    assert main([*base, "--workers", "0", "--address", "auto"]) == 2
    assert "pass --workers N (N > 0) too" in capsys.readouterr().err
    with socket.socket() as probe:  # a port nothing listens on: a stopped cluster
        probe.bind(("127.0.0.1", 0))
        stopped = f"127.0.0.1:{probe.getsockname()[1]}"
    assert main([*base, "--episodes", "1", "--address", stopped]) == 2
    assert f"no Ray cluster at --address {stopped}" in capsys.readouterr().err


def test_a_local_ray_runs_its_workers_at_normal_priority():
    """Ray's default niceness 15 starved the episodes beside any busy process (27x slower)."""
    from daptq_ros.commands.fanout import ray_session

    with ray_session(1) as ray:
        niceness = ray.get(ray.remote(lambda: os.nice(0)).remote())
    assert niceness == os.nice(0)
