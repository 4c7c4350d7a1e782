"""Pose-only drift: a run's pose stream against a reference pose stream, as evo compares them.

For recordings without an arm's joint states (a mobile base's odometry against its
localisation, visual SLAM against motion capture) or whenever each side has its own source:
`--run-topic` and `--reference-topic` (or a tf chain per side), from one bag or two. The poses
are paired in time as evo pairs them (drift/association.py), optionally aligned (Umeyama: SE3 or
Sim3), and scored with evo's APE and RPE; the error of every pair and of every RPE segment is
kept for the report's error-over-time plot. Runs group by their folder's name.
numpy, scipy, bags and drift only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daptq_ros.bags.trajectory import POSE_TYPES, PoseSource, StampSource, read_poses
from daptq_ros.drift.analysis import BagEntry, find_bags, pair_entries, run_name
from daptq_ros.drift.association import (
    Association,
    AssociationSettings,
    PoseStream,
    associate,
)
from daptq_ros.drift.metrics import path_length
from daptq_ros.drift.pose_errors import (
    PoseErrorSettings,
    apply_similarity,
    rotation_angles,
    rpe_errors,
    rpe_index_pairs,
    umeyama,
)
from daptq_ros.drift.stats import Summary, summarize
from daptq_ros.errors import DaptqError, DriftError

MIN_SHARED_FRACTION = 0.5  # auto time base: absolute when the streams share this much time
# The numbers of a comparison that are summarised over a run's bags (units in the names).
SUMMARY_METRICS = (
    "ape_translation_m",
    "ape_rotation_deg",
    "rpe_translation_m",
    "rpe_rotation_deg",
    "final_error_m",
    "path_length_ratio",
)


@dataclass(frozen=True)
class PoseComparison:
    """One run stream scored against its reference stream."""

    run: str  # the run's name (its folder)
    run_bag: Path
    reference_bag: Path
    run_source: str
    reference_source: str
    time_base: str  # "absolute" or "start"
    association: Association
    settings: PoseErrorSettings
    run_positions: np.ndarray  # paired run positions, after the alignment (if any)
    run_quats: np.ndarray
    run_path: np.ndarray  # every run position in time order, aligned; NaN rows break it at gaps
    reference_path: np.ndarray
    scale: float | None  # Sim3's scale; None without alignment
    ape_errors_m: np.ndarray  # per pair
    ape_errors_deg: np.ndarray
    rpe_pairs: np.ndarray  # [K, 2] indices into the pairs
    rpe_errors_m: np.ndarray
    rpe_errors_deg: np.ndarray
    values: dict[str, float] = field(default_factory=dict)

    @property
    def stamps(self) -> np.ndarray:
        """The reference stamps of the pairs (s)."""
        return self.association.reference.stamps

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (numbers, counts and settings; no arrays)."""
        return {
            "run": self.run,
            "run_bag": str(self.run_bag),
            "reference_bag": str(self.reference_bag),
            "run_source": self.run_source,
            "reference_source": self.reference_source,
            "time_base": self.time_base,
            "association": self.association.to_dict(),
            "pose_errors": self.settings.to_dict(),
            "alignment_scale": self.scale,
            "rpe_segments": len(self.rpe_pairs),
            "metrics": self.values,
        }


@dataclass(frozen=True)
class PoseAnalysis:
    """Every comparison, and per run the mean of each metric over its bags."""

    comparisons: tuple[PoseComparison, ...]
    summaries: dict[str, dict[str, Summary]]
    association: AssociationSettings
    settings: PoseErrorSettings

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "poses",
            "association": self.association.to_dict(),
            "pose_errors": self.settings.to_dict(),
            "comparisons": [c.to_dict() for c in self.comparisons],
            "runs": {
                run: {name: s.to_dict() for name, s in summary.items()}
                for run, summary in self.summaries.items()
            },
        }


def _rmse(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values * values))) if len(values) else float("nan")


def compare(
    run: PoseStream,
    reference: PoseStream,
    association: AssociationSettings,
    settings: PoseErrorSettings,
) -> tuple[Association, dict[str, Any]]:
    """Associate, align and score: the association and the arrays PoseComparison holds."""
    paired = associate(run, reference, association)
    p_run, q_run = paired.run.positions, paired.run.quats
    p_ref, q_ref = paired.reference.positions, paired.reference.quats
    scale = None
    run_path = run.positions
    if settings.alignment != "none":
        similarity = umeyama(p_run, p_ref, with_scale=settings.alignment == "sim3")
        p_run, q_run = apply_similarity(similarity, p_run, q_run)
        run_path = apply_similarity(similarity, run.positions, None)[0]
        scale = similarity.scale
    ape_m = np.linalg.norm(p_run - p_ref, axis=1)
    ape_deg = np.degrees(rotation_angles(q_run, q_ref))
    pairs = rpe_index_pairs(p_run, settings.delta, settings.delta_unit)
    rpe_m, rpe_deg = (
        rpe_errors(p_run, q_run, p_ref, q_ref, pairs) if len(pairs) else (np.empty(0),) * 2
    )
    ref_length = path_length(p_ref)
    values = {
        "ape_translation_m": _rmse(ape_m),
        "ape_rotation_deg": _rmse(ape_deg),
        "rpe_translation_m": _rmse(rpe_m),
        "rpe_rotation_deg": _rmse(rpe_deg),
        "final_error_m": float(ape_m[-1]),
        "path_length_m": path_length(p_run),
        "reference_path_length_m": ref_length,
        "path_length_ratio": path_length(p_run) / ref_length if ref_length > 0 else float("nan"),
        "duration_s": float(paired.reference.stamps.max() - paired.reference.stamps.min()),
    }
    arrays = {
        "run_positions": p_run,
        "run_quats": q_run,
        "run_path": broken_at_gaps(run.stamps, run_path, association.max_gap),
        "reference_path": broken_at_gaps(
            reference.stamps, reference.positions, association.max_gap
        ),
        "scale": scale,
        "ape_errors_m": ape_m,
        "ape_errors_deg": ape_deg,
        "rpe_pairs": pairs,
        "rpe_errors_m": rpe_m,
        "rpe_errors_deg": rpe_deg,
        "values": values,
    }
    return paired, arrays


def broken_at_gaps(stamps: np.ndarray, positions: np.ndarray, max_gap: float) -> np.ndarray:
    """Positions in time order with a NaN row inside every gap longer than max_gap (for plots)."""
    order = np.argsort(stamps, kind="stable")
    t, p = stamps[order], positions[order]
    gaps = np.flatnonzero(np.diff(t) > max_gap) + 1
    return np.insert(p, gaps, np.nan, axis=0)


def shared_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """The share of the shorter stream's span that the two spans have in common, 0..1."""
    shared = min(a.max(), b.max()) - max(a.min(), b.min())
    shorter = min(np.ptp(a), np.ptp(b))
    if shared < 0:
        return 0.0
    return 1.0 if shorter <= 0 else min(shared / shorter, 1.0)


def start_offset(run: np.ndarray, reference: np.ndarray, time_base: str) -> tuple[str, float]:
    """The time base used and the offset it adds to the run's stamps (start: first to first)."""
    if time_base == "auto":
        time_base = (
            "absolute" if shared_fraction(run, reference) >= MIN_SHARED_FRACTION else "start"
        )
    if time_base == "start":
        return "start", float(reference.min() - run.min())
    return "absolute", 0.0


def _stream(poses: Any, where: str) -> PoseStream:
    if len(poses.stamps) < 2:
        raise DriftError(f"{where}: fewer than 2 poses; record the pose stream over the run")
    return PoseStream(poses.stamps, poses.positions, poses.quats)


def check_source(entry: BagEntry, source: PoseSource, flag: str) -> None:
    """DriftError unless the bag has the source's topic; it lists the bag's pose topics."""
    if any(topic.name == source.topic for topic in entry.info.topics):
        return
    poses = [f"{t.name} ({t.msgtype})" for t in entry.info.topics if t.msgtype in POSE_TYPES]
    raise DriftError(
        f"{entry.path}: has no topic {source.topic}; its pose topics are: "
        f"{', '.join(poses) or 'none'}. Pass {flag} with one of them (joint states are needed "
        "only with --urdf), or record a pose topic"
    )


def _read(
    entry: BagEntry, sources: dict[str, PoseSource], stamp_source: StampSource
) -> dict[str, PoseStream]:
    try:
        poses = read_poses(entry.path, sources, stamp_source=stamp_source)
    except DriftError:
        raise
    except DaptqError as error:
        raise DriftError(str(error)) from None
    return {
        name: _stream(poses[name], f"{entry.path}: {sources[name].describe()}") for name in poses
    }


def analyze_poses(
    runs: Sequence[str | Path],
    reference: str | Path | None,
    run_source: PoseSource,
    reference_source: PoseSource,
    *,
    association: AssociationSettings | None = None,
    settings: PoseErrorSettings | None = None,
    time_base: str = "auto",
    stamp_source: StampSource = "header",
    progress: Callable[[list[Any]], Iterable[Any]] = iter,
) -> PoseAnalysis:
    """Score each run bag's stream against its reference bag's (the same bag without one)."""
    association = association or AssociationSettings()
    settings = settings or PoseErrorSettings()
    jobs = []
    for run in runs:
        entries = find_bags(run)
        if reference is None:
            pairs = [(entry, entry) for entry in entries]
        else:
            pairs, _ = pair_entries(entries, find_bags(reference))
        jobs += [(run_name(run), r, ref) for r, ref in pairs]
    for _, run_entry, ref_entry in jobs:  # fail before any bag is decoded
        check_source(run_entry, run_source, "--run-topic")
        check_source(ref_entry, reference_source, "--reference-topic")
    comparisons = []
    for name, run_entry, ref_entry in progress(jobs):
        if run_entry.path == ref_entry.path:
            both = _read(
                run_entry, {"run": run_source, "reference": reference_source}, stamp_source
            )
            run_poses, ref_poses = both["run"], both["reference"]
        else:
            run_poses = _read(run_entry, {"run": run_source}, stamp_source)["run"]
            ref_poses = _read(ref_entry, {"reference": reference_source}, stamp_source)["reference"]
        base, shift = start_offset(run_poses.stamps, ref_poses.stamps, time_base)
        shifted = AssociationSettings(
            association.method,
            association.t_max_diff,
            association.offset + shift,
            association.max_gap,
        )
        where = f"{run_entry.path}: {run_source.describe()} against {ref_entry.path}: "
        try:
            paired, arrays = compare(run_poses, ref_poses, shifted, settings)
        except DriftError as error:
            raise DriftError(where + reference_source.describe() + f": {error}") from None
        comparisons.append(
            PoseComparison(
                name,
                run_entry.path,
                ref_entry.path,
                run_source.describe(),
                reference_source.describe(),
                base,
                paired,
                settings,
                **arrays,
            )
        )
    grouped: dict[str, dict[str, list[float]]] = {}
    for comparison in comparisons:
        metrics = grouped.setdefault(comparison.run, {})
        for metric in SUMMARY_METRICS:
            if np.isfinite(value := comparison.values[metric]):
                metrics.setdefault(metric, []).append(value)
    summaries = {
        run: {metric: summarize(values) for metric, values in metrics.items()}
        for run, metrics in grouped.items()
    }
    return PoseAnalysis(tuple(comparisons), summaries, association, settings)
