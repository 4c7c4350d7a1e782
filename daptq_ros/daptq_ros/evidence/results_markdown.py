"""The results table as markdown and plots: docs/results.md, results.json and the PNGs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daptq_ros.evidence.results_stats import (
    A4_POINT,
    ABLATIONS,
    BUDGET_BITS,
    COLUMNS,
    DAPTQ_METHODS,
    DRIFT_COLUMNS,
    FRONTIER_LINES,
    MILLIMETRES,
    SUCCESS_MARGIN,
    UNIFORM_BASELINES,
    FrontierPoint,
    MethodRun,
    ModelTable,
    TableOptions,
    frontier_points,
    paired_difference,
)


def budget_verdict(table: ModelTable) -> list[str]:
    """The acceptance comparison at <= BUDGET_BITS average weight bits, as markdown lines."""
    fp32 = table.runs["fp32"]
    in_budget = [
        run
        for name, run in table.runs.items()
        if run.average_bits <= BUDGET_BITS + 1e-9 and not name.startswith("ablation_")
    ]
    ranked = sorted(
        (run for run in in_budget if run.drift.get("ee_position_rmse", {}).get("mean") is not None),
        key=lambda run: run.drift["ee_position_rmse"]["mean"],
    )
    lines = [
        f"Methods at <= {BUDGET_BITS} average weight bits, by EE RMSE vs FP32 (lowest first): "
        + ", ".join(
            f"{run.name} {1000 * run.drift['ee_position_rmse']['mean']:.2f} mm" for run in ranked
        )
        + "."
    ]
    for name in DAPTQ_METHODS:
        run = table.runs.get(name)
        if run is None:
            continue
        if run.average_bits > BUDGET_BITS + 1e-9:
            lines.append(
                f"- {name}: {run.average_bits:.2f} average weight bits, above the "
                f"{BUDGET_BITS}-bit budget, so not compared at it."
            )
            continue
        delta, half, n = paired_difference(run, fp32, "success")
        rank = [r.name for r in ranked].index(name) + 1 if run in ranked else None
        within = delta >= -SUCCESS_MARGIN
        lines.append(
            f"- {name} ({run.average_bits:.2f} bits): success {_points(delta, half)} vs FP32 "
            f"over {n} paired episodes ({'within' if within else 'NOT within'} "
            f"{100 * SUCCESS_MARGIN:.0f} points); EE RMSE rank {rank} of {len(ranked)}"
            + (" (the lowest)." if rank == 1 else f" (lowest: {ranked[0].name}).")
        )
    return lines


def fold_lines(table: ModelTable) -> list[str]:
    """The CSRC fold check of every method that compensates, as markdown lines."""
    runs = table.runs.items()
    checked = {name: run.fold_check for name, run in runs if run.fold_check is not None}
    if not checked:
        return []
    verdicts = ", ".join(f"{name} {'passed' if ok else 'FAILED'}" for name, ok in checked.items())
    return [
        "Fold check (the compensated model has exactly the parameters and modules of the "
        f"uncompensated quantized one): {verdicts}.",
        "",
    ]


def ablation_section(table: ModelTable) -> list[str]:
    """The ablations heading, table and sentences; nothing when no ablation ran."""
    lines = ablation_lines(table)
    if len(lines) <= 2:  # the table header only
        return []
    return [
        "### Ablations (paired differences, ablation - full method, 95 % Student-t)",
        "",
        *lines,
        "",
    ]


def ablation_lines(table: ModelTable) -> list[str]:
    """Each DA-PTQ component's contribution: paired differences ablation - full method, then
    one sentence per component on what the intervals say it contributes on this model."""
    lines = [
        "| ablation | removes | Δ success (points) | Δ EE RMSE (mm) | paired episodes |",
        "|---|---|---|---|---|",
    ]
    verdicts = []
    for name, (full_name, removed) in ABLATIONS.items():
        run, full = table.runs.get(name), table.runs.get(full_name)
        if run is None or full is None:
            continue
        d_success, h_success, n = paired_difference(run, full, "success")
        d_rmse, h_rmse, _ = paired_difference(run, full, "ee_position_rmse")
        lines.append(
            f"| {name} vs {full_name} | {removed} | {_points(d_success, h_success)} | "
            f"{_scaled(d_rmse, h_rmse, 1000.0)} | {n} |"
        )
        verdicts.append(f"- {removed}: {_contribution(d_rmse, h_rmse, table.action_space)}")
    return [*lines, "", *verdicts] if verdicts else lines


def _contribution(delta: float, half: float | None, action_space: str) -> str:
    """What removing a component did to EE drift, read from its paired 95 % interval."""
    if math.isnan(delta):
        return "no paired drift measured."
    if delta == 0.0 and not half:
        return (
            f"identical rollouts without it: it changes nothing on this model ({action_space} "
            "actions, where the arm's Jacobian does not enter the action error)."
            if action_space == "ee_delta"
            else "identical rollouts without it: it changes nothing on this model."
        )
    if half is None or abs(delta) <= half:
        return (
            f"no measurable effect on drift here (Δ EE RMSE {_scaled(delta, half, 1000.0)} mm; "
            "the interval includes 0)."
        )
    direction = "more" if delta > 0 else "less"
    return (
        f"without it the arm drifts {direction} ({_scaled(delta, half, 1000.0)} mm EE RMSE), so "
        + ("it reduces drift here." if delta > 0 else "it adds drift here.")
    )


def _points(delta: float, half: float | None) -> str:
    """A success difference in percentage points, '± half-width' when known."""
    return _scaled(delta, half, 100.0, signed=True)


def _scaled(value: float, half: float | None, scale: float, signed: bool = True) -> str:
    """'value ± half' scaled; '' for NaN."""
    if math.isnan(value):
        return ""
    text = f"{scale * value:+.2f}" if signed else f"{scale * value:.2f}"
    return text + ("" if half is None else f" ± {scale * half:.2f}")


def table_rows(table: ModelTable) -> list[str]:
    """The markdown results table of one model."""
    header = ["method", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, run in table.runs.items():
        overall = run.eval_summary["overall"]
        low, high = overall["ci95"]
        cells = [f"{100 * overall['success_rate']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"]
        cells.append(f"{run.average_bits:.2f}")
        for key in DRIFT_COLUMNS:
            summary = run.drift.get(key, {})
            scale = 1000.0 if key in MILLIMETRES else 1.0
            mean, lo, hi = summary.get("mean"), summary.get("ci_low"), summary.get("ci_high")
            half = None if hi is None or lo is None else (hi - lo) / 2
            cells.append("" if mean is None else _scaled(mean, half, scale, signed=False))
        weight_bytes = run.eval_summary.get("weight_bytes")
        cells.append("" if weight_bytes is None else f"{weight_bytes / 1e6:.2f}")
        cells.append(f"{run.eval_summary['inference_ms']['p50']:.1f}")
        cells.append(f"{run.calibration_s:.1f}")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return lines


def plot_drift_curves(table: ModelTable, path: Path) -> Path:
    """Mean EE deviation from the FP32 rollout over episode time, one line per method."""
    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    for name, run in table.runs.items():
        if run.curve is None or name.startswith("ablation_"):
            continue
        grid, mean = run.curve
        style = "-" if name in DAPTQ_METHODS else "--"
        axes.plot(grid, 1000.0 * mean, style, label=name, linewidth=2 if style == "-" else 1)
    axes.set_xlabel("episode time (s)")
    axes.set_ylabel("mean EE deviation vs FP32 (mm)")
    axes.set_title(f"{table.label}: drift from the FP32 rollout of the same seed")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def plot_bit_maps(table: ModelTable, path: Path) -> Path:
    """Weight bits per Linear layer (module order) of the mixed-precision methods."""
    figure = Figure(figsize=(10, 4))
    axes = figure.add_subplot()
    for name in ("qvla", *DAPTQ_METHODS):
        run = table.runs.get(name)
        if run is None:
            continue
        bits = list(run.bit_map.values())
        axes.step(range(len(bits)), bits, where="mid", label=f"{name} ({run.average_bits:.2f})")
    axes.set_yscale("log", base=2)
    axes.set_yticks([2, 3, 4, 8, 16], labels=["2", "3", "4", "8", "16"])
    axes.set_xlabel("Linear layer (module order: backbone ... action head)")
    axes.set_ylabel("weight bits")
    axes.set_title(f"{table.label}: bit maps (average weight bits in the legend)")
    axes.legend(fontsize=8)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def frontier_section(table: ModelTable, out: Path) -> list[str]:
    """The low-bit frontier: figure, paired table per budget, and what it shows (markdown)."""
    points = frontier_points(table)
    if not points:
        return []
    figure = plot_frontier(table, out / f"results_{table.label}_frontier.png")
    fp32 = table.runs["fp32"]
    lines = [
        "### Low-bit frontier",
        "",
        f"![frontier]({figure.name})",
        "",
        "Activations are 8-bit per token (AWQ: 16) except at the A4 point, where every "
        "quantized layer's activations are 4-bit per token, simulated (quantize-dequantize "
        "before the weight kernel; there is no int4 x int4 kernel on the CPU).",
        "",
        "| budget | method | avg. W bits | success % [95 % CI] | Δ success vs FP32 (points) "
        "| EE RMSE vs FP32 (mm) | Δ EE RMSE vs DA-PTQ (mm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in points:
        for run in (point.daptq, *point.others):
            low, high = run.eval_summary["overall"]["ci95"]
            rate = run.eval_summary["overall"]["success_rate"]
            rmse = run.drift.get("ee_position_rmse", {})
            versus = "" if run is point.daptq else _rmse_difference(run, point.daptq)
            lines.append(
                f"| {point.where} | {run.name} | {run.average_bits:.2f} | "
                f"{100 * rate:.1f} [{100 * low:.1f}, {100 * high:.1f}] | "
                f"{_points(*paired_difference(run, fp32, 'success')[:2])} | "
                f"{_interval(rmse)} | {versus} |"
            )
    return [*lines, "", *(line for point in points for line in frontier_verdict(point, fp32)), ""]


def frontier_verdict(point: FrontierPoint, fp32: MethodRun) -> list[str]:
    """What one budget shows: DA-PTQ's drift against the best compared method, and its success
    against FP32 next to the uniform RTN/GPTQ baselines' (paired differences)."""
    daptq = point.daptq
    best = point.best_baseline()
    reduction = point.drift_reduction()
    if best is None or reduction is None:
        drift = "no drift measured yet"
    else:
        amount = f"{100 * abs(reduction):.0f} % {'less' if reduction >= 0 else 'more'}"
        drift = (
            f"{amount} EE drift than the best compared method, {best.name} "
            f"(paired Δ {_rmse_difference(daptq, best)} mm)"
        )
    delta, half, n = paired_difference(daptq, fp32, "success")
    within = "within" if delta >= -SUCCESS_MARGIN else "NOT within"
    uniform = [run for run in point.others if run.name.startswith(UNIFORM_BASELINES)]
    baselines = "; ".join(
        f"{run.name} {_points(*paired_difference(run, fp32, 'success')[:2])}" for run in uniform
    )
    ending = f"; uniform at that width: {baselines}." if baselines else "."
    return [
        f"- {point.where}: {daptq.name} ({daptq.average_bits:.2f} bits) has {drift}; "
        f"success {_points(delta, half)} vs FP32 over {n} paired episodes ({within} "
        f"{100 * SUCCESS_MARGIN:.0f} points){ending}"
    ]


def _rmse_difference(run: MethodRun, base: MethodRun) -> str:
    """run - base EE RMSE over the paired episodes, in mm with its 95 % half-width."""
    return _scaled(*paired_difference(run, base, "ee_position_rmse")[:2], 1000.0)


def _interval(summary: dict) -> str:
    """A drift summary's mean ± half-width of its 95 % interval, in mm ('' when missing)."""
    mean, low, high = summary.get("mean"), summary.get("ci_low"), summary.get("ci_high")
    if mean is None:
        return ""
    half = None if low is None or high is None else (high - low) / 2
    return _scaled(mean, half, 1000.0, signed=False)


def plot_frontier(table: ModelTable, path: Path) -> Path:
    """Success and EE drift against average weight bits, one line per method family."""
    figure = Figure(figsize=(11, 4.2))
    success_axes, drift_axes = figure.subplots(1, 2)
    fp32 = table.runs["fp32"].eval_summary["overall"]["success_rate"]
    success_axes.axhline(100 * fp32, color="black", linestyle=":", label="FP32")
    for label, names in FRONTIER_LINES.items():
        runs = sorted(
            (table.runs[n] for n in names if n in table.runs), key=lambda run: run.average_bits
        )
        if not runs:
            continue
        width = 2.5 if label.startswith("DA-PTQ") else 1.2
        rates = [100 * run.eval_summary["overall"]["success_rate"] for run in runs]
        success_axes.plot([r.average_bits for r in runs], rates, "o-", label=label, lw=width)
        scored = [run for run in runs if run.drift.get("ee_position_rmse")]
        drift_axes.plot(
            [run.average_bits for run in scored],
            [1000 * run.drift["ee_position_rmse"]["mean"] for run in scored],
            "o-",
            label=label,
            lw=width,
        )
    for name in A4_POINT:  # single points: one method each, with 4-bit activations
        run = table.runs.get(name)
        if run is None:
            continue
        rate = 100 * run.eval_summary["overall"]["success_rate"]
        success_axes.plot(run.average_bits, rate, "x", ms=8, mew=2, label=f"{name} (A4)")
        if run.drift.get("ee_position_rmse"):
            drift = 1000 * run.drift["ee_position_rmse"]["mean"]
            drift_axes.plot(run.average_bits, drift, "x", ms=8, mew=2, label=f"{name} (A4)")
    success_axes.set_ylabel("success %")
    drift_axes.set_ylabel("EE RMSE vs FP32 rollout (mm)")
    drift_axes.set_yscale("log")
    for axes in (success_axes, drift_axes):
        axes.set_xlabel("average weight bits")
        axes.grid(alpha=0.3)
    success_axes.legend(fontsize=7)
    figure.suptitle(f"{table.label}: the low-bit frontier (paired episodes)")
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def model_section(table: ModelTable, options: TableOptions, out: Path) -> list[str]:
    """The markdown section of one model: table, verdict at the budget, ablations, plots."""
    curves = plot_drift_curves(table, out / f"results_{table.label}_drift.png")
    bit_maps = plot_bit_maps(table, out / f"results_{table.label}_bits.png")
    fp32 = table.runs["fp32"].eval_summary["overall"]
    identity = table.identity
    revision = str(identity.get("git_revision") or "unknown")[:12]
    return [
        f"## {table.label} ({table.family})",
        "",
        f"Model `{table.model}` (weights sha256 {identity.get('weights_sha256', '?')[:12]}, "
        f"{identity.get('training_steps')} training steps, trained at revision {revision}): "
        f"FP32 success {100 * fp32['success_rate']:.1f} % over "
        f"{fp32['episodes']} episodes; {options.episodes} episodes per task, seeds from "
        f"{options.seed} for every method (paired). Quantization + evaluation took "
        f"{table.compute_s / 60:.0f} min.",
        "",
        *table_rows(table),
        "",
        "### At the weight budget",
        "",
        *budget_verdict(table),
        "",
        *fold_lines(table),
        *frontier_section(table, out),
        *ablation_section(table),
        f"![drift curves]({curves.name})",
        "",
        f"![bit maps]({bit_maps.name})",
        "",
        f"Drift reports per method: `drift/{table.label}/<method>/report.md`.",
        "",
    ]


def write_results(
    tables: Sequence[ModelTable], options: TableOptions, out: Path, note: str = ""
) -> Path:
    """Write out/results.md (one section per model) and out/results.json."""
    lines = [
        "# DA-PTQ results (generated by `daptq report` / bench/daptq_table.py)",
        "",
        "Every method quantized by `daptq quantize` on the same calibration bags and evaluated "
        "by `daptq eval` on the same seeds; drift is measured against the FP32 rollout of the "
        "same seed (mean ± half-width of the 95 % Student-t interval over the paired episodes; "
        "success with 95 % Wilson intervals). Average weight bits are over every Linear layer, "
        "weighted by weight count (FP32 = 32, kept layers = 16). Latency is the deployed "
        f"chunk latency at {options.threads} thread(s) on whatever else shared the CPU.",
        *(["", note] if note else []),
        "",
    ]
    for table in tables:
        lines += model_section(table, options, out)
    path = out / "results.md"
    path.write_text("\n".join(lines))
    record = {
        "calibration_bags": list(options.calib),
        "budget_bits": BUDGET_BITS,
        "models": {
            table.label: {
                "model": table.model,
                "family": table.family,
                "identity": table.identity,
                "compute_s": table.compute_s,
                "methods": {
                    name: {
                        "eval": run.eval_summary,
                        "calibration_s": run.calibration_s,
                        "average_bits": run.average_bits,
                        "fold_check": run.fold_check,
                        "drift": run.drift,
                    }
                    for name, run in table.runs.items()
                },
            }
            for table in tables
        },
    }
    (out / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
