"""`daptq eval --workers 2`: the episodes on a local 2-worker Ray (loopback), the same outcomes
and the same end-effector paths as the serial run on the same seeds."""

import json
from pathlib import Path

import pytest

from daptq_ros.cli import main
from daptq_ros.policy.model_dir import default_model_dir

pytest.importorskip("ray")
pytestmark = pytest.mark.sim

ARGS = ["eval", "--tasks", "reach", "push", "--episodes", "2", "--bits", "w4a16", "--json"]


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

    serial = _eval(capsys, tmp_path / "serial")
    parallel = _eval(capsys, tmp_path / "ray", "--workers", "2")
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


def test_bad_worker_options_fail_with_one_line(tmp_path: Path, capsys):
    model = str(default_model_dir("pi0"))
    base = ["eval", "--model", model, "--out", str(tmp_path)]
    assert main([*base, "--workers", "-1"]) == 2
    assert "--workers -1: pass 0 (serial) or more" in capsys.readouterr().err
    assert main([*base, "--address", "auto"]) == 2
    assert "pass --workers N too" in capsys.readouterr().err
