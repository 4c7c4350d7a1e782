"""The main job (`daptq demo`): the default model at full precision vs quantized, paired in sim.

Loads a model directory (the embedded default unless told otherwise), rolls it out at FP32 and
under each bit config on the same seeds, measures the kinematic drift of every quantized
rollout against the FP32 rollout of the same seed, and writes DEMO_DIR/demo.md: one table
(success, mean end-effector deviation from FP32, latency per action chunk, weight memory) and
the FP-vs-quantized end-effector paths plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daptq_ros.drift.analysis import analyze
from daptq_ros.drift.report import write_report
from daptq_ros.policy.quantize import FULL_PRECISION, load_policy_with_bits
from daptq_ros.quant import weight_bytes
from daptq_ros.sim.evaluate import EvalConfig, evaluate


def run_config(model_dir: Path, bits: str, tasks, episodes: int, seed: int, out: Path) -> dict:
    """Evaluate the model at one bit config (deployed kernels); returns the eval summary."""
    policy, _ = load_policy_with_bits(model_dir, bits, deployed=True)
    config = EvalConfig(
        out=out / bits,
        tasks=tuple(tasks),
        episodes=episodes,
        seed=seed,
        image_size=policy.loaded.meta.image_size[0],
        model=str(model_dir),
        bit_config="" if bits == FULL_PRECISION else bits,
    )
    summary = evaluate(policy, config)
    summary["weight_bytes"] = weight_bytes(policy.model)
    return summary


def run_demo(
    model_dir: Path, presets: list[str], tasks, episodes: int, seed: int, out: Path
) -> dict[str, Any]:
    """FP32 and every preset on the same episodes, the drift analysis, and demo.md."""
    summaries = {
        bits: run_config(model_dir, bits, tasks, episodes, seed, out)
        for bits in [FULL_PRECISION, *presets]
    }
    analysis = analyze([out / p for p in presets], out / FULL_PRECISION)
    drift_files = write_report(analysis, out / "drift")
    rows = []
    for bits, summary in summaries.items():
        deviation = analysis.summaries.get(bits, {}).get("ee_position_rmse")
        rows.append(
            {
                "bits": bits,
                "successes": summary["overall"]["successes"],
                "episodes": summary["overall"]["episodes"],
                "ci95": summary["overall"]["ci95"],
                "ee_rmse_vs_fp32_m": None if deviation is None else deviation.mean,
                "inference_p50_ms": summary["inference_ms"]["p50"],
                "weight_mb": summary["weight_bytes"] / 1e6,
            }
        )
    report = {
        "model": str(model_dir),
        "tasks": list(tasks),
        "episodes": episodes,
        "seed": seed,
        "rows": rows,
        "drift_report": str(drift_files[0]),
        "demo_md": str(out / "demo.md"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "demo.md").write_text(format_markdown(report) + "\n")
    return report


def format_markdown(report: dict[str, Any]) -> str:
    """demo.md: the table and the end-effector paths plot."""
    lines = [
        "# daptq demo: full precision vs quantized, paired episodes",
        "",
        f"Model `{report['model']}`; tasks {', '.join(report['tasks'])}; "
        f"{report['episodes']} episode(s) per task from seed {report['seed']}; "
        "quantized models run on the deployed low-bit kernels.",
        "",
        "| bits | success | 95 % CI | mean ee deviation from FP32 (m) | latency p50 (ms/chunk) "
        "| weight memory (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        low, high = row["ci95"]
        deviation = "-" if row["ee_rmse_vs_fp32_m"] is None else f"{row['ee_rmse_vs_fp32_m']:.4f}"
        lines.append(
            f"| {row['bits']} | {row['successes']}/{row['episodes']} | "
            f"[{100 * low:.0f}, {100 * high:.0f}] % | {deviation} | "
            f"{row['inference_p50_ms']:.1f} | {row['weight_mb']:.2f} |"
        )
    lines += [
        "",
        "End-effector paths, FP32 (dashed) vs quantized, same seeds:",
        "",
        "![end-effector paths](drift/ee_paths.png)",
        "",
        f"Full drift report: `{report['drift_report']}`.",
    ]
    return "\n".join(lines)


def format_table(report: dict[str, Any]) -> str:
    """The demo table for the terminal."""
    lines = [f"{'bits':<10} {'success':>8} {'ee dev. m':>10} {'ms/chunk':>9} {'weight MB':>10}"]
    for row in report["rows"]:
        deviation = "-" if row["ee_rmse_vs_fp32_m"] is None else f"{row['ee_rmse_vs_fp32_m']:.4f}"
        lines.append(
            f"{row['bits']:<10} {row['successes']:>3}/{row['episodes']:<4} {deviation:>10} "
            f"{row['inference_p50_ms']:>9.1f} {row['weight_mb']:>10.2f}"
        )
    return "\n".join([*lines, f"report: {report['demo_md']}"])
