"""`daptq quantize`: calibration bags -> quantized model directory, for every method."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

from daptq_ros.bags.writer import BagWriter
from daptq_ros.cli import main
from daptq_ros.policy.inference import load_policy
from daptq_ros.policy.model_dir import load_model_dir
from daptq_ros.quant.layers import QuantLinear

pytestmark = [pytest.mark.sim, pytest.mark.slow]
IMAGE = 32
SMALL = ["--bins", "1", "--batches", "2", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, sim_renders: None) -> dict[str, Path]:
    """Three reach demonstrations at 32 px and a tiny model of each family trained on them."""
    root = tmp_path_factory.mktemp("quantize")
    demos = root / "demos"
    collect = ["collect", "--tasks", "reach", "--episodes", "3", "--image-size", str(IMAGE)]
    assert main([*collect, "--out", str(demos)]) == 0
    paths = {"demos": demos}
    for family in ("pi0", "cogact"):
        paths[family] = root / family
        train = ["train", "--data", str(demos), "--family", family, "--size", "tiny"]
        train += ["--steps", "4", "--batch-size", "4", "--out", str(paths[family])]
        assert main(train) == 0
    return paths


def quantize(setup, tmp_path, capsys, family: str, *extra: str) -> dict:
    out = tmp_path / f"{family}_q"
    # the tiny models are 32-64 wide: groups of 32 let the int4 format cover their layers
    bits = tmp_path / "w4a8_g32.yaml"
    bits.write_text("method: rtn\nweight_bits: 4\nactivation_bits: 8\ngroup_size: 32\n")
    args = ["quantize", "--model", str(setup[family]), "--calib", str(setup["demos"])]
    args += ["--config", str(bits)]
    assert main([*args, *SMALL, *extra, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    report["out"] = out
    return report


@pytest.mark.parametrize("family", ["cogact", "pi0"])
def test_daptq_topk_writes_a_loadable_quantized_model_and_a_report(setup, tmp_path, capsys, family):
    report = quantize(setup, tmp_path, capsys, family, "--method", "daptq")
    out = report["out"]
    assert report["fold_check"] is True
    assert report["config"]["keep"]  # the most sensitive layers stay bf16
    assert len(report["drift_scores"]) == 4
    assert np.isclose(np.mean(report["drift_scores"]), 1.0)
    for name in ("report.md", "calibration.json", "bits.yaml", "sensitivities.png"):
        assert (out / name).is_file(), name
    loaded = load_model_dir(out)
    assert any(isinstance(m, QuantLinear) for m in loaded.model.modules())
    chunk = load_policy(out).predict(
        np.zeros((IMAGE, 2 * IMAGE, 3), np.uint8), "reach the goal", np.zeros(4)
    )
    assert np.isfinite(chunk.actions).all()


def test_daptq_budget_meets_its_average_bits(setup, tmp_path, capsys):
    extra = ("--method", "daptq", "--allocation", "budget", "--average-bits", "4.5")
    report = quantize(setup, tmp_path, capsys, "cogact", *extra)
    assert report["compensation"]["average_bits"] <= 4.5 + 1e-9
    bits = {o["weight_bits"] for o in report["config"]["overrides"]}
    assert bits <= {2, 3, 4, 8}


@pytest.mark.parametrize("method", ["rtn", "gptq", "qvla"])
def test_baselines_quantize(setup, tmp_path, capsys, method):
    report = quantize(setup, tmp_path, capsys, "cogact", "--method", method)
    loaded = load_model_dir(report["out"])
    assert any(isinstance(m, QuantLinear) for m in loaded.model.modules())


def test_qvla_reaches_budgets_below_4_bits_with_the_knapsack_choices(setup, tmp_path, capsys):
    report = quantize(setup, tmp_path, capsys, "cogact", "--method", "qvla", "--average-bits", "3")
    bits = {o["weight_bits"] for o in report["config"]["overrides"]}
    assert bits & {2, 3} and bits <= {2, 3, 4, 8, 16}


@pytest.mark.parametrize("method", ["rtn", "daptq", "qvla"])
def test_default_quantization_fits_every_layer_and_lists_what_changed(
    setup, tmp_path, capsys, method
):
    """The default w4a8 (groups of 128) on a model 32-64 wide: no layer silently stays bf16."""
    out = tmp_path / "q"
    args = ["quantize", "--model", str(setup["pi0"]), "--calib", str(setup["demos"])]
    assert main([*args, "--method", method, *SMALL, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    listed = dict(line.split(": ", 1) for line in report["kernel_fallbacks"])
    assert any(change.startswith("group 128 -> ") for change in listed.values()), listed
    kept = set(report["config"]["keep"])
    for name, module in load_model_dir(out).model.named_modules():
        change = listed.get(name, "")
        if isinstance(module, QuantLinear) and module.fmt.bits <= 4:
            group = int(change.split("-> ")[1].split()[0]) if change.startswith("group") else 128
            fmt = (module.fmt.granularity, module.fmt.group_size)
            assert fmt == ("group", group) or change.startswith("per-channel"), (name, fmt)
        elif isinstance(module, torch.nn.Linear) and not isinstance(module, QuantLinear):
            # bf16 only where the config keeps it: a listed width, or the bit map's own choice
            assert change.startswith("kept") or (method != "rtn" and name in kept), name
    assert "layers whose width the format did not fit" in (out / "report.md").read_text()


def test_a_config_no_kernel_runs_is_refused_before_calibration(setup, tmp_path, capsys):
    bits = tmp_path / "g8.yaml"
    bits.write_text("method: rtn\nweight_bits: 4\ngroup_size: 8\n")
    args = ["quantize", "--model", str(setup["pi0"]), "--calib", str(tmp_path / "no_bags")]
    args += ["--method", "rtn", "--config", str(bits)]
    assert main([*args, "--out", str(tmp_path / "q")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "group_size 8" in lines[0] and "32, 64, 128" in lines[0], lines


def test_fewer_bags_than_bins_fails_before_any_work(setup, tmp_path, capsys):
    args = ["quantize", "--model", str(setup["cogact"]), "--calib", str(setup["demos"])]
    code = main([*args, "--method", "daptq", "--bins", "6", "--out", str(tmp_path / "q")])
    assert code == 2
    assert "fewer than one per bin" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_a_bag_missing_a_topic_is_named(setup, tmp_path, capsys):
    calib = tmp_path / "calib"
    shutil.copytree(setup["demos"], calib)
    partial = calib / "partial"
    with BagWriter(partial) as bag:  # a recording without the end-effector pose and actions
        bag.add_topic("/instruction", "std_msgs/msg/String")
        bag.write("/instruction", bag.types["std_msgs/msg/String"](data="reach"), 1)
    args = ["quantize", "--model", str(setup["cogact"]), "--calib", str(calib), "--bins", "1"]
    assert main([*args, "--method", "rtn", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "/ee_pose" in err and "partial" in err


def test_real_jacobian_scores_of_the_simulated_sawyer(setup, tmp_path, capsys):
    extra = ("--method", "daptq", "--scores", "jacobian", "--urdf", "sawyer_sim")
    report = quantize(setup, tmp_path, capsys, "cogact", *extra)
    scores = np.array(report["drift_scores"])
    assert np.isclose(scores.mean(), 1.0) and scores[3] == pytest.approx(1.0)  # the gripper
    assert not np.allclose(scores[:3], scores[0])  # the arm resolves x, y, z unequally


def test_eval_runs_a_quantized_directory_on_the_deployed_kernels(setup, tmp_path, capsys):
    report = quantize(setup, tmp_path, capsys, "cogact", "--method", "daptq")
    run = tmp_path / "run"
    args = ["eval", "--model", str(report["out"]), "--tasks", "reach", "--episodes", "1"]
    assert main([*args, "--threads", "1", "--out", str(run), "--json"]) == 0
    summary = json.loads((run / "eval.json").read_text())
    assert summary["bit_config"] == "daptq_topk" and summary["weight_bytes"] > 0
    bits = ["eval", "--model", str(report["out"]), "--bits", "w8a8", "--out", str(tmp_path / "x")]
    assert main(bits) == 2
    assert "already quantized" in capsys.readouterr().err


def test_report_runs_every_method_on_paired_episodes_and_resumes(setup, tmp_path, capsys):
    methods = ["rtn_w8a8", "daptq_topk", "ablation_allocation_only"]
    args = ["report", "--models", str(setup["pi0"]), "--calib", str(setup["demos"])]
    args += ["--methods", *methods, "--tasks", "reach", "--episodes", "2", "--bins", "1"]
    args += ["--threads", "1", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "docs")]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    results = record["models"]["pi0"]["methods"]
    assert list(results) == ["fp32", *methods]
    assert results["fp32"]["average_bits"] == 32
    assert 8 <= results["rtn_w8a8"]["average_bits"] < 16  # narrow layers stay bf16
    for name in methods:
        assert results[name]["eval"]["overall"]["episodes"] == 2
        assert results[name]["drift"]["ee_position_rmse"]["n"] == 2
    markdown = (tmp_path / "docs" / "results.md").read_text()
    assert "## pi0 (pi0)" in markdown and "### At the weight budget" in markdown
    ablation = next(line for line in markdown.splitlines() if " vs daptq_topk |" in line)
    assert ablation.count("±") == 2  # success and EE RMSE differences, both with intervals
    for name in ("results_pi0_drift.png", "results_pi0_bits.png"):
        assert (tmp_path / "docs" / name).stat().st_size > 0
    assert "Fold check" in markdown and "daptq_topk passed" in markdown
    assert (tmp_path / "docs" / "drift" / "pi0" / "daptq_topk" / "report.md").is_file()

    calibration = tmp_path / "work" / "pi0" / "models" / "daptq_topk" / "calibration.json"
    before = calibration.stat().st_mtime_ns
    assert (tmp_path / "work" / "pi0" / "runs" / "daptq_topk" / "drift_scores.json").is_file()
    assert main(args) == 0  # finished steps are kept: nothing is quantized again
    assert calibration.stat().st_mtime_ns == before
    sha = record["models"]["pi0"]["identity"]["weights_sha256"]
    assert f"weights sha256 {sha[:12]}, 4 training steps" in markdown
    assert re.search(r"FP32 success \d+\.\d % over 2 episodes", markdown)

    changed = tmp_path / "pi0"  # same name, other weights: the kept runs must not be reused
    shutil.copytree(setup["cogact"], changed)
    args[args.index("--models") + 1] = str(changed)
    capsys.readouterr()
    assert main(args) == 2
    assert "holds the runs of other weights" in capsys.readouterr().err


def test_report_on_ray_workers_gives_the_serial_results(setup, tmp_path, capsys):
    """Quantizations as Ray tasks and episodes on 2 Ray workers: the serial per-episode
    outcomes, bit maps and drift numbers."""
    pytest.importorskip("ray")
    args = ["report", "--models", str(setup["pi0"]), "--calib", str(setup["demos"])]
    args += ["--methods", "rtn_w4a8", "daptq_topk", "--tasks", "reach", "--episodes", "2"]
    args += ["--bins", "1", "--threads", "1", "--json"]
    records = {}
    for workers in ("0", "2"):
        folder = tmp_path / f"workers{workers}"
        out = ["--work", str(folder / "work"), "--out", str(folder / "docs")]
        assert main([*args, *out, "--workers", workers]) == 0
        records[workers] = json.loads(capsys.readouterr().out)["models"]["pi0"]["methods"]
    serial, parallel = records["0"], records["2"]

    def outcomes(run: dict) -> list[tuple]:
        return [
            (e["task"], e["seed"], e["success"], e["steps"]) for e in run["eval"]["episodes_run"]
        ]

    assert list(parallel) == list(serial) == ["fp32", "rtn_w4a8", "daptq_topk"]
    for name, run in serial.items():
        assert parallel[name]["eval"]["workers"] == 2 and "workers" not in run["eval"]
        assert outcomes(parallel[name]) == outcomes(run) and len(outcomes(run)) == 2
        assert parallel[name]["average_bits"] == run["average_bits"]
        assert parallel[name]["drift"] == run["drift"]


def test_report_on_a_ray_cluster_with_the_readme_commands(setup, tmp_path):
    """The three cluster commands of docs/commands.md on loopback: a head and a second node (one
    CPU each), token authentication exported on both and for `daptq report`, which runs on both
    nodes."""
    pytest.importorskip("ray")
    import os
    import socket
    import subprocess
    import time

    import psutil

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    ray = str(Path(sys.executable).with_name("ray"))
    head = [ray, "start", "--head", "--port", str(port), "--num-cpus", "1", "--block"]
    node = [ray, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--block"]
    report = [sys.executable, "-m", "daptq_ros.cli", "report", "--models", str(setup["cogact"])]
    report += ["--calib", str(setup["demos"]), "--methods", "rtn_w8a8", "--tasks", "reach"]
    report += ["--episodes", "2", "--bins", "1", "--work", str(tmp_path / "work")]
    report += ["--out", str(tmp_path / "docs"), "--workers", "2", "--address", f"127.0.0.1:{port}"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    started = [subprocess.Popen(head, **quiet)]
    try:
        time.sleep(5)  # the head's GCS is up before the node looks for it (the node retries)
        started.append(subprocess.Popen(node, **quiet))
        deadline = time.monotonic() + 90
        while (run := subprocess.run(report, capture_output=True, text=True, env=env)).returncode:
            assert time.monotonic() < deadline, run.stderr  # the head is not up yet
            time.sleep(2)
    finally:  # `ray start --block` leaves some of its processes behind on SIGTERM: stop them all
        tree = [psutil.Process(p.pid) for p in started]
        tree += [child for p in tree for child in p.children(recursive=True)]
        for process in tree:
            process.terminate()
        for process in psutil.wait_procs(tree, timeout=30)[1]:
            process.kill()
    record = json.loads((tmp_path / "docs" / "results.json").read_text())
    for method in record["models"]["cogact"]["methods"].values():
        assert method["eval"]["workers"] == 2 and method["eval"]["ray_nodes"] == 2
        assert method["eval"]["failed_runs"] == [] and method["eval"]["overall"]["episodes"] == 2


def test_a_failed_quantization_names_its_method_and_keeps_finished_steps(
    setup, tmp_path, capsys, monkeypatch
):
    from daptq_ros.evidence.results_stats import METHODS

    monkeypatch.setitem(METHODS, "broken", ["--method", "rtn", "--config", "w5a5"])
    args = ["report", "--models", str(setup["cogact"]), "--calib", str(setup["demos"])]
    args += ["--methods", "rtn_w8a8", "broken", "--tasks", "reach", "--episodes", "1"]
    args += ["--bins", "1", "--workers", "0", "--work", str(tmp_path / "w")]
    assert main([*args, "--out", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert "failed for 1 method(s): broken on" in err and "run the report again" in err
    assert (tmp_path / "w" / "cogact" / "models" / "rtn_w8a8" / "calibration.json").is_file()


def test_daptq_with_gptq_rounding_keeps_the_bit_map_and_the_fold(setup, tmp_path, capsys):
    extra = ("--method", "daptq", "--allocation", "budget", "--average-bits", "4.5")
    (tmp_path / "rtn").mkdir(), (tmp_path / "gptq").mkdir()
    rtn = quantize(setup, tmp_path / "rtn", capsys, "cogact", *extra)
    gptq = quantize(setup, tmp_path / "gptq", capsys, "cogact", *extra, "--rounding", "gptq")
    assert gptq["config"]["method"] == "gptq" and gptq["config"]["name"] == "daptq_budget_gptq"
    assert gptq["config"]["overrides"] == rtn["config"]["overrides"]  # the same allocation
    assert gptq["fold_check"] is True
    rtn_weights = load_model_dir(rtn["out"]).model.state_dict()
    gptq_weights = load_model_dir(gptq["out"]).model.state_dict()
    assert any(not torch.equal(rtn_weights[k], gptq_weights[k]) for k in rtn_weights)


def test_csrc_on_the_action_path_compensates_low_bit_layers_and_is_kept_only_if_it_helps(
    setup, tmp_path, capsys
):
    from daptq_ros.quant import load_config

    extra = ("--method", "daptq", "--allocation", "budget", "--average-bits", "3")
    (tmp_path / "path").mkdir(), (tmp_path / "none").mkdir()
    path = quantize(
        setup, tmp_path / "path", capsys, "cogact", *extra, "--csrc-layers", "action-path"
    )
    plain = quantize(setup, tmp_path / "none", capsys, "cogact", *extra, "--no-csrc")
    assert path["config"]["name"] == "daptq_budget_pathcsrc"
    compensation = path["compensation"]
    assert compensation["placement"] == "action-path" and 0 < len(compensation["layers"]) <= 4
    config = load_config(path["out"] / "bits.yaml")
    assert all(config.spec_for(layer).weight_bits <= 3 for layer in compensation["layers"])
    assert compensation["kept"] == (compensation["loss_after"] < compensation["loss_before"])
    weights = load_model_dir(path["out"]).model.state_dict()
    plain_weights = load_model_dir(plain["out"]).model.state_dict()
    unchanged = all(torch.equal(weights[k], plain_weights[k]) for k in weights)
    assert unchanged != compensation["kept"]  # compensated weights only when kept
    assert path["fold_check"] is True


def test_csrc_folded_into_the_scales_keeps_every_code_and_reports_the_action_loss(
    setup, tmp_path, capsys
):
    extra = ("--method", "daptq", "--allocation", "budget", "--average-bits", "3")
    (tmp_path / "scales").mkdir(), (tmp_path / "none").mkdir()
    scales = quantize(setup, tmp_path / "scales", capsys, "cogact", *extra, "--csrc-fold", "scales")
    plain = quantize(setup, tmp_path / "none", capsys, "cogact", *extra, "--no-csrc")
    assert scales["config"]["name"] == "daptq_budget_scalefold"
    compensation = scales["compensation"]
    assert compensation["placement"] == "interface" and compensation["fold"] == "scales"
    assert compensation["kept"] is True  # the paper's placement is always applied
    assert min(compensation[k] for k in ("loss_fp", "loss_before", "loss_after")) > 0
    model = load_model_dir(scales["out"]).model
    reference = dict(load_model_dir(plain["out"]).model.named_modules())
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert quantized and all(torch.equal(m.codes, reference[n].codes) for n, m in quantized.items())
    weights, plain_weights = model.state_dict(), load_model_dir(plain["out"]).model.state_dict()
    assert any(not torch.equal(weights[k], plain_weights[k]) for k in weights)


def test_quantize_prints_a_short_table_and_the_report_path_unless_verbose(setup, tmp_path, capsys):
    args = ["quantize", "--model", str(setup["pi0"]), "--calib", str(setup["demos"])]
    args += ["--method", "daptq", *SMALL]
    assert main([*args, "--out", str(tmp_path / "q")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["method", "bit", "config"] and lines[1].startswith("daptq")
    assert lines[-1] == f"report: {tmp_path / 'q' / 'report.md'}" and len(lines) == 4
    assert "Interface statistics" in (tmp_path / "q" / "report.md").read_text()
    assert main([*args, "--verbose", "--out", str(tmp_path / "v")]) == 0
    assert "Interface statistics" in capsys.readouterr().out
