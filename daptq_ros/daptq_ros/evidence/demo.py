"""The main job (`daptq demo`): FP32 vs RTN W4 vs DA-PTQ at the same average bits, paired in sim.

Steps, each timed:
1. collect: scripted-expert demonstrations (seeds 0.., far below the held-out eval seeds) as
   DA-PTQ's calibration episodes (skipped when existing bags are given);
2. quantize: DA-PTQ (budgeted allocation, GPTQ rounding, CSRC, weight-only like RTN W4) with
   RTN W4's average weight bits as its budget;
3. rollouts: FP32, RTN W4 (and any extra RTN preset) and the DA-PTQ model on the same held-out
   seeds, quantized models on the deployed low-bit kernels;
4. latency: p50 per action chunk, round-robin over every config on the same observation (one
   chunk each per round, so whatever else the machine does hits all of them alike), BF16
   included as the speed reference, and the DA-PTQ model exported to OpenVINO (`daptq
   quantize --runtime openvino`) as the deployment runtime's row (neither rolled out).
Then each quantized rollout's end-effector deviation from the FP32 rollout of the same seed is
scored (drift analysis), and DEMO_DIR gets demo.json, demo.md, deviation.png and the drift
report.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from daptq_ros.bags import find_bag_dirs
from daptq_ros.drift.analysis import Analysis, EpisodeResult, analyze
from daptq_ros.errors import ConfigError, DaptqError
from daptq_ros.evidence.demo_plot import BAND_LABEL, write_demo_plot
from daptq_ros.evidence.drift_report import write_report
from daptq_ros.policy.daptq import linear_layer_names
from daptq_ros.policy.model_dir import load_model_dir
from daptq_ros.policy.quantize import FULL_PRECISION, load_policy_with_bits
from daptq_ros.quant import QuantConfig, load_config, weight_bytes
from daptq_ros.quant.allocation import weighted_bits
from daptq_ros.quant.kernel_choice import cpu_model
from daptq_ros.quant.kernel_fit import fit_to_kernels
from daptq_ros.sim.evaluate import EvalConfig, evaluate

SPEED_REFERENCE = "bf16"
RTN_W4 = "w4a16"
DAPTQ = "daptq"
DAPTQ_OPENVINO = "daptq_openvino"  # the DA-PTQ model on the OpenVINO runtime (latency only)
LATENCY_ROUNDS = 30
CALIBRATION_SEED = 0  # demonstrations use seeds 0.., the held-out rollouts start at --seed
# DA-PTQ as `daptq quantize` runs it here; weight-only (A16) like RTN W4, so only weights differ.
DAPTQ_ARGS = ("--method", "daptq", "--config", RTN_W4, "--allocation", "budget")
DAPTQ_ARGS += ("--rounding", "gptq")
PLOT = "deviation.png"
PLOT_LABELS = {RTN_W4: "RTN W4", DAPTQ: "DA-PTQ"}  # others: "RTN <preset>"
ROW_NAMES = (
    FULL_PRECISION,
    SPEED_REFERENCE,
    DAPTQ,
    DAPTQ_OPENVINO,
)  # rows that are not extra RTN presets

Runner = Callable[[list[str]], int]  # runs a `daptq` subcommand, returns its exit status


@dataclass(frozen=True)
class DemoConfig:
    """What `daptq demo` runs: the model, held-out episodes, calibration and extra presets."""

    model: Path
    out: Path
    tasks: tuple[str, ...]
    episodes: int = 3
    seed: int = 100_000
    presets: tuple[str, ...] = ()  # RTN presets rolled out besides RTN W4
    calib: Path | None = None  # existing calibration bags; None: collect them
    calib_episodes: int = 2  # per task, when collecting
    kernel_choice: str = "auto"


@dataclass(frozen=True)
class Method:
    """One row: its name, the model directory it loads and the bit config it loads with."""

    name: str
    model: Path
    bits: str
    runtime: str = "torch"


def run_demo(config: DemoConfig, daptq: Runner) -> dict[str, Any]:
    """Every step of the demo (see the module docstring); returns demo.json's content."""
    timings: dict[str, float] = {}
    with _timed(timings, "total_s"):
        loaded = load_model_dir(config.model)
        with _timed(timings, "collect_s"):
            calib = config.calib or collect_calibration(config, loaded.meta.image_size[0], daptq)
        rtn_bits = rtn_bits_of(loaded.model, RTN_W4)
        with _timed(timings, "quantize_s"):
            qdir = quantize_daptq(config, calib, rtn_bits, daptq)
        methods = demo_methods(config, qdir)
        with _timed(timings, "rollouts_s"):
            summaries = {m.name: run_method(m, config) for m in methods}
        reference = Method(SPEED_REFERENCE, config.model, SPEED_REFERENCE)
        exported = Method(DAPTQ_OPENVINO, qdir, FULL_PRECISION, "openvino")
        with _timed(timings, "latency_s"):
            speed = measure_latency(
                [methods[0], reference, *methods[1:], exported], config.kernel_choice
            )
        bits = _average_bits(loaded.model, methods, qdir)
        with _timed(timings, "drift_s"):
            analysis = analyze(
                [runs_dir(config.out, m.name) for m in methods[1:]],
                runs_dir(config.out, FULL_PRECISION),
            )
            drift_files = write_report(analysis, config.out / "drift")
            by_label = _results_by_label(analysis, summaries, bits)
            plot = write_demo_plot(by_label, config.out / PLOT)
        rows = [_row(name, summaries.get(name), analysis, speed, bits[name]) for name in speed]
    report = {
        "model": str(config.model),
        "tasks": list(config.tasks),
        "episodes": config.episodes,
        "seed": config.seed,
        "kernel_choice": config.kernel_choice,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "calibration": {
            "bags": str(calib),
            "episodes": len(find_bag_dirs(calib)),
            "collected": config.calib is None,
            "daptq_args": [*DAPTQ_ARGS, "--average-bits", repr(rtn_bits)],
        },
        "rows": rows,
        "drift_reduction": drift_reduction(rows),
        "timings_s": timings,
        "plot": str(plot),
        "drift_report": str(drift_files[0]),
        "demo_md": str(config.out / "demo.md"),
    }
    (config.out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    (config.out / "demo.md").write_text(format_markdown(report) + "\n")
    return report


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record the seconds the block takes as timings[key]."""
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def collect_calibration(config: DemoConfig, image_size: int, daptq: Runner) -> Path:
    """Scripted-expert demonstrations, `calib_episodes` per task, under DEMO_DIR/calib."""
    first_free = CALIBRATION_SEED + config.calib_episodes
    if config.seed < first_free:
        raise ConfigError(
            f"the held-out seeds from {config.seed} overlap the calibration seeds "
            f"{CALIBRATION_SEED}..{first_free - 1}; pass --seed {first_free} or higher"
        )
    out = config.out / "calib"
    command = ["collect", "--tasks", *config.tasks, "--episodes", str(config.calib_episodes)]
    command += ["--seed", str(CALIBRATION_SEED), "--image-size", str(image_size)]
    if daptq([*command, "--out", str(out)]) != 0:
        raise DaptqError("daptq collect failed for the demo's calibration episodes")
    return out


def quantize_daptq(config: DemoConfig, calib: Path, average_bits: float, daptq: Runner) -> Path:
    """DA-PTQ at `average_bits` average weight bits, written to DEMO_DIR/daptq and exported
    to OpenVINO beside it."""
    out = config.out / DAPTQ
    bags = len(find_bag_dirs(calib))
    bins = next((b for b in (6, 3) if bags >= b), 1)  # stratification bins the set can fill
    command = ["quantize", "--model", str(config.model), "--calib", str(calib), *DAPTQ_ARGS]
    command += ["--average-bits", repr(average_bits), "--bins", str(bins)]
    command += ["--threads", str(torch.get_num_threads()), "--out", str(out)]
    command += ["--runtime", "openvino"]
    if daptq(command) != 0:
        raise DaptqError(f"daptq quantize (DA-PTQ) failed on {config.model}")
    return out


def demo_methods(config: DemoConfig, daptq_model: Path) -> list[Method]:
    """The rolled-out rows: FP32 first (the reference), RTN W4, extra presets, DA-PTQ last."""
    presets = [p for p in dict.fromkeys((RTN_W4, *config.presets)) if p not in ROW_NAMES]
    return [
        Method(FULL_PRECISION, config.model, FULL_PRECISION),
        *(Method(p, config.model, p) for p in presets),
        Method(DAPTQ, daptq_model, FULL_PRECISION),  # a quantized directory loads as stored
    ]


def linear_weight_counts(model: nn.Module) -> dict[str, int]:
    """Weight count of every Linear layer, by name."""
    return {name: model.get_submodule(name).weight.numel() for name in linear_layer_names(model)}


def average_weight_bits(counts: dict[str, int], config: QuantConfig) -> float:
    """The config's average weight bits over every Linear layer of `counts` (kept layers: 16)."""
    return weighted_bits({name: config.spec_for(name).weight_bits for name in counts}, counts)


def rtn_bits_of(model: nn.Module, preset: str) -> float:
    """Average weight bits of an RTN preset as applied (narrow layers kept)."""
    config = fit_to_kernels(model, load_config(preset))[0]
    return average_weight_bits(linear_weight_counts(model), config)


def _average_bits(model: nn.Module, methods: Sequence[Method], daptq_model: Path) -> dict:
    """Average weight bits of every row: FP32 32, BF16 16, the presets, DA-PTQ's bit map."""
    daptq_config = load_config(daptq_model / "bits.yaml")
    return {
        FULL_PRECISION: 32.0,
        SPEED_REFERENCE: 16.0,
        **{m.name: rtn_bits_of(model, m.bits) for m in methods if m.name not in ROW_NAMES},
        DAPTQ: (daptq_bits := average_weight_bits(linear_weight_counts(model), daptq_config)),
        DAPTQ_OPENVINO: daptq_bits,
    }


def runs_dir(out: Path, method: str) -> Path:
    """Where a method's rollout bags and eval.json go."""
    return out / "runs" / method


def run_method(method: Method, config: DemoConfig) -> dict[str, Any]:
    """Roll one method out on the held-out seeds (deployed kernels); its eval summary."""
    policy, label = load_policy_with_bits(
        method.model, method.bits, kernel_choice=config.kernel_choice
    )
    eval_config = EvalConfig(
        out=runs_dir(config.out, method.name),
        tasks=config.tasks,
        episodes=config.episodes,
        seed=config.seed,
        image_size=policy.loaded.meta.image_size[0],
        control=policy.loaded.meta.action_space,
        state=policy.loaded.meta.state_spec,
        model=str(method.model),
        bit_config="" if label == FULL_PRECISION else label,
    )
    return evaluate(policy, eval_config)


def measure_latency(
    methods: Sequence[Method], kernel_choice: str, rounds: int = LATENCY_ROUNDS
) -> dict[str, dict[str, Any]]:
    """Per method, in order: chunk latency p50 (ms, round-robin), weight bytes, kernel counts."""
    policies = {
        m.name: load_policy_with_bits(
            m.model, m.bits, kernel_choice=kernel_choice, runtime=m.runtime
        )[0]
        for m in methods
    }
    first = next(iter(policies.values()))
    image = np.zeros((*first.loaded.meta.image_size, 3), np.uint8)
    state = np.zeros(first.state_dim)
    times: dict[str, list[float]] = {name: [] for name in policies}
    for round_index in range(rounds + 1):  # round 0 warms up
        for name, policy in policies.items():
            start = time.perf_counter()
            policy.predict(image, "push the puck to the goal", state)
            if round_index:
                times[name].append(time.perf_counter() - start)
    return {
        name: {
            "bit_config": policy.bit_config,
            "p50_ms": 1e3 * statistics.median(times[name]),
            "weight_bytes": getattr(policy, "weight_bytes", None) or weight_bytes(policy.model),
            "kernels": dict(
                Counter(c.kernel for c in getattr(policy, "kernel_choices", {}).values())
            ),
        }
        for name, policy in policies.items()
    }


def _results_by_label(
    analysis: Analysis, summaries: dict[str, dict[str, Any]], bits: dict[str, float]
) -> dict[str, list[EpisodeResult]]:
    """The scored episodes of each quantized method (the analysis groups them by bit config),
    by the method's label in the plot."""
    return {
        f"{PLOT_LABELS.get(name, f'RTN {name}')}, {bits[name]:.2f} bits": [
            r for r in analysis.episodes if r.config == summary["bit_config"]
        ]
        for name, summary in summaries.items()
        if name != FULL_PRECISION
    }


def _row(
    name: str,
    summary: dict[str, Any] | None,
    analysis: Analysis,
    speed: dict[str, dict[str, Any]],
    average_bits: float,
) -> dict[str, Any]:
    """One table row: success, EE deviation from FP32 (mm), bits, memory, latency, kernels."""
    timing = speed[name]
    deviation = None if summary is None else analysis.summaries.get(summary["bit_config"], {})
    rmse = None if not deviation else deviation.get("ee_position_rmse")
    overall = summary["overall"] if summary else {}
    return {
        "method": name,
        "bit_config": timing["bit_config"],
        "rolled_out": summary is not None,
        "successes": overall.get("successes"),
        "episodes": overall.get("episodes"),
        "ci95": overall.get("ci95"),
        "ee_rmse_vs_fp32_mm": None if rmse is None else 1e3 * rmse.mean,
        "ee_rmse_ci95_mm": None
        if rmse is None or rmse.ci_low is None
        else [1e3 * rmse.ci_low, 1e3 * rmse.ci_high],
        "average_bits": average_bits,
        "weight_mb": timing["weight_bytes"] / 1e6,
        "latency_p50_ms": timing["p50_ms"],
        "latency_x_bf16": timing["p50_ms"] / speed[SPEED_REFERENCE]["p50_ms"],
        "rollout_inference_p50_ms": summary["inference_ms"]["p50"] if summary else None,
        "kernels": timing["kernels"],
    }


def drift_reduction(rows: Sequence[dict[str, Any]]) -> float | None:
    """1 - DA-PTQ's mean EE deviation / RTN W4's (positive: DA-PTQ drifts less)."""
    deviation = {row["method"]: row["ee_rmse_vs_fp32_mm"] for row in rows}
    rtn, daptq = deviation.get(RTN_W4), deviation.get(DAPTQ)
    if rtn is None or daptq is None or rtn == 0.0:
        return None
    return 1.0 - daptq / rtn


def format_markdown(report: dict[str, Any]) -> str:
    """demo.md: the setting, the table, the drift reduction and the deviation plot."""
    calibration = report["calibration"]
    source = "collected for the demo" if calibration["collected"] else "given"
    lines = [
        "# daptq demo: FP32 vs RTN W4 vs DA-PTQ at the same average weight bits",
        "",
        f"Model `{report['model']}`; tasks {', '.join(report['tasks'])}; "
        f"{report['episodes']} held-out episode(s) per task from seed {report['seed']}, the "
        "same seeds for every method. DA-PTQ (`daptq quantize "
        f"{' '.join(calibration['daptq_args'])}`) is calibrated on {calibration['episodes']} "
        f"scripted-expert episodes ({source}: `{calibration['bags']}`). Quantized models run on "
        f"the deployed low-bit kernels (kernel choice `{report['kernel_choice']}`). EE "
        "deviation: per-episode RMSE of the end-effector position against the FP32 rollout of "
        "the same seed, mean over episodes with its 95 % interval. Latency: p50 per action "
        f"chunk, measured round-robin in one process on {report['cpu']}, {report['threads']} "
        "threads; BF16 is the speed reference and daptq_openvino the DA-PTQ model exported to "
        "the OpenVINO runtime (neither rolled out). Weight memory is what the "
        "chosen kernels hold: a layer whose packed kernel is slower than BF16 on this CPU is "
        "held unpacked under `auto` (`--kernel-choice packed` holds every layer at its bit "
        "width).",
        "",
        "| method | success | 95 % CI | EE deviation from FP32 (mm) [95 % CI] | avg. W bits "
        "| weight memory (MB) | ms/chunk | x BF16 | kernels |",
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
            f"| {row['method']} | {success} | {interval} | {_deviation(row)} | "
            f"{row['average_bits']:.2f} | {row['weight_mb']:.2f} | {row['latency_p50_ms']:.1f} | "
            f"{row['latency_x_bf16']:.2f} | {_kernels(row)} |"
        )
    lines += [
        "",
        _reduction_sentence(report),
        "",
        f"EE deviation from FP32 over episode time ({BAND_LABEL}); below, a few episodes' "
        "paths from above, FP32 dashed:",
        "",
        f"![EE deviation from FP32 over time]({PLOT})",
        "",
        f"Full drift report: `{report['drift_report']}`.",
    ]
    return "\n".join(lines)


def format_table(report: dict[str, Any]) -> str:
    """The demo table for the terminal, with the drift reduction and the step timings."""
    lines = [
        f"{'method':<14} {'success':>8} {'95 % CI':>11} {'EE dev. mm [95 % CI]':>24} "
        f"{'W bits':>6} {'weight MB':>9} {'ms/chunk':>8} {'x BF16':>6}"
    ]
    for row in report["rows"]:
        success, interval = "-", "-"
        if row["rolled_out"]:
            low, high = row["ci95"]
            success = f"{row['successes']}/{row['episodes']}"
            interval = f"[{100 * low:.0f}, {100 * high:.0f}] %"
        lines.append(
            f"{row['method']:<14} {success:>8} {interval:>11} {_deviation(row):>24} "
            f"{row['average_bits']:>6.2f} {row['weight_mb']:>9.2f} "
            f"{row['latency_p50_ms']:>8.1f} {row['latency_x_bf16']:>6.2f}"
        )
    timings = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in report["timings_s"].items())
    return "\n".join(
        [
            *lines,
            _reduction_sentence(report),
            f"latency: {report['cpu']}, {report['threads']} threads; steps: {timings}",
            f"report: {report['demo_md']}",
        ]
    )


def _reduction_sentence(report: dict[str, Any]) -> str:
    bits = {row["method"]: row["average_bits"] for row in report["rows"]}
    reduction = report["drift_reduction"]
    change = "n/a" if reduction is None else f"{100 * reduction:+.0f} %"
    return (
        f"DA-PTQ vs RTN W4 EE drift reduction (1 - DA-PTQ/RTN W4): {change}, at "
        f"{bits[DAPTQ]:.3f} vs {bits[RTN_W4]:.3f} average weight bits."
    )


def _deviation(row: dict[str, Any]) -> str:
    if row["ee_rmse_vs_fp32_mm"] is None:
        return "-"
    interval = row["ee_rmse_ci95_mm"]
    span = "" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    return f"{row['ee_rmse_vs_fp32_mm']:.2f}{span}"


def _kernels(row: dict[str, Any]) -> str:
    return ", ".join(f"{kernel} {n}" for kernel, n in sorted(row["kernels"].items())) or "-"
