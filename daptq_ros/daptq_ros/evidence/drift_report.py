"""Write a drift Analysis as report.md, metrics.json and PNG plots (matplotlib, Agg canvas)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daptq_ros.drift.analysis import (
    EPISODE_KEYS,
    JOINT_METRICS,
    SCALAR_METRICS,
    Analysis,
    EpisodeResult,
    TimeAlignment,
)
from daptq_ros.drift.metrics import AlignedPair, cumulative_drift
from daptq_ros.drift.pose_errors import apply_similarity, position_deviation, umeyama
from daptq_ros.drift.stats import Summary

# What each scalar metric is called in the report, and its unit.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "ee_position_rmse": ("end-effector position RMSE", "m"),
    "ee_position_max_error": ("end-effector position max error", "m"),
    "ee_position_final_error": ("end-effector position final error", "m"),
    "ee_rotation_rmse": ("end-effector rotation RMSE", "deg"),
    "cumulative_drift": ("cumulative drift ∫ deviation dt", "m·s"),
    "drift_growth_rate": ("drift growth rate (slope of deviation)", "m/s"),
    "dtw_distance": ("DTW distance per step", "m or rad"),
    "dtw_lag": ("DTW lag (run behind reference)", "s"),
    "path_length_ratio": ("path-length ratio run / reference", ""),
    "ee_jerk_rms": ("end-effector RMS jerk", "m/s³"),
    "ape_translation_rmse": ("APE translation RMSE (evo)", "m"),
    "ape_rotation_rmse": ("APE rotation RMSE (evo)", "deg"),
    "rpe_translation_rmse": ("RPE translation RMSE (evo)", "m"),
    "rpe_rotation_rmse": ("RPE rotation RMSE (evo)", "deg"),
}
# Metrics computed in one unit and shown in another, so that one quantity has one unit (deg).
DISPLAY_SCALE = {"ee_rotation_rmse": 180.0 / np.pi}
JOINT_LABELS = {"joint_rms_error": "RMS", "joint_max_error": "max", "joint_final_error": "final"}

# What each metric measures, for the legend of report.md.
LEGEND = (
    "**end-effector position RMSE / max / final error** (m): distance between the run's and "
    "the reference's end-effector positions at the same instants (the reference interpolated "
    "at the run's stamps, never aligned): root mean square, largest, and at the last sample.",
    "**end-effector rotation RMSE** (deg): root mean square of the angle of R_ref^T R_run at "
    "the same instants.",
    "**APE translation / rotation RMSE** (m / deg): evo's absolute pose error, the RMSE of "
    "‖t_ref − t_run‖ and of the angle of R_ref^T R_run over the time-associated poses after "
    "the pose alignment above; with alignment none they equal the end-effector position and "
    "rotation RMSEs (the rotation in degrees).",
    "**RPE translation / rotation RMSE** (m / deg): evo's relative pose error: for pose pairs "
    "(i, i+Δ), E = (Q_i⁻¹ Q_i+Δ)⁻¹ (P_i⁻¹ P_i+Δ) with Q the reference and P the run; the RMSE "
    "of E's translation length and rotation angle: the drift added per Δ, blind to an error "
    "carried over from earlier.",
    "**cumulative drift** (m·s): ∫ deviation dt; **drift growth rate** (m/s): least-squares "
    "slope of the deviation over time.",
    "**DTW distance** (m, or rad in joint space): mean cost per step of the best time warping "
    "of the run onto the reference inside the DTW band; **DTW lag** (s): median time shift "
    "along that warping (positive: the run is behind).",
    "**path-length ratio**: the run's path length / the reference's.",
    "**end-effector RMS jerk** (m/s³): root mean square third time derivative of the run's "
    "end-effector positions.",
    "**joint RMS / max / final error** (rad or m): per joint, at the same instants.",
)

ALIGNMENT_NAMES = {
    "none": "none (the run's poses as recorded: the frames are shared)",
    "se3": "se3 (Umeyama rotation and translation of the run onto the reference)",
    "sim3": "sim3 (Umeyama rotation, translation and scale of the run onto the reference)",
}
TIME_BASE_NAMES = {
    "absolute": "absolute: the recorded stamps as they are",
    "start": "start: each episode re-zeroed at its first sample",
}

# Both time bases count from the reference's first sample (0 s).
TIME_AXIS = "time since the reference's first sample (s)"

PLOTS = {
    "ee_paths.png": "End-effector paths, reference vs run (3-D and top view)",
    "deviation.png": "Deviation from the reference over time",
    "joint_error.png": "Per-joint RMS error (mean and 95 % CI per configuration)",
    "cumulative_drift.png": "Cumulative drift",
}


def write_report(analysis: Analysis, out: str | Path) -> list[Path]:
    """Write report.md, metrics.json and the plots into `out`; returns the files written."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    plots = write_plots(analysis, folder)
    names = [p.name for p in plots]
    record = analysis.to_dict() | {"plots": names}
    return write_files(folder, record, markdown(analysis, names), plots)


def write_files(folder: Path, record: dict, report_md: str, plots: list[Path]) -> list[Path]:
    """metrics.json (`record`) and report.md into `folder`; the report, the metrics, the plots."""
    metrics_json = folder / "metrics.json"
    metrics_json.write_text(json.dumps(record, indent=2) + "\n")
    report = folder / "report.md"
    report.write_text(report_md)
    return [report, metrics_json, *plots]


def write_plots(analysis: Analysis, folder: Path) -> list[Path]:
    """Draw every plot the data supports (no paths without poses) into `folder`.

    With a pose alignment (--align se3/sim3), paths and deviations are the aligned run's, as
    APE measured them.
    """
    results = [aligned(r, analysis.pose_settings.alignment) for r in analysis.episodes]
    drawn = []
    for name, draw in (
        ("ee_paths.png", lambda fig: plot_ee_paths(fig, results)),
        ("deviation.png", lambda fig: plot_deviation(fig, results)),
        ("joint_error.png", lambda fig: plot_joint_error(fig, analysis)),
        ("cumulative_drift.png", lambda fig: plot_cumulative_drift(fig, results)),
    ):
        fig = Figure(figsize=(10, 4.5), layout="constrained")
        if draw(fig):
            FigureCanvasAgg(fig).print_png(folder / name)
            drawn.append(folder / name)
    return drawn


def aligned(result: EpisodeResult, alignment: str) -> EpisodeResult:
    """The result with its run poses moved by the Umeyama alignment APE used (none: as is)."""
    pair = result.pair
    if alignment == "none" or pair.exec_positions is None or pair.ref_positions is None:
        return result
    similarity = umeyama(pair.exec_positions, pair.ref_positions, alignment == "sim3")
    positions, quats = apply_similarity(similarity, pair.exec_positions, pair.exec_quaternions)
    moved = replace(pair, exec_positions=positions, exec_quaternions=quats)
    return replace(result, pair=moved)


def deviation(pair: AlignedPair) -> tuple[np.ndarray, str]:
    """Per-sample distance run - reference: end-effector (m) when both have poses, else joints."""
    if pair.exec_positions is not None and pair.ref_positions is not None:
        return position_deviation(pair.exec_positions, pair.ref_positions), "end-effector, m"
    assert pair.exec_joints is not None and pair.ref_joints is not None
    return np.linalg.norm(pair.exec_joints - pair.ref_joints, axis=1), "joint space, rad"


def _colours(results: Sequence[EpisodeResult]) -> dict[str, str]:
    configs = dict.fromkeys(r.config for r in results)
    return {config: f"C{i % 10}" for i, config in enumerate(configs)}


def _label_once(config: str, seen: set[str]) -> str | None:
    """The config name the first time it is drawn (one legend entry per configuration)."""
    if config in seen:
        return None
    seen.add(config)
    return config


def plot_ee_paths(fig: Figure, results: Sequence[EpisodeResult]) -> bool:
    """3-D and top (x-y) views of each run's end-effector path over its reference's path."""
    with_poses = [r for r in results if r.pair.exec_positions is not None]
    if not with_poses:
        return False
    space = fig.add_subplot(1, 2, 1, projection="3d")
    top = fig.add_subplot(1, 2, 2)
    colours, seen, drawn_refs = _colours(with_poses), set(), set()
    for result in with_poses:
        run, ref = result.pair.exec_positions, result.pair.ref_positions
        if result.reference.bag not in drawn_refs:
            label = None if drawn_refs else "reference"
            drawn_refs.add(result.reference.bag)
            space.plot(*ref.T, color="0.3", linestyle="--", label=label)
            top.plot(ref[:, 0], ref[:, 1], color="0.3", linestyle="--", label=label)
        label = _label_once(result.config, seen)
        space.plot(*run.T, color=colours[result.config], label=label)
        top.plot(run[:, 0], run[:, 1], color=colours[result.config], label=label)
    space.set(xlabel="x (m)", ylabel="y (m)", zlabel="z (m)", title="3-D")
    top.set(xlabel="x (m)", ylabel="y (m)", title="top view", aspect="equal")
    top.legend(fontsize="small")
    return True


def plot_deviation(fig: Figure, results: Sequence[EpisodeResult]) -> bool:
    """Deviation from the reference over time, one curve per episode, coloured by config."""
    ax = fig.add_subplot()
    colours, seen, unit = _colours(results), set(), ""
    for result in results:
        d, unit = deviation(result.pair)
        ax.plot(
            result.pair.stamps,
            d,
            color=colours[result.config],
            label=_label_once(result.config, seen),
        )
    ax.set(xlabel=TIME_AXIS, ylabel=f"deviation ({unit})")
    ax.legend(fontsize="small")
    return True


def plot_joint_error(fig: Figure, analysis: Analysis) -> bool:
    """Grouped bars: mean per-joint RMS error per configuration, with 95 % CI error bars."""
    joints = _joints(analysis)
    if not joints:
        return False
    ax = fig.add_subplot()
    configs = analysis.configs
    width = 0.8 / len(configs)
    x = np.arange(len(joints))
    for i, config in enumerate(configs):
        summaries = [analysis.summaries[config][f"joint_rms_error/{j}"] for j in joints]
        errors = [s.half_width or 0.0 for s in summaries]
        ax.bar(x + i * width, [s.mean for s in summaries], width, yerr=errors, label=config)
    ax.set_xticks(x + width * (len(configs) - 1) / 2, joints, rotation=30, ha="right")
    ax.set(ylabel="RMS joint error (rad or m)")
    ax.legend(fontsize="small")
    return True


def plot_cumulative_drift(fig: Figure, results: Sequence[EpisodeResult]) -> bool:
    """Running integral of the deviation over time, one curve per episode, coloured by config."""
    ax = fig.add_subplot()
    colours, seen, unit = _colours(results), set(), ""
    for result in results:
        d, unit = deviation(result.pair)
        curve = cumulative_drift(result.pair.stamps, d)
        ax.plot(
            result.pair.stamps,
            curve,
            color=colours[result.config],
            label=_label_once(result.config, seen),
        )
    ax.set(xlabel=TIME_AXIS, ylabel=f"∫ deviation dt ({unit} · s)")
    ax.legend(fontsize="small")
    return True


def _joints(analysis: Analysis) -> list[str]:
    """Joint labels with an aggregated RMS error in every configuration, in first-seen order."""
    per_config = [
        [k.split("/", 1)[1] for k in summary if k.startswith("joint_rms_error/")]
        for summary in analysis.summaries.values()
    ]
    return [j for j in per_config[0] if all(j in c for c in per_config)] if per_config else []


def shown(key: str, summary: Summary | None) -> Summary | None:
    """The summary in the unit the report shows `key` in (DISPLAY_SCALE)."""
    factor = DISPLAY_SCALE.get(key.split("/", 1)[0])
    if summary is None or factor is None:
        return summary
    low, high = summary.ci_low, summary.ci_high
    return Summary(
        summary.mean * factor,
        None if low is None else low * factor,
        None if high is None else high * factor,
        summary.n,
    )


def format_summary(summary: Summary | None) -> str:
    """'mean ± half-width' of the 95 % CI, the plain mean without one, '–' when missing."""
    if summary is None:
        return "–"
    if summary.half_width is None:
        return f"{summary.mean:.4g}"
    return f"{summary.mean:.4g} ± {summary.half_width:.2g}"


def summary_table(analysis: Analysis) -> str:
    """A short plain-text table of the headline metrics per configuration, for the terminal."""
    columns = [
        ("ee RMSE m", "ee_position_rmse"),
        ("ee final m", "ee_position_final_error"),
        ("cum. drift m·s", "cumulative_drift"),
        ("DTW lag s", "dtw_lag"),
        ("DTW dist", "dtw_distance"),
        ("APE m", "ape_translation_rmse"),
        ("APE deg", "ape_rotation_rmse"),
        ("RPE m", "rpe_translation_rmse"),
        ("RPE deg", "rpe_rotation_rmse"),
    ]
    rows = [["config", "n", *(title for title, _ in columns)]]
    for config in analysis.configs:
        summary = analysis.summaries[config]
        n = sum(r.config == config for r in analysis.episodes)
        cells = (format_summary(shown(key, summary.get(key))) for _, key in columns)
        rows.append([config, str(n), *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def markdown(analysis: Analysis, plots: Sequence[str]) -> str:
    """The text of report.md."""
    parts = [_overview(analysis), _legend()]
    parts += [_config_section(analysis, config) for config in analysis.configs]
    parts.append(_episode_table(analysis.episodes))
    if any(r.rungs is not None and len(r.rungs.time_s) > 1 for r in analysis.episodes):
        parts.append(_rung_section(analysis.episodes))
    parts.append("## Plots\n\n" + "\n\n".join(f"![{PLOTS[p]}]({p})" for p in plots))
    return "\n\n".join(parts) + "\n"


def _overview(analysis: Analysis) -> str:
    episodes = analysis.episodes
    ee_sources = sorted(
        {r.run.ee_source for r in episodes} | {r.reference.ee_source for r in episodes}
    )
    paired = sorted({r.paired_by for r in episodes})
    rows = [
        ("reference", f"`{analysis.reference}`"),
        ("runs", ", ".join(f"`{run}`" for run in analysis.runs)),
        ("episodes", f"{len(episodes)} in {len(analysis.configs)} bit configuration(s)"),
        ("paired by", ", ".join(paired) + f" (metadata keys {', '.join(EPISODE_KEYS)})"),
        ("end-effector poses from", ", ".join(ee_sources)),
        ("time base", _time_base_summary(analysis)),
        ("APE / RPE pose alignment", ALIGNMENT_NAMES[analysis.pose_settings.alignment]),
        ("RPE delta", _delta_summary(analysis)),
        ("DTW band", f"±{analysis.dtw_window_s:g} s (longer lags are not recovered)"),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (
        "# Drift report\n\nKinematic drift of each run (e.g. a quantized policy) against the "
        "reference (e.g. the full-precision policy) started from the same state. "
        "Means over episodes with 95 % Student-t confidence intervals.\n\n"
        f"| | |\n|---|---|\n{table}"
    )


def _time_base_summary(analysis: Analysis) -> str:
    """Which time base the episodes were compared on, why, and the run start offsets applied."""
    parts = []
    for base, name in TIME_BASE_NAMES.items():
        used = [r.time for r in analysis.episodes if r.time.base == base]
        if used:
            why = "; ".join(sorted({t.reason for t in used}))
            shift = (
                f"; {_offsets(used)}, compared at the same instants" if base == "absolute" else ""
            )
            parts.append(f"{name} for {len(used)} episode(s) ({why}{shift})")
    return (
        f"{'; '.join(parts)}; asked for --time-base {analysis.time_base}; the reference "
        "interpolated at the run's stamps"
    )


def _offsets(times: Sequence[TimeAlignment]) -> str:
    """'run starts +5 s after the reference' (or the range of those offsets)."""
    low, high = min(t.start_offset_s for t in times), max(t.start_offset_s for t in times)
    span = f"{low:+.4g} s" if low == high else f"{low:+.4g} to {high:+.4g} s"
    return f"run starts {span} after the reference"


def _delta_summary(analysis: Analysis) -> str:
    """RPE's delta and how its pairs are picked."""
    settings = analysis.pose_settings
    unit = "frame(s) (run samples)" if settings.delta_unit == "frames" else "m of the run's path"
    return f"{settings.delta:g} {unit}, consecutive pairs (evo's default)"


def _legend() -> str:
    """The '## Metrics' section: what each metric measures."""
    return "## Metrics\n\n" + "\n".join(f"- {line}" for line in LEGEND)


def _config_section(analysis: Analysis, config: str) -> str:
    summary = analysis.summaries[config]
    n = sum(r.config == config for r in analysis.episodes)
    lines = [f"## Configuration `{config}` ({n} episode(s))", ""]
    lines += [
        "| metric | unit | mean ± 95 % CI half-width | 95 % CI | n |",
        "|---|---|---|---|---|",
    ]
    for key in SCALAR_METRICS:
        if (s := shown(key, summary.get(key))) is not None:
            label, unit = METRIC_LABELS[key]
            ci = "–" if s.ci_low is None else f"[{s.ci_low:.4g}, {s.ci_high:.4g}]"
            lines.append(f"| {label} | {unit} | {format_summary(s)} | {ci} | {s.n} |")
    joints = [k.split("/", 1)[1] for k in summary if k.startswith("joint_rms_error/")]
    if joints:
        header = " | ".join(f"{JOINT_LABELS[m]} error (rad or m)" for m in JOINT_METRICS)
        lines += ["", f"| joint | {header} |", "|---|---|---|---|"]
        for joint in joints:
            cells = " | ".join(format_summary(summary.get(f"{m}/{joint}")) for m in JOINT_METRICS)
            lines.append(f"| {joint} | {cells} |")
    return "\n".join(lines)


def _heading(key: str) -> str:
    """'label (unit)' of a metric, without brackets when it has no unit."""
    label, unit = METRIC_LABELS[key]
    return f"{label} ({unit})" if unit else label


def _episode_table(results: Sequence[EpisodeResult]) -> str:
    keys = ["ee_position_rmse", "ee_position_final_error", "cumulative_drift", "dtw_lag"]
    keys += ["dtw_distance", "path_length_ratio", "ape_translation_rmse", "ape_rotation_rmse"]
    keys += ["rpe_translation_rmse", "rpe_rotation_rmse"]
    header = " | ".join(_heading(k) for k in keys)
    lines = [
        "## Episodes",
        "",
        f"| config | run bag | reference bag | paired by | time base | {header} "
        "| worst joint RMS |",
        "|" + "---|" * (len(keys) + 6),
    ]
    for r in results:
        m = r.metrics.to_dict()
        cells = " | ".join(
            "–" if m[k] is None else f"{m[k] * DISPLAY_SCALE.get(k, 1.0):.4g}" for k in keys
        )
        worst = "–" if not r.metrics.joint_rms_error else f"{max(r.metrics.joint_rms_error):.4g}"
        lines.append(
            f"| {r.config} | `{r.run.bag.name}` | `{r.reference.bag.name}` | {r.paired_by} "
            f"| {r.time.describe()} | {cells} | {worst} |"
        )
    return "\n".join(lines)


def _rung_section(results: Sequence[EpisodeResult]) -> str:
    """Bit configs over time (the precision ladder's switches), from the runs' ~/status."""
    lines = [
        "## Bit configuration over time",
        "",
        "From each run's recorded ~/status: time on each bit config, and the mean deviation "
        "from the reference in the second before and after each switch.",
        "",
        "| run bag | time per bit config (s) | switch (at s: from -> to) | deviation before | "
        "deviation after |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if r.rungs is None:
            continue
        spent = ", ".join(f"{bits} {s:.1f}" for bits, s in r.rungs.time_s.items())
        for k, switch in enumerate(r.rungs.switches or ({},)):
            where = spent if k == 0 else ""
            if not switch:
                lines.append(f"| `{r.run.bag.name}` | {where} | – | – | – |")
                continue
            moved = f"{switch['at_s']:.1f}: {switch['from']} -> {switch['to']}"
            before, after = (
                "–" if switch[key] is None else f"{switch[key]:.4g}"
                for key in ("deviation_before", "deviation_after")
            )
            lines.append(f"| `{r.run.bag.name}` | {where} | {moved} | {before} | {after} |")
    return "\n".join(lines)
