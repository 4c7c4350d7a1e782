"""The results table's computed comparisons: paired differences, the budget verdict."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from daptq_ros.errors import DaptqError
from daptq_ros.evidence.results_markdown import budget_verdict
from daptq_ros.evidence.results_stats import (
    MethodRun,
    ModelTable,
    check_methods,
    paired_difference,
)


def method_run(name: str, bits: float, successes: list[int], rmse: list[float | None]) -> MethodRun:
    """A run over episodes seeded 0.. on one task, with a drift summary of the given RMSEs."""
    run = MethodRun(name, {}, 0.0, bits, {})
    run.episodes = {
        ("reach", seed): {"success": float(s), "ee_position_rmse": r}
        for seed, (s, r) in enumerate(zip(successes, rmse, strict=True))
    }
    values = [r for r in rmse if r is not None]
    if values:
        run.drift = {"ee_position_rmse": {"mean": sum(values) / len(values)}}
    return run


def test_paired_difference_uses_only_episodes_both_runs_have():
    base = method_run("fp32", 32, [1, 1, 0, 0], [0.0, 0.0, 0.0, 0.0])
    run = method_run("q", 4, [1, 0, 0, 1], [0.01, 0.03, None, 0.02])
    mean, half, n = paired_difference(run, base, "success")
    assert n == 4 and mean == pytest.approx(0.0) and half > 0
    mean, _, n = paired_difference(run, base, "ee_position_rmse")
    assert n == 3 and mean == pytest.approx(0.02)


def test_paired_difference_without_common_episodes_is_nan():
    base = method_run("fp32", 32, [1], [0.0])
    run = method_run("q", 4, [1], [None])
    mean, half, n = paired_difference(run, base, "ee_position_rmse")
    assert math.isnan(mean) and half is None and n == 0


def test_budget_verdict_ranks_methods_inside_the_budget_by_drift():
    runs = {
        "fp32": method_run("fp32", 32, [1, 1, 1, 1], [None] * 4),
        "rtn_w8a8": method_run("rtn_w8a8", 8, [1, 1, 1, 1], [0.001] * 4),  # outside 4.5 bits
        "gptq_w4": method_run("gptq_w4", 4.02, [1, 1, 1, 0], [0.010] * 4),
        "daptq_topk": method_run("daptq_topk", 5.1, [1, 1, 1, 1], [0.002] * 4),
        "daptq_budget": method_run("daptq_budget", 4.48, [1, 1, 0, 0], [0.020] * 4),
    }
    lines = budget_verdict(ModelTable("m", "dir", "pi0", runs))
    assert lines[0].endswith("gptq_w4 10.00 mm, daptq_budget 20.00 mm.")
    assert "daptq_topk: 5.10 average weight bits, above" in lines[1]
    assert "NOT within 5 points" in lines[2] and "rank 2 of 2 (lowest: gptq_w4)" in lines[2]


def test_unknown_method_is_refused_and_fp32_always_runs_first():
    assert check_methods(["daptq_budget", "fp32"]) == ("fp32", "daptq_budget")
    with pytest.raises(DaptqError, match="unknown method 'int3'"):
        check_methods(["int3"])


def test_mean_drift_curve_stops_where_few_episodes_still_run():
    from types import SimpleNamespace

    import numpy as np

    from daptq_ros.evidence.results_stats import mean_deviation_curve

    def episode(duration: float, deviation: float) -> SimpleNamespace:
        stamps = np.linspace(0.0, duration, 20)
        positions = np.zeros((20, 3))
        pair = SimpleNamespace(
            stamps=stamps,
            exec_positions=positions + np.array([deviation, 0.0, 0.0]),
            ref_positions=positions,
        )
        return SimpleNamespace(pair=pair)

    grid, mean = mean_deviation_curve([episode(1.0, 0.01)] * 4 + [episode(3.0, 0.5)])
    assert grid[-1] == pytest.approx(1.0)  # 1 of 5 episodes past 1 s: below a quarter
    assert mean[0] == pytest.approx((4 * 0.01 + 0.5) / 5)


def test_an_interrupted_evaluation_is_rerun_from_scratch(tmp_path):
    from daptq_ros.commands.results_table import _evaluate
    from daptq_ros.evidence.results_stats import TableOptions

    partial = tmp_path / "runs" / "fp32" / "reach" / "reach_seed100000"
    partial.mkdir(parents=True)  # a stopped `daptq eval` left bags but no eval.json
    calls = []

    def daptq(args):
        out = Path(args[args.index("--out") + 1])
        calls.append(out.exists())  # daptq eval refuses an existing episode folder
        out.mkdir(parents=True)
        (out / "eval.json").write_text('{"overall": {"successes": 1}}')
        return 0

    options = TableOptions(calib=("calib",), episodes=1)
    summary = _evaluate("fp32", tmp_path / "model", options, tmp_path, daptq)
    assert calls == [False] and summary == {"overall": {"successes": 1}}
    assert _evaluate("fp32", tmp_path / "model", options, tmp_path, daptq) == summary
    assert calls == [False]  # a finished evaluation is kept


def _with_summary(run: MethodRun) -> MethodRun:
    """The eval summary the markdown reads: overall success rate and its interval."""
    rate = sum(e["success"] for e in run.episodes.values()) / len(run.episodes)
    run.eval_summary = {"overall": {"success_rate": rate, "ci95": [0.0, 1.0]}}
    return run


def test_frontier_compares_daptq_with_the_best_method_at_each_budget(tmp_path):
    from daptq_ros.evidence.results_markdown import frontier_section
    from daptq_ros.evidence.results_stats import frontier_points

    runs = {
        "fp32": method_run("fp32", 32, [1, 1, 1, 1], [None] * 4),
        "daptq_b3.0": method_run("daptq_b3.0", 2.98, [1, 1, 1, 1], [0.004] * 4),
        "qvla_b3.0": method_run("qvla_b3.0", 2.99, [1, 1, 0, 1], [0.008] * 4),
        "rtn_w3a8": method_run("rtn_w3a8", 3.02, [1, 0, 0, 0], [0.020] * 4),
        "gptq_w3a8": method_run("gptq_w3a8", 3.02, [1, 1, 0, 0], [0.010] * 4),
    }
    table = ModelTable("m", "dir", "pi0", {name: _with_summary(r) for name, r in runs.items()})
    (point,) = [p for p in frontier_points(table) if p.budget == 3.0]
    assert [run.name for run in point.others] == ["qvla_b3.0", "rtn_w3a8", "gptq_w3a8"]
    assert point.best_baseline().name == "qvla_b3.0"
    assert point.drift_reduction() == pytest.approx(0.5)
    # 3.5 shares the uniform W3 baselines but has no DA-PTQ run: no point.
    assert [p.budget for p in frontier_points(table)] == [3.0]

    lines = frontier_section(table, tmp_path)
    assert (tmp_path / "results_m_frontier.png").stat().st_size > 0
    verdict = next(line for line in lines if line.startswith("- 3.0 bits"))
    assert "50 % less EE drift than the best compared method, qvla_b3.0" in verdict
    assert "success +0.00 ± 0.00 vs FP32 over 4 paired episodes (within 5 points)" in verdict
    assert "rtn_w3a8 -75.00 ±" in verdict and "gptq_w3a8 -50.00 ±" in verdict
    row = next(line for line in lines if line.startswith("| 3.0 bits | rtn_w3a8 |"))
    assert row.endswith("| +16.00 ± 0.00 |")  # rtn - DA-PTQ EE RMSE, paired, in mm


def test_each_ablation_gets_a_sentence_read_from_its_interval():
    from daptq_ros.evidence.results_markdown import ablation_lines

    full = [0.010, 0.012, 0.011, 0.013]
    runs = {
        "daptq_topk": method_run("daptq_topk", 5.1, [1, 1, 1, 1], full),
        "ablation_jacobian_scores": method_run("j", 5.1, [1, 1, 1, 1], full),  # the same runs
        "ablation_allocation_only": method_run(
            "a", 5.1, [1, 1, 1, 1], [0.011, 0.011, 0.012, 0.012]
        ),
        "ablation_csrc_only": method_run("c", 4.0, [1, 1, 1, 1], [0.020, 0.022, 0.021, 0.023]),
    }
    table = ModelTable("m", "dir", "pi0", runs, action_space="ee_delta")
    sentences = [line for line in ablation_lines(table) if line.startswith("- ")]
    jacobian = next(s for s in sentences if s.startswith("- virtual-chain scores"))
    assert "identical rollouts" in jacobian and "ee_delta actions" in jacobian
    csrc = next(s for s in sentences if s.startswith("- CSRC"))
    assert "no measurable effect" in csrc and "includes 0" in csrc
    allocation = next(s for s in sentences if s.startswith("- motion-driven allocation"))
    assert "drifts more (+10.00 ± 0.00 mm EE RMSE), so it reduces drift here." in allocation


def test_a_frontier_where_daptq_drifts_more_says_so_and_no_ablations_no_section(tmp_path):
    from daptq_ros.evidence.results_markdown import ablation_section, frontier_verdict
    from daptq_ros.evidence.results_stats import frontier_points

    runs = {
        "fp32": method_run("fp32", 32, [1, 1], [None] * 2),
        "daptq_b2.5": method_run("daptq_b2.5", 2.5, [1, 1], [0.030, 0.030]),
        "gptq_w2a8": method_run("gptq_w2a8", 2.03, [1, 1], [0.020, 0.020]),
    }
    table = ModelTable("m", "dir", "pi0", {name: _with_summary(r) for name, r in runs.items()})
    (point,) = frontier_points(table)
    (verdict,) = frontier_verdict(point, table.runs["fp32"])
    assert "50 % more EE drift than the best compared method, gptq_w2a8" in verdict
    assert ablation_section(table) == []


def test_the_w4a4_point_compares_daptq_with_4_bit_activations_to_the_uniform_w4a4_baselines(
    tmp_path,
):
    from daptq_ros.evidence.results_markdown import frontier_section
    from daptq_ros.evidence.results_stats import METHODS, frontier_points

    assert METHODS["daptq_a4"][METHODS["daptq_a4"].index("--config") + 1] == "w4a4"
    runs = {
        "fp32": method_run("fp32", 32, [1, 1, 1, 1], [None] * 4),
        "daptq_budget_gptq": method_run("daptq_budget_gptq", 4.49, [1, 1, 1, 1], [0.002] * 4),
        "daptq_a4": method_run("daptq_a4", 4.49, [1, 1, 1, 0], [0.010] * 4),
        "rtn_w4a4": method_run("rtn_w4a4", 4.02, [0, 0, 0, 0], [0.080] * 4),
        "smoothquant_w4a4": method_run("smoothquant_w4a4", 4.02, [1, 0, 0, 0], [0.040] * 4),
    }
    table = ModelTable("m", "dir", "pi0", {name: _with_summary(r) for name, r in runs.items()})
    points = frontier_points(table)
    assert [(p.where, p.daptq.name) for p in points] == [
        ("4.5 bits", "daptq_budget_gptq"),
        ("4.5 bits, A4", "daptq_a4"),
    ]
    assert [r.name for r in points[1].others] == ["rtn_w4a4", "smoothquant_w4a4"]
    lines = frontier_section(table, tmp_path)
    verdict = next(line for line in lines if line.startswith("- 4.5 bits, A4: daptq_a4"))
    assert "75 % less EE drift than the best compared method, smoothquant_w4a4" in verdict
    assert "uniform at that width: rtn_w4a4 -100.00" in verdict
