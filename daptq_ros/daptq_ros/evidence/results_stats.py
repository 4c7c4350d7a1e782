"""The results table's data and statistics: methods, runs, paired differences, drift curves.

What `daptq report` computes from the runs (never written by hand); `results_markdown` lays
it out and `commands/results_table` runs the steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
FRONTIER_BUDGETS = (3.5, 3.0, 2.5)  # below the 4.5-bit budget: the low-bit frontier
for _budget in FRONTIER_BUDGETS:  # DA-PTQ as daptq_budget_gptq, and QVLA, at lower budgets
    METHODS[f"daptq_b{_budget}"] = [*METHODS["daptq_budget_gptq"], "--average-bits", str(_budget)]
    METHODS[f"qvla_b{_budget}"] = [*METHODS["qvla"][:-1], str(_budget)]
for _width in (3, 2):  # the uniform baselines at the integer widths below 4
    METHODS[f"rtn_w{_width}a8"] = ["--method", "rtn", "--config", f"w{_width}a8"]
    METHODS[f"gptq_w{_width}a8"] = ["--method", "gptq", "--config", f"w{_width}a8"]
    METHODS[f"awq_w{_width}"] = ["--method", "awq", "--config", f"w{_width}a16"]
for _method in ("rtn", "gptq", "smoothquant"):  # 4-bit activations (simulated: config.py)
    METHODS[f"{_method}_w4a4"] = ["--method", _method, "--config", "w4a4"]
METHODS["daptq_a4"] = [*METHODS["daptq_budget_gptq"]]
METHODS["daptq_a4"][METHODS["daptq_a4"].index("w4a8")] = "w4a4"
LOW_BIT_ABLATION_BUDGETS = (3.0, 2.5)  # CSRC ablated where the study found more distortion
for _budget in LOW_BIT_ABLATION_BUDGETS:
    METHODS[f"daptq_b{_budget}_nocsrc"] = [*METHODS[f"daptq_b{_budget}"], "--no-csrc"]
DAPTQ_METHODS = ("daptq_topk", "daptq_budget", "daptq_budget_gptq")
# budget (average weight bits) -> DA-PTQ there, then what it is compared with: QVLA-style at the
# same budget and the uniform baselines at the widest integer width within it (with A8 and, for
# GPTQ W4 and AWQ, weight-only: the best baseline is whichever drifts least).
FRONTIER = {
    4.5: ("daptq_budget_gptq", "qvla", "rtn_w4a8", "gptq_w4a8", "gptq_w4", "awq_w4"),
    3.5: ("daptq_b3.5", "qvla_b3.5", "rtn_w3a8", "gptq_w3a8", "awq_w3"),
    3.0: ("daptq_b3.0", "qvla_b3.0", "rtn_w3a8", "gptq_w3a8", "awq_w3"),
    2.5: ("daptq_b2.5", "qvla_b2.5", "rtn_w2a8", "gptq_w2a8", "awq_w2"),
}
# W4A4, Omega-QVLA's setting: DA-PTQ at the 4.5-bit budget with 4-bit activations against the
# uniform W4A4 baselines (SmoothQuant: the method made for activation outliers).
A4_POINT = ("daptq_a4", "rtn_w4a4", "gptq_w4a4", "smoothquant_w4a4")
# one line of the frontier figure per method family, at each run's measured average bits
FRONTIER_LINES = {
    "DA-PTQ (budget, GPTQ rounding)": tuple(methods[0] for methods in FRONTIER.values()),
    "QVLA-style": tuple(methods[1] for methods in FRONTIER.values()),
    "RTN W4/3/2 A8": ("rtn_w4a8", "rtn_w3a8", "rtn_w2a8"),
    "GPTQ W4/3/2 A8": ("gptq_w4a8", "gptq_w3a8", "gptq_w2a8"),
    "AWQ W4/3/2 A16": ("awq_w4", "awq_w3", "awq_w2"),
    "GPTQ W4 A16": ("gptq_w4",),
}
UNIFORM_BASELINES = ("rtn_", "gptq_")  # "uniform RTN/GPTQ at that width" of the acceptance
# ablation -> (the full method it removes something from, what it removes).
ABLATIONS = {
    "ablation_allocation_only": ("daptq_topk", "CSRC"),
    "ablation_csrc_only": ("daptq_topk", "motion-driven allocation (uniform W4 instead)"),
    "ablation_jacobian_scores": ("daptq_topk", "virtual-chain scores (real Jacobian instead)"),
    "daptq_budget": ("daptq_budget_gptq", "GPTQ rounding (round-to-nearest instead)"),
    **{
        f"daptq_b{budget}_nocsrc": (f"daptq_b{budget}", f"CSRC at {budget} bits")
        for budget in LOW_BIT_ABLATION_BUDGETS
    },
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


@dataclass(frozen=True)
class TableOptions:
    """What every model's table is run with (the same seeds and episodes for every method)."""

    calib: tuple[str, ...]
    methods: tuple[str, ...] = tuple(METHODS)
    tasks: tuple[str, ...] | None = None
    episodes: int = 50
    seed: int = 100_000
    bins: int = 6
    threads: int = 2  # torch threads of each quantization and evaluation (of each worker)
    workers: int = 0  # Ray workers (`daptq eval --workers`); 0 = serial


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
    action_space: str = ""  # the policy's actions, e.g. "ee_delta" (daptq.json)

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


@dataclass(frozen=True)
class DeviationBand:
    """Mean EE deviation over time (m) with its 95 % interval; n episodes at each time."""

    time_s: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray


def deviation_samples(results: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(time grid, deviation [episodes, grid] in m, NaN once an episode has ended)."""
    from daptq_ros.drift.pose_errors import position_deviation

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
    values = np.full((len(tracks), len(grid)), np.nan)
    for row, (t, d) in zip(values, tracks, strict=True):
        inside = grid <= t[-1]
        row[inside] = np.interp(grid[inside], t, d)
    return grid, values


def deviation_band(results: Sequence[Any]) -> DeviationBand | None:
    """The mean deviation curve with a 95 % interval of the mean (none where n < 2).

    It ends where fewer than a quarter of the episodes are still running (CURVE_MIN_SHARE): a
    mean over the few longest episodes would jump with each one that ends.
    """
    from scipy import stats

    samples = deviation_samples(results)
    if samples is None:
        return None
    grid, values = samples
    n = np.sum(~np.isnan(values), axis=0)
    keep = n >= max(1.0, CURVE_MIN_SHARE * len(values))
    grid, values, n = grid[keep], values[:, keep], n[keep]
    mean = np.nanmean(values, axis=0)
    spread = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    t_quantile = stats.t.ppf(0.975, np.maximum(n - 1, 1))
    half = np.where(n > 1, t_quantile * np.nan_to_num(spread) / np.sqrt(n), 0.0)
    return DeviationBand(grid, mean, mean - half, mean + half, n)


def mean_deviation_curve(results: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean end-effector deviation over episode time (deviation_band without the interval)."""
    band = deviation_band(results)
    return None if band is None else (band.time_s, band.mean)


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


@dataclass(frozen=True)
class FrontierPoint:
    """DA-PTQ at one budget against each method it is compared with there (paired)."""

    budget: float
    daptq: MethodRun
    others: tuple[MethodRun, ...]
    activation_bits: int = 8

    @property
    def where(self) -> str:
        """'3.0 bits', or '4.5 bits, A4' for the 4-bit-activation point."""
        activations = "" if self.activation_bits == 8 else f", A{self.activation_bits}"
        return f"{self.budget} bits{activations}"

    def best_baseline(self) -> MethodRun | None:
        """The compared method with the least mean EE RMSE vs FP32 (None: no drift yet)."""
        scored = [run for run in self.others if _rmse(run) is not None]
        return min(scored, key=_rmse) if scored else None

    def drift_reduction(self) -> float | None:
        """1 - DA-PTQ's mean EE RMSE / the best baseline's (0.3 = 30 % less drift)."""
        best = self.best_baseline()
        if best is None or _rmse(self.daptq) is None or not _rmse(best):
            return None
        return 1.0 - _rmse(self.daptq) / _rmse(best)


def frontier_points(table: ModelTable) -> list[FrontierPoint]:
    """Every budget of FRONTIER, then the W4A4 point, whose DA-PTQ run exists, with the
    compared runs that exist."""
    compared = [(budget, names, 8) for budget, names in FRONTIER.items()]
    compared.append((BUDGET_BITS, A4_POINT, 4))
    points = []
    for budget, (daptq, *others), activation_bits in compared:
        if daptq in table.runs:
            runs = tuple(table.runs[name] for name in others if name in table.runs)
            points.append(FrontierPoint(budget, table.runs[daptq], runs, activation_bits))
    return points


def _rmse(run: MethodRun) -> float | None:
    return run.drift.get("ee_position_rmse", {}).get("mean")
