"""The demo's figure: EE deviation from FP32 over episode time per method, and top-down paths.

The band is the 95 % Student-t interval of the mean across episodes at each time point (the
episodes still running there): results_stats.deviation_band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daptq_ros.bags.episode import META_SEED, META_TASK
from daptq_ros.drift.analysis import EpisodeResult
from daptq_ros.evidence.results_stats import deviation_band

BAND_LABEL = "mean, band: 95 % CI of the mean across episodes"
PATH_EPISODES = 3  # top-down panels: the first episode of up to this many tasks
METHOD_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")


def write_demo_plot(results: Mapping[str, Sequence[EpisodeResult]], path: Path) -> Path:
    """deviation.png: the deviation bands (top) and a few episodes' paths from above (bottom).

    `results`: each method's scored episodes, by the label its line gets.
    """
    episodes = _path_episodes(results)
    figure = Figure(figsize=(10, 7.5))
    grid = figure.add_gridspec(2, max(1, len(episodes)), height_ratios=(3, 2))
    colours = dict(zip(results, METHOD_COLOURS, strict=False))
    _plot_bands(figure.add_subplot(grid[0, :]), results, colours)
    for column, episode in enumerate(episodes):
        axes = figure.add_subplot(grid[1, column])
        _plot_paths(axes, results, colours, episode)
        if column == 0:
            axes.legend(fontsize="x-small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def _plot_bands(
    axes: Axes, results: Mapping[str, Sequence[EpisodeResult]], colours: Mapping[str, str]
) -> None:
    """One line per method: mean deviation in mm with its 95 % band."""
    for method, method_results in results.items():
        band = deviation_band(method_results)
        if band is None:
            continue
        colour = colours.get(method)
        axes.plot(band.time_s, 1e3 * band.mean, color=colour, label=method)
        axes.fill_between(
            band.time_s, 1e3 * band.low, 1e3 * band.high, color=colour, alpha=0.2, linewidth=0
        )
    axes.set(
        xlabel="episode time (s)",
        ylabel="EE deviation from FP32 (mm)",
        title=f"End-effector deviation from the FP32 rollout of the same seed ({BAND_LABEL})",
    )
    axes.title.set_fontsize("medium")
    axes.set_ylim(bottom=0.0)
    axes.legend()


def _path_episodes(results: Mapping[str, Sequence[EpisodeResult]]) -> list[tuple[str, str]]:
    """(task, seed) of the first episode of up to PATH_EPISODES tasks, in the rollout order."""
    first: dict[str, str] = {}
    for result in next(iter(results.values()), ()):
        first.setdefault(*_episode(result))
    return list(first.items())[:PATH_EPISODES]


def _episode(result: EpisodeResult) -> tuple[str, str]:
    """(task, seed) of a scored episode, from its bag's metadata."""
    return result.run.metadata.get(META_TASK, "?"), result.run.metadata.get(META_SEED, "?")


def _plot_paths(
    axes: Axes,
    results: Mapping[str, Sequence[EpisodeResult]],
    colours: Mapping[str, str],
    episode: tuple[str, str],
) -> None:
    """One episode from above: the FP32 path dashed, each method's path over it."""
    reference_drawn = False
    for method, method_results in results.items():
        for result in method_results:
            run = result.run.trajectory.ee_positions
            ref = result.reference.trajectory.ee_positions
            if _episode(result) != episode or run is None or ref is None:
                continue
            if not reference_drawn:
                axes.plot(ref[:, 0], ref[:, 1], "k--", linewidth=1, label="FP32")
                reference_drawn = True
            axes.plot(run[:, 0], run[:, 1], color=colours.get(method), linewidth=1, label=method)
    task, seed = episode
    axes.set(xlabel="x (m)", ylabel="y (m)", title=f"{task}, seed {seed}, from above")
    axes.title.set_fontsize("small")
    axes.set_aspect("equal", adjustable="datalim")
