"""The main job (`daptq demo`): the default model at full precision vs quantized, paired in sim.

Loads a model directory (the embedded default unless told otherwise), rolls it out at FP32 and
under each bit config on the same seeds, measures the kinematic drift of every quantized
rollout against the FP32 rollout of the same seed, and writes DEMO_DIR/demo.md: one table
(success, mean end-effector deviation from FP32, latency per action chunk as ratios to FP32 and
BF16, weight memory, the kernels picked) and the FP-vs-quantized end-effector paths plot.

Latency is measured after the rollouts, round-robin over every config on the same observation
(one chunk each per round), so that whatever else the machine does hits all of them alike.
BF16 is measured as the speed reference but not rolled out.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daptq_ros.drift.analysis import analyze
from daptq_ros.evidence.drift_report import write_report
from daptq_ros.policy.quantize import FULL_PRECISION, load_policy_with_bits
from daptq_ros.quant import weight_bytes
from daptq_ros.quant.kernel_choice import cpu_model
from daptq_ros.sim.evaluate import EvalConfig, evaluate

SPEED_REFERENCE = "bf16"
LATENCY_ROUNDS = 30


def run_config(
    model_dir: Path, bits: str, tasks, episodes: int, seed: int, out: Path, kernel_choice: str
) -> dict:
    """Evaluate the model at one bit config (deployed kernels); returns the eval summary."""
    policy, _ = load_policy_with_bits(model_dir, bits, kernel_choice=kernel_choice)
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


def measure_latency(
    model_dir: Path, configs: list[str], kernel_choice: str, rounds: int = LATENCY_ROUNDS
) -> dict[str, dict[str, Any]]:
    """Per config: chunk latency p50 (ms, round-robin), weight bytes and kernel counts."""
    policies = {
        bits: load_policy_with_bits(model_dir, bits, kernel_choice=kernel_choice)[0]
        for bits in configs
    }
    first = next(iter(policies.values()))
    image = np.zeros((*first.loaded.meta.image_size, 3), np.uint8)
    state = np.zeros(first.state_dim)
    times: dict[str, list[float]] = {bits: [] for bits in configs}
    for round_index in range(rounds + 1):  # round 0 warms up
        for bits, policy in policies.items():
            start = time.perf_counter()
            policy.predict(image, "push the puck to the goal", state)
            if round_index:
                times[bits].append(time.perf_counter() - start)
    return {
        bits: {
            "p50_ms": 1e3 * statistics.median(times[bits]),
            "weight_bytes": weight_bytes(policy.model),
            "kernels": dict(
                Counter(c.kernel for c in getattr(policy, "kernel_choices", {}).values())
            ),
        }
        for bits, policy in policies.items()
    }


def run_demo(
    model_dir: Path,
    presets: list[str],
    tasks,
    episodes: int,
    seed: int,
    out: Path,
    kernel_choice: str = "auto",
) -> dict[str, Any]:
    """FP32 and every preset on the same episodes, the drift analysis, latency, and demo.md."""
    summaries = {
        bits: run_config(model_dir, bits, tasks, episodes, seed, out, kernel_choice)
        for bits in [FULL_PRECISION, *presets]
    }
    configs = [FULL_PRECISION, SPEED_REFERENCE, *(p for p in presets if p != SPEED_REFERENCE)]
    speed = measure_latency(model_dir, configs, kernel_choice)
    analysis = analyze([out / p for p in presets], out / FULL_PRECISION)
    drift_files = write_report(analysis, out / "drift")
    rows = []
    for bits in configs:
        summary = summaries.get(bits)
        deviation = analysis.summaries.get(bits, {}).get("ee_position_rmse")
        rows.append(
            {
                "bits": bits,
                "rolled_out": summary is not None,
                "successes": summary["overall"]["successes"] if summary else None,
                "episodes": summary["overall"]["episodes"] if summary else None,
                "ci95": summary["overall"]["ci95"] if summary else None,
                "ee_rmse_vs_fp32_m": None if deviation is None else deviation.mean,
                "latency_p50_ms": speed[bits]["p50_ms"],
                "latency_x_fp32": speed[bits]["p50_ms"] / speed[FULL_PRECISION]["p50_ms"],
                "latency_x_bf16": speed[bits]["p50_ms"] / speed[SPEED_REFERENCE]["p50_ms"],
                "rollout_inference_p50_ms": summary["inference_ms"]["p50"] if summary else None,
                "weight_mb": speed[bits]["weight_bytes"] / 1e6,
                "kernels": speed[bits]["kernels"],
            }
        )
    report = {
        "model": str(model_dir),
        "tasks": list(tasks),
        "episodes": episodes,
        "seed": seed,
        "kernel_choice": kernel_choice,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
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
        "quantized models run on the deployed low-bit kernels "
        f"(kernel choice `{report['kernel_choice']}`). Latency: p50 per action chunk, measured "
        f"round-robin in one process on {report['cpu']}, {report['threads']} threads; BF16 is "
        "the speed reference (not rolled out).",
        "",
        "| bits | success | 95 % CI | mean ee deviation from FP32 (m) | ms/chunk | x FP32 "
        "| x BF16 | weight memory (MB) | kernels |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if row["rolled_out"]:
            low, high = row["ci95"]
            success = f"{row['successes']}/{row['episodes']}"
            interval = f"[{100 * low:.0f}, {100 * high:.0f}] %"
        else:
            success, interval = "not rolled out", "-"
        lines.append(
            f"| {row['bits']} | {success} | {interval} | {_deviation(row)} | "
            f"{row['latency_p50_ms']:.1f} | {row['latency_x_fp32']:.2f} | "
            f"{row['latency_x_bf16']:.2f} | {row['weight_mb']:.2f} | {_kernels(row)} |"
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
    lines = [
        f"{'bits':<10} {'success':>8} {'ee dev. m':>10} {'ms/chunk':>9} {'x FP32':>7} "
        f"{'x BF16':>7} {'weight MB':>10}  kernels"
    ]
    for row in report["rows"]:
        success = f"{row['successes']:>3}/{row['episodes']:<4}" if row["rolled_out"] else "       -"
        lines.append(
            f"{row['bits']:<10} {success} {_deviation(row):>10} "
            f"{row['latency_p50_ms']:>9.1f} {row['latency_x_fp32']:>7.2f} "
            f"{row['latency_x_bf16']:>7.2f} {row['weight_mb']:>10.2f}  {_kernels(row)}"
        )
    return "\n".join(
        [
            *lines,
            f"latency: {report['cpu']}, {report['threads']} threads",
            f"report: {report['demo_md']}",
        ]
    )


def _deviation(row: dict[str, Any]) -> str:
    return "-" if row["ee_rmse_vs_fp32_m"] is None else f"{row['ee_rmse_vs_fp32_m']:.4f}"


def _kernels(row: dict[str, Any]) -> str:
    return ", ".join(f"{kernel} {n}" for kernel, n in sorted(row["kernels"].items())) or "-"
