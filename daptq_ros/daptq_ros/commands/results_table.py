"""The paper-style results table (our Tables 2-4): every quantization method on paired episodes.

For each model directory: FP32 and BF16 references, RTN W8A8 / W4A8, SmoothQuant W8A8, AWQ W4,
GPTQ W4, the QVLA-style baseline, DA-PTQ (top-k and budgeted) and the ablations, each quantized
by `daptq quantize` on the calibration bags and evaluated by `daptq eval` on the same seeds as
FP32, exactly as a user would run them. Finished steps are kept in the work folder, so an
interrupted table resumes. The comparison at the weight budget, the ablations (paired
differences with 95 % intervals) and two plots (drift curves, bit maps) are computed from the
runs, never written by hand.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daptq_ros.errors import DaptqError

# name -> `daptq quantize` arguments (None: the FP32 reference, evaluated as it is).
METHODS: dict[str, list[str] | None] = {
    "fp32": None,
    "bf16": ["--method", "rtn", "--config", "bf16"],
    "rtn_w8a8": ["--method", "rtn", "--config", "w8a8"],
    "rtn_w4a8": ["--method", "rtn", "--config", "w4a8"],
    "smoothquant_w8a8": ["--method", "smoothquant", "--config", "w8a8"],
    "awq_w4": ["--method", "awq", "--config", "w4a16"],
    "gptq_w4": ["--method", "gptq", "--config", "w4a16"],
    "gptq_w4a8": ["--method", "gptq", "--config", "w4a8"],
    "qvla": ["--method", "qvla", "--config", "w4a8", "--average-bits", "4.5"],
    "daptq_topk": ["--method", "daptq", "--config", "w4a8"],
    "daptq_budget": ["--method", "daptq", "--config", "w4a8", "--allocation", "budget"],
    "daptq_budget_gptq": [
        *("--method", "daptq", "--config", "w4a8", "--allocation", "budget"),
        *("--rounding", "gptq"),
    ],
    "ablation_csrc_only": ["--method", "daptq", "--config", "w4a8", "--allocation", "uniform"],
    "ablation_allocation_only": ["--method", "daptq", "--config", "w4a8", "--no-csrc"],
    "ablation_jacobian_scores": [
        *("--method", "daptq", "--config", "w4a8", "--scores", "jacobian"),
        *("--urdf", "sawyer_sim"),
    ],
}
DAPTQ_METHODS = ("daptq_topk", "daptq_budget", "daptq_budget_gptq")
# ablation -> (the full method it removes something from, what it removes).
ABLATIONS = {
    "ablation_allocation_only": ("daptq_topk", "CSRC"),
    "ablation_csrc_only": ("daptq_topk", "motion-driven allocation (uniform W4 instead)"),
    "ablation_jacobian_scores": ("daptq_topk", "virtual-chain scores (real Jacobian instead)"),
    "daptq_budget": ("daptq_budget_gptq", "GPTQ rounding (round-to-nearest instead)"),
}
BUDGET_BITS = 4.5  # the acceptance budget: average weight bits
SUCCESS_MARGIN = 0.05  # DA-PTQ's success must stay within 5 points of FP32
COLUMNS = (
    ("success", "success % [95 % CI]"),
    ("average_bits", "avg. W bits"),
    ("ee_position_rmse", "EE RMSE vs FP32 (mm)"),
    ("ee_position_final_error", "final dev. (mm)"),
    ("drift_growth_rate", "drift growth (mm/s)"),
    ("dtw_distance", "DTW (mm)"),
    ("ee_jerk_rms", "jerk (m/s^3)"),
    ("weight_mb", "weights (MB)"),
    ("latency_ms", "latency/chunk (ms)"),
    ("calibration_s", "calib. (s)"),
)
DRIFT_COLUMNS = ("ee_position_rmse", "ee_position_final_error", "drift_growth_rate")
DRIFT_COLUMNS += ("dtw_distance", "ee_jerk_rms")
MILLIMETRES = {"ee_position_rmse", "ee_position_final_error", "drift_growth_rate", "dtw_distance"}
CURVE_STEP_S = 0.05  # time grid of the mean drift curves
CURVE_MIN_SHARE = 0.25  # the curves stop where fewer episodes than this share still run

Runner = Callable[[list[str]], int]  # the `daptq` CLI: arguments -> exit status
IDENTITY_FILE = "model_identity.json"  # in each model's work folder: whose runs it holds


@dataclass(frozen=True)
class TableOptions:
    """What every model's table is run with (the same seeds and episodes for every method)."""

    calib: tuple[str, ...]
    methods: tuple[str, ...] = tuple(METHODS)
    tasks: tuple[str, ...] | None = None
    episodes: int = 50
    seed: int = 100_000
    bins: int = 6
    threads: int = 2


@dataclass
class MethodRun:
    """One method's results on one model: eval summary, bits, drift, per-episode values."""

    name: str
    eval_summary: dict[str, Any]
    calibration_s: float
    average_bits: float
    bit_map: dict[str, int]
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (task, seed) -> {"success": 0/1, "ee_position_rmse": metres or None}
    episodes: dict[tuple[str, int], dict[str, float | None]] = field(default_factory=dict)
    curve: tuple[np.ndarray, np.ndarray] | None = None  # mean EE deviation over time
    fold_check: bool | None = None  # CSRC methods: same parameters and modules after folding


@dataclass
class ModelTable:
    """Every method's run on one model."""

    label: str
    model: str
    family: str
    runs: dict[str, MethodRun]
    identity: dict[str, Any] = field(default_factory=dict)  # see model_identity()

    @property
    def compute_s(self) -> float:
        """Seconds spent quantizing and evaluating every method (kept runs included)."""
        return sum(
            run.calibration_s + run.eval_summary.get("wall_s", 0.0) for run in self.runs.values()
        )


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The methods to run, FP32 first (every drift metric is measured against it)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DaptqError(f"unknown method '{unknown[0]}'; choose from: {', '.join(METHODS)}")
    return ("fp32", *(m for m in dict.fromkeys(methods) if m != "fp32"))


def model_identity(model: Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """What names the evaluated weights: sha256 of the weights file, and from the manifest's
    `provenance` the training steps and revision."""
    from daptq_ros.policy.model_dir import WEIGHTS_FILE

    digest = hashlib.sha256()
    with open(model / WEIGHTS_FILE, "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return {
        "weights_sha256": digest.hexdigest(),
        "training_steps": provenance.get("training", {}).get("steps"),
        "git_revision": provenance.get("git_revision"),
    }


def _claim_work_folder(work: Path, identity: dict[str, Any]) -> None:
    """Tie `work` to one model's weights: kept runs of other weights must not be reused."""
    path = work / IDENTITY_FILE
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("weights_sha256") != identity["weights_sha256"]:
            raise DaptqError(
                f"{work} holds the runs of other weights (sha256 "
                f"{str(kept.get('weights_sha256'))[:12]}, now {identity['weights_sha256'][:12]}): "
                "the model changed since; pass a new --work folder or delete this one"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2) + "\n")


def run_model_table(
    model: Path, label: str, options: TableOptions, work: Path, drift_out: Path, daptq: Runner
) -> ModelTable:
    """Quantize and evaluate every method on `model`, then score drift against FP32."""
    from daptq_ros.policy.daptq import linear_layer_names
    from daptq_ros.policy.model_dir import load_model_dir

    loaded = load_model_dir(model)
    identity = model_identity(model, loaded.meta.provenance)
    _claim_work_folder(work, identity)
    layers = {
        name: loaded.model.get_submodule(name).weight.numel()
        for name in linear_layer_names(loaded.model)
    }
    runs = {}
    for name in check_methods(options.methods):
        model_used, calibration, bit_map = _quantize(name, model, options, work, daptq, layers)
        summary = _evaluate(name, model_used, options, work, daptq)
        total = sum(layers.values())
        bits = sum(layers[n] * bit_map[n] for n in layers) / total
        calibration_s = float(calibration.get("timings", {}).get("total_s", 0.0))
        run = MethodRun(name, summary, calibration_s, bits, bit_map)
        run.fold_check = calibration.get("fold_check")
        run.episodes = {
            (e["task"], int(e["seed"])): {"success": float(e["success"]), "ee_position_rmse": None}
            for e in summary["episodes_run"]
        }
        runs[name] = run
    _score_drift(runs, work, drift_out)
    shown = model.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())  # the repository-relative path, not this machine's
    return ModelTable(label, str(shown), loaded.meta.family, runs, identity)


def _quantize(
    name: str,
    model: Path,
    options: TableOptions,
    work: Path,
    daptq: Runner,
    layers: dict[str, int],
) -> tuple[Path, dict[str, Any], dict[str, int]]:
    """Quantize with one method (kept when done before): model dir, calibration.json, bit map."""
    from daptq_ros.quant.config import load_config

    if METHODS[name] is None:
        return model, {}, {layer: 32 for layer in layers}
    qdir = work / "models" / name
    if not (qdir / "calibration.json").is_file():
        command = ["quantize", "--model", str(model), "--calib", *options.calib, *METHODS[name]]
        command += ["--bins", str(options.bins), "--threads", str(options.threads)]
        if daptq([*command, "--out", str(qdir)]) != 0:
            raise DaptqError(f"daptq quantize failed for method {name} on {model}")
    calibration = json.loads((qdir / "calibration.json").read_text())
    config = load_config(qdir / "bits.yaml")
    bit_map = {layer: config.spec_for(layer).weight_bits for layer in layers}
    return qdir, calibration, bit_map


def _evaluate(
    name: str, model: Path, options: TableOptions, work: Path, daptq: Runner
) -> dict[str, Any]:
    """Evaluate one method on the shared seeds (kept when done before); its eval.json."""
    run = work / "runs" / name
    if not (run / "eval.json").is_file():
        # A folder without eval.json is an evaluation this report started and was stopped in;
        # its bags are incomplete and `daptq eval` refuses to write over them.
        shutil.rmtree(run, ignore_errors=True)
        command = ["eval", "--model", str(model), "--episodes", str(options.episodes)]
        command += ["--seed", str(options.seed), "--threads", str(options.threads)]
        command += ["--tasks", *options.tasks] if options.tasks else []
        if daptq([*command, "--out", str(run)]) != 0:
            raise DaptqError(f"daptq eval failed for method {name} on {model}")
    return json.loads((run / "eval.json").read_text())


def _score_drift(runs: dict[str, MethodRun], work: Path, drift_out: Path) -> None:
    """Drift of each run against the FP32 rollouts of the same seeds: summaries, per-episode
    RMSE, the mean deviation curve, and a drift report per method.

    One analysis per run: runs are told apart by method here, not by their bit-config name
    (the ablations share DA-PTQ's). The scores are kept beside the run (drift_scores.json), so
    assembling the table again does not re-read every bag.
    """
    for name, run in runs.items():
        if name == "fp32":
            continue
        scores = _drift_scores(work / "runs" / name, work / "runs" / "fp32", drift_out / name)
        run.drift = scores["drift"]
        for task, seed, rmse in scores["ee_position_rmse"]:
            if (task, seed) in run.episodes:
                run.episodes[(task, seed)]["ee_position_rmse"] = rmse
        if scores["curve"] is not None:
            grid, mean = scores["curve"]
            run.curve = (np.asarray(grid), np.asarray(mean))


def _drift_scores(run: Path, reference: Path, report: Path) -> dict[str, Any]:
    """One run's drift summaries, per-episode EE RMSE and mean curve (cached), and its report."""
    from daptq_ros.bags.episode import META_SEED, META_TASK
    from daptq_ros.drift.analysis import analyze
    from daptq_ros.drift.report import write_report

    cache = run / "drift_scores.json"
    if cache.is_file() and (report / "report.md").is_file():
        return json.loads(cache.read_text())
    analysis = analyze([run], reference)
    write_report(analysis, report)
    (summary,) = analysis.summaries.values()
    curve = _mean_deviation_curve(analysis.episodes)
    scores = {
        "drift": {metric: s.to_dict() for metric, s in summary.items()},
        "ee_position_rmse": [
            [r.run.metadata.get(META_TASK, ""), int(r.run.metadata.get(META_SEED, -1)), rmse]
            for r in analysis.episodes
            if (rmse := r.metrics.ee_position_rmse) is not None
        ],
        "curve": None if curve is None else [curve[0].tolist(), curve[1].tolist()],
    }
    cache.write_text(json.dumps(scores) + "\n")
    return scores


def _mean_deviation_curve(results: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean end-effector deviation over episode time, averaged over the episodes still running.

    The curve ends where fewer than a quarter of the episodes are still running: a mean over
    the few longest episodes would jump with each one that ends.
    """
    from daptq_ros.drift.metrics import position_deviation

    tracks = []
    for result in results:
        pair = result.pair
        if pair.exec_positions is None or len(pair.stamps) < 2:
            continue
        t = pair.stamps - pair.stamps[0]
        tracks.append((t, position_deviation(pair.exec_positions, pair.ref_positions)))
    if not tracks:
        return None
    grid = np.arange(0.0, max(t[-1] for t, _ in tracks) + CURVE_STEP_S, CURVE_STEP_S)
    total, count = np.zeros_like(grid), np.zeros_like(grid)
    for t, d in tracks:
        inside = grid <= t[-1]
        total[inside] += np.interp(grid[inside], t, d)
        count[inside] += 1
    enough = count >= max(1.0, CURVE_MIN_SHARE * len(tracks))
    return grid[enough], total[enough] / count[enough]


def paired_difference(
    run: MethodRun, base: MethodRun, metric: str
) -> tuple[float, float | None, int]:
    """Mean of run - base over the episodes both have, with the 95 % Student-t half-width."""
    from daptq_ros.drift.stats import summarize

    diffs = [
        value - base.episodes[key][metric]
        for key, values in run.episodes.items()
        if key in base.episodes
        and (value := values[metric]) is not None
        and base.episodes[key][metric] is not None
    ]
    if not diffs:
        return math.nan, None, 0
    summary = summarize(diffs)
    return summary.mean, summary.half_width, summary.n


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


def ablation_lines(table: ModelTable) -> list[str]:
    """Each DA-PTQ component's contribution: paired differences ablation - full method."""
    lines = [
        "| ablation | removes | Δ success (points) | Δ EE RMSE (mm) | paired episodes |",
        "|---|---|---|---|---|",
    ]
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
    return lines


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
        "### Ablations (paired differences, ablation - full method, 95 % Student-t)",
        "",
        *ablation_lines(table),
        "",
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
