"""Write a pose-only drift analysis as report.md, metrics.json and two plots a person reads at once.

- paths.png: the reference's and each run's path seen from above (x-y), the run as aligned
  when an alignment was asked for (what APE measured), with the pairs' start and end marked;
- errors_over_time.png: APE translation of every pair and RPE translation of every segment
  against time, with the gaps of the reference shaded.
Units: metres and degrees throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daptq_ros.drift.pose_drift import PoseAnalysis, PoseComparison
from daptq_ros.drift.stats import Summary
from daptq_ros.evidence.drift_report import write_files

ALIGNMENTS = {
    "none": "none: the run's poses as recorded (the frames are shared)",
    "se3": "se3: the run rotated and moved onto the reference (Umeyama)",
    "sim3": "sim3: the run rotated, moved and scaled onto the reference (Umeyama)",
}
COLUMNS = (  # terminal and report columns: title, metric of pose_drift.SUMMARY_METRICS
    ("APE m", "ape_translation_m"),
    ("APE deg", "ape_rotation_deg"),
    ("RPE m", "rpe_translation_m"),
    ("RPE deg", "rpe_rotation_deg"),
    ("final m", "final_error_m"),
    ("path ratio", "path_length_ratio"),
)
PLOTS = {
    "paths.png": "Paths from above: the reference and the run",
    "errors_over_time.png": "APE and RPE translation error over time",
}


def write_pose_report(analysis: PoseAnalysis, out: str | Path) -> list[Path]:
    """Write report.md, metrics.json and the plots into `out`; returns the files written."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    plots = []
    for name, draw in (("paths.png", plot_paths), ("errors_over_time.png", plot_errors)):
        fig = Figure(figsize=(10, 4.5), layout="constrained")
        draw(fig, analysis.comparisons)
        FigureCanvasAgg(fig).print_png(folder / name)
        plots.append(folder / name)
    names = [p.name for p in plots]
    record = analysis.to_dict() | {"plots": names}
    return write_files(folder, record, markdown(analysis, names), plots)


def _time_axis(comparisons: Sequence[PoseComparison]) -> float:
    """The earliest paired reference stamp: plots count time from it."""
    return min(float(c.stamps.min()) for c in comparisons)


def plot_paths(fig: Figure, comparisons: Sequence[PoseComparison]) -> None:
    """Reference and run paths from above, one panel per comparison (at most three)."""
    shown = comparisons[:3]
    for k, comparison in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), k + 1)
        ref, run = comparison.reference_path, comparison.run_path
        ax.plot(ref[:, 0], ref[:, 1], color="0.3", linestyle="--", label="reference")
        ax.plot(run[:, 0], run[:, 1], color="C0", label=f"run ({comparison.settings.alignment})")
        ax.plot(*comparison.association.reference.positions[0, :2], "o", color="0.3")
        ax.plot(*comparison.run_positions[0, :2], "o", color="C0", label="first pair")
        ax.set(xlabel="x (m)", ylabel="y (m)", aspect="equal", title=comparison.run_bag.name)
        ax.legend(fontsize="small")


def plot_errors(fig: Figure, comparisons: Sequence[PoseComparison]) -> None:
    """APE per pair and RPE per segment (translation, m) over time; reference gaps shaded."""
    ape_ax, rpe_ax = fig.subplots(2, 1, sharex=True)
    origin = _time_axis(comparisons)
    for k, comparison in enumerate(comparisons):
        colour = f"C{k % 10}"
        t = comparison.stamps - origin
        label = comparison.run if len(comparisons) < 8 else None
        ape_ax.plot(t, comparison.ape_errors_m, ".", markersize=2, color=colour, label=label)
        if len(comparison.rpe_pairs):
            t_end = t[comparison.rpe_pairs[:, 1]]
            rpe_ax.plot(t_end, comparison.rpe_errors_m, ".", markersize=3, color=colour)
        _shade_gaps(ape_ax, np.sort(comparison.stamps) - origin, comparison.association)
    delta = comparisons[0].settings
    ape_ax.set(ylabel="APE (m)", title=f"alignment {delta.alignment}")
    rpe_ax.set(
        xlabel="time since the first pair (s)",
        ylabel=f"RPE over {delta.delta:g} {'m' if delta.delta_unit == 'm' else 'frame(s)'} (m)",
    )
    if len(comparisons) < 8:
        ape_ax.legend(fontsize="small", markerscale=4)


def _shade_gaps(ax, stamps: np.ndarray, association) -> None:
    """Shade the intervals between pairs longer than the association's max_gap."""
    gaps = np.flatnonzero(np.diff(stamps) > association.settings.max_gap)
    for i in gaps:
        ax.axvspan(stamps[i], stamps[i + 1], color="0.9", zorder=0)


def format_number(value: float) -> str:
    """A plain number with 4 significant digits ('–' when not a number)."""
    return "–" if not math.isfinite(value) else f"{value:.4g}"


def format_summary(summary: Summary | None) -> str:
    """'mean ± half-width' over several bags, the plain mean over one."""
    if summary is None:
        return "–"
    if summary.half_width is None:
        return format_number(summary.mean)
    return f"{format_number(summary.mean)} ± {summary.half_width:.2g}"


def summary_rows(analysis: PoseAnalysis) -> list[list[str]]:
    """Header and one row per run: bags, pairs, APE and RPE (m, deg), final error, path ratio."""
    rows = [["run", "bags", "pairs", *(title for title, _ in COLUMNS)]]
    for run, summary in analysis.summaries.items():
        mine = [c for c in analysis.comparisons if c.run == run]
        pairs = sum(c.association.pairs for c in mine)
        rows.append(
            [run, str(len(mine)), str(pairs), *(format_summary(summary.get(k)) for _, k in COLUMNS)]
        )
    return rows


def summary_table(analysis: PoseAnalysis) -> str:
    """summary_rows as padded plain text, for the terminal."""
    rows = summary_rows(analysis)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def markdown(analysis: PoseAnalysis, plots: Sequence[str]) -> str:
    """The text of report.md."""
    a, s = analysis.association, analysis.settings
    lines = [
        "# Pose drift report",
        "",
        "Each run's pose stream against its reference stream, as evo compares them.",
        "",
        f"- association: {a.method}, pairs within {a.t_max_diff:g} s"
        + (f", run shifted by {a.offset:+g} s" if a.offset else "")
        + f"; a gap is more than {a.max_gap:g} s between two poses",
        f"- alignment: {ALIGNMENTS[s.alignment]}",
        f"- RPE: poses {s.delta:g} {s.delta_unit} apart along the run",
        "",
        "## Summary",
        "",
    ]
    header, *rows = summary_rows(analysis)
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## Streams", "", *_stream_table(analysis.comparisons), ""]
    lines += [f"![{PLOTS[name]}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _stream_table(comparisons: Sequence[PoseComparison]) -> list[str]:
    rows = [
        "| run bag | run | reference | time base | pairs | run dropped | reference dropped "
        "| duplicate stamps | reference gaps (longest, s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        counts = c.association.to_dict()
        rows.append(
            f"| {c.run_bag.name} | {c.run_source} | {c.reference_source} | {c.time_base} | "
            f"{counts['pairs']} | {counts['run_dropped']} | {counts['reference_dropped']} | "
            f"{counts['run_duplicate_stamps']} + {counts['reference_duplicate_stamps']} | "
            f"{counts['reference_gaps']} ({counts['longest_reference_gap_s']:.1f}) |"
        )
    return rows
