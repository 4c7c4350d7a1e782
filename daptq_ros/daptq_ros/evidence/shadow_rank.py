"""Evidence that the shadow ranks drift as a recorded reference does (lockstep, node logic).

For each (task, seed), the full-precision run is recorded to a rosbag2 (robot/lockstep.Recorder)
as the reference. Each method (bit config) then runs the same seed with a full-precision shadow
(shadow_bit_config), and two drift monitor cores, the drift monitor node's own logic, watch
every message of that run:

- recorded: its reference_bag is the recorded full-precision run of the seed;
- shadow: no reference at all, so it reports against the policy node's shadow.

An episode's drift by each monitor is the mean end-effector position RMSE of the windows it
closed. The per-chunk hand divergences the shadow reported are kept too: their percentiles per
bit config are what the precision ladder's thresholds (ladder_up_m, ladder_down_m) are set
from. Spearman's rank correlation over the methods (each the mean over the episodes) says
whether the shadow orders the methods as the recording does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daptq_ros.bags.typestore import make_typestore
from daptq_ros.errors import DriftError
from daptq_ros.evidence.drift_guard import FULL_PRECISION, run_episode
from daptq_ros.robot.drift_core import DriftMonitorCore
from daptq_ros.robot.lockstep import POLICY_TOPICS, STATUS_TOPIC, Recorder
from daptq_ros.robot.shadow import SHADOW


class MonitorTap:
    """A lockstep message sink that feeds drift monitor cores as the launched graph would."""

    def __init__(self, monitors: Sequence[DriftMonitorCore]) -> None:
        self.monitors = list(monitors)
        self.rmse: list[list[float]] = [[] for _ in self.monitors]  # per monitor, per window
        self.chunk_divergence: list[float] = []  # the shadow's hand divergence per chunk, m

    def write(self, topic: str, msg: Any, now: float) -> None:
        """One message of the graph, by its topic."""
        if topic == POLICY_TOPICS[SHADOW] and msg.has_hand_divergence:
            self.chunk_divergence.append(float(msg.hand_max_divergence))
        for monitor, rmse in zip(self.monitors, self.rmse, strict=True):
            report = self._feed(monitor, topic, msg)
            if report is not None and np.isfinite(report.ee_position_rmse):
                rmse.append(float(report.ee_position_rmse))

    @staticmethod
    def _feed(monitor: DriftMonitorCore, topic: str, msg: Any) -> Any | None:
        if topic == monitor.params["joint_states_topic"]:
            return monitor.on_joint_states(msg)
        if topic == monitor.params["ee_pose_topic"]:
            return monitor.on_ee_pose(msg)
        if topic == POLICY_TOPICS[SHADOW]:
            return monitor.on_shadow(msg)
        if topic == monitor.params["episode_topic"]:
            return monitor.on_episode(msg)  # the partial last window of a short episode
        if topic == STATUS_TOPIC:
            monitor.on_policy_status(msg)
        return None


@dataclass(frozen=True)
class MethodDrift:
    """One method's drift per episode (m), as each monitor measured it, and the shadow's hand
    divergence of every chunk it compared (m, all episodes)."""

    method: str
    recorded_m: list[float]
    shadow_m: list[float]
    chunk_divergence_m: list[float]


@dataclass(frozen=True)
class RankAgreement:
    """Every method's drift by both monitors and Spearman's rho (and p) over the methods."""

    methods: list[MethodDrift]
    spearman: float
    p_value: float


def record_reference(
    build: Callable[[str], Any], task: str, seed: int, max_steps: int, folder: Path
) -> Path:
    """Record the full-precision run of (task, seed) to a rosbag2 under `folder`; its path."""
    path = folder / f"{task}_{seed}_{FULL_PRECISION}"
    recorder = Recorder(path)
    try:
        run_episode(build, {"bit_config": FULL_PRECISION}, task, seed, max_steps, recorder)
    finally:
        recorder.close({})
    return path


def watch_episode(
    build: Callable[[str], Any],
    method: str,
    shadow: str,
    task: str,
    seed: int,
    max_steps: int,
    reference: Path,
) -> tuple[float, float, list[float]]:
    """Run `method` with a `shadow`: its drift (m) against `reference` and against the shadow,
    and the shadow's hand divergence per chunk (m)."""
    types = make_typestore().types
    monitors = [DriftMonitorCore({"reference_bag": str(reference)}, types)]
    monitors.append(DriftMonitorCore({}, types))
    tap = MonitorTap(monitors)
    params = {"bit_config": method, "shadow_bit_config": shadow, "shadow_every": 1}
    run_episode(build, params, task, seed, max_steps, tap)
    recorded, shadowed = tap.rmse
    if not recorded or not shadowed:
        raise DriftError(
            f"{method} on {task}/{seed}: a monitor closed no window in {max_steps} steps "
            f"(recorded {len(recorded)}, shadow {len(shadowed)}); run longer episodes"
        )
    return float(np.mean(recorded)), float(np.mean(shadowed)), tap.chunk_divergence


def rank_agreement(
    build: Callable[[str], Any],
    methods: Sequence[str],
    episodes: Iterable[tuple[str, int]],
    max_steps: int,
    folder: Path,
    shadow: str = FULL_PRECISION,
    progress: Callable[[str], None] | None = None,
) -> RankAgreement:
    """Every method over the same episodes, against the recorded run and the shadow."""
    from scipy.stats import spearmanr

    episodes = list(episodes)
    references = {e: record_reference(build, *e, max_steps, folder) for e in episodes}
    rows = []
    for method in methods:
        pairs = [
            watch_episode(build, method, shadow, *e, max_steps, references[e]) for e in episodes
        ]
        chunks = [d for p in pairs for d in p[2]]
        rows.append(MethodDrift(method, [p[0] for p in pairs], [p[1] for p in pairs], chunks))
        if progress is not None:
            progress(
                f"{method}: recorded {np.mean(rows[-1].recorded_m) * 1e3:.2f} mm, "
                f"shadow {np.mean(rows[-1].shadow_m) * 1e3:.2f} mm"
            )
    recorded = [np.mean(r.recorded_m) for r in rows]
    shadowed = [np.mean(r.shadow_m) for r in rows]
    rho, p = spearmanr(recorded, shadowed) if len(rows) > 2 else (float("nan"), float("nan"))
    return RankAgreement(rows, float(rho), float(p))
