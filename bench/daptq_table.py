"""Benchmark: the paper-style results table (our Tables 2-4): every method on paired episodes.

For one model directory: FP32 and BF16 references, RTN W8A8 / W4A8, SmoothQuant W8A8, AWQ W4,
GPTQ W4, the QVLA-style baseline, DA-PTQ (top-k and budgeted) and the ablations (CSRC only,
allocation only, the Sawyer's real Jacobian instead of the virtual chain), each quantized by
`daptq quantize` on the calibration bags and evaluated in the simulator on the same seeds as
FP32. Columns:
success with 95 % CI, kinematic drift against the FP32 rollout of the same seed (end-effector
RMSE, final deviation, drift growth, DTW), action jerk, weight memory, deployed latency per
action chunk and calibration time. Writes OUT/results.md (+ results.json, drift plots).

    python bench/daptq_table.py --calib DEMOS --episodes 50 --out docs
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # short spin: see docs/performance.md
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import time
from pathlib import Path

from daptq_ros.cli import main as daptq

# name -> `daptq quantize` arguments (None: a reference evaluated without quantization).
METHODS: dict[str, list[str] | None] = {
    "fp32": None,
    "bf16": ["--method", "rtn", "--config", "bf16"],
    "rtn_w8a8": ["--method", "rtn", "--config", "w8a8"],
    "rtn_w4a8": ["--method", "rtn", "--config", "w4a8"],
    "smoothquant_w8a8": ["--method", "smoothquant", "--config", "w8a8"],
    "awq_w4": ["--method", "awq", "--config", "w4a16"],
    "gptq_w4": ["--method", "gptq", "--config", "w4a16"],
    "qvla": ["--method", "qvla", "--config", "w4a8", "--average-bits", "4.5"],
    "daptq_topk": ["--method", "daptq", "--config", "w4a8"],
    "daptq_budget": ["--method", "daptq", "--config", "w4a8", "--allocation", "budget"],
    "ablation_csrc_only": ["--method", "daptq", "--config", "w4a8", "--allocation", "uniform"],
    "ablation_allocation_only": ["--method", "daptq", "--config", "w4a8", "--no-csrc"],
    "ablation_jacobian_scores": [
        *("--method", "daptq", "--config", "w4a8", "--scores", "jacobian"),
        *("--urdf", "sawyer_sim"),
    ],
}
COLUMNS = (
    ("success", "success % [95 % CI]"),
    ("ee_position_rmse", "EE RMSE vs FP32 (mm)"),
    ("ee_position_final_error", "final dev. (mm)"),
    ("drift_growth_rate", "drift growth (mm/s)"),
    ("dtw_distance", "DTW (mm)"),
    ("ee_jerk_rms", "jerk (m/s^3)"),
    ("weight_mb", "weights (MB)"),
    ("latency_ms", "latency/chunk (ms)"),
    ("calibration_s", "calib. (s)"),
)
MILLIMETRES = {"ee_position_rmse", "ee_position_final_error", "drift_growth_rate", "dtw_distance"}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: embedded pi0)")
    parser.add_argument("--calib", nargs="+", required=True, help="calibration episode bags")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--tasks", nargs="+", default=None, help="sim tasks (default: all 5)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task (default 50)")
    parser.add_argument("--seed", type=int, default=100_000, help="first eval seed")
    parser.add_argument("--bins", type=int, default=6, help="calibration bins (default 6)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--work", default="out/daptq_table", help="runs and quantized models")
    parser.add_argument("--out", default="docs", help="where results.md goes (default docs)")
    parser.add_argument("--note", default="", help="a remark printed under the table's header")
    return parser.parse_args()


def run_method(name: str, args: argparse.Namespace, work: Path) -> dict:
    """Quantize (unless a reference) and evaluate one method; its eval summary + calibration."""
    model = args.model
    calibration_s = 0.0
    if METHODS[name] is not None:
        qdir = work / "models" / name
        if not (qdir / "calibration.json").is_file():
            command = ["quantize", "--calib", *args.calib, *METHODS[name], "--bins", str(args.bins)]
            command += ["--threads", str(args.threads), "--out", str(qdir)]
            command += ["--model", model]
            if daptq(command) != 0:
                raise SystemExit(f"daptq quantize failed for {name}")
        calibration_s = json.loads((qdir / "calibration.json").read_text())["timings"]["total_s"]
        model = str(qdir)
    run = work / "runs" / name
    if not (run / "eval.json").is_file():
        command = ["eval", "--episodes", str(args.episodes), "--seed", str(args.seed)]
        command += ["--threads", str(args.threads), "--out", str(run), "--model", model]
        command += ["--tasks", *args.tasks] if args.tasks else []
        if daptq(command) != 0:
            raise SystemExit(f"daptq eval failed for {name}")
    summary = json.loads((run / "eval.json").read_text())
    summary["calibration_s"] = calibration_s
    return summary


def drift_summaries(names: list[str], work: Path, out: Path) -> dict[str, dict]:
    """Drift of each quantized run against the FP32 rollouts of the same seeds, per method.

    One analysis per run: runs are told apart by method here, not by their bit-config name
    (the ablations share DA-PTQ's).
    """
    from daptq_ros.drift.analysis import analyze
    from daptq_ros.drift.report import write_report

    summaries = {}
    for name in names:
        if name == "fp32":
            continue
        analysis = analyze([work / "runs" / name], work / "runs" / "fp32")
        write_report(analysis, out / "drift" / name)
        (summary,) = analysis.summaries.values()
        summaries[name] = {metric: s.to_dict() for metric, s in summary.items()}
    return summaries


def table_row(name: str, summary: dict, drift: dict) -> list[str]:
    """One row of the results table."""
    overall = summary["overall"]
    low, high = overall["ci95"]
    cells = [f"{100 * overall['success_rate']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"]
    for key, _ in COLUMNS[1:6]:
        cells.append(_mean_ci(drift.get(key, {}), 1000.0 if key in MILLIMETRES else 1.0))
    cells.append(f"{summary.get('weight_bytes', 0) / 1e6:.2f}" if "weight_bytes" in summary else "")
    cells.append(f"{summary['inference_ms']['p50']:.1f}")
    cells.append(f"{summary['calibration_s']:.1f}")
    return [name, *cells]


def _mean_ci(summary: dict, scale: float) -> str:
    """'mean ± half-width of the 95 % CI' of a drift summary, scaled; '' when absent."""
    if summary.get("mean") is None:
        return ""
    low, high = summary.get("ci_low"), summary.get("ci_high")
    half = "" if high is None else f" ± {scale * (high - low) / 2:.2f}"
    return f"{scale * summary['mean']:.2f}{half}"


def main() -> None:
    """Run every method, then write results.md and results.json."""
    args = parse_args()
    if args.model is None:
        from daptq_ros.policy.model_dir import default_model_dir

        args.model = str(default_model_dir("pi0"))
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summaries = {name: run_method(name, args, work) for name in ["fp32", *args.methods]}
    drift = drift_summaries(list(summaries), work, out)
    header = ["method", *(title for _, title in COLUMNS)]
    lines = [
        "# DA-PTQ results (generated by bench/daptq_table.py)",
        "",
        f"Model: {args.model}; {args.episodes} episodes per task, "
        f"seeds from {args.seed}, the same for every method (paired); drift against the FP32 "
        f"rollout of the same seed (mean ± half-width of the 95 % Student-t interval over the "
        f"paired episodes). Wall time {time.perf_counter() - start:.0f} s.",
        *(["", args.note] if args.note else []),
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for name, summary in summaries.items():
        row = table_row(name, summary, drift.get(name, {}))
        lines.append("| " + " | ".join(row) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    record = {"calibration_bags": args.calib, "summaries": summaries, "drift": drift}
    (out / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
