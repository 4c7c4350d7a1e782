"""Offline drift analysis: pair run episodes with reference episodes from bags and score them.

A *run* is one `--run` path: a bag folder, or a folder whose sub-folders are bags (one bag per
episode). The *reference* is the same for the full-precision policy. Each bag becomes a drift
`Trajectory` (seconds since its first sample, which is kept as the episode's `origin`), run
episodes are paired with reference episodes, and each pair is put on one time base: the
recorded (header) stamps as they are, when both recordings cover the same time (two streams of
one robot run), or each re-zeroed at its first sample (separate rollouts). Every pair is scored
with `compute_metrics` (evo's APE and RPE included), and the episodes are grouped by bit
configuration into means with 95 % Student-t confidence intervals.
numpy, scipy, bags and drift only (pinocchio only when poses come from forward kinematics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from daptq_ros.bags import BagInfo, PoseTrajectory, bag_info, find_bag_dirs, read_trajectory
from daptq_ros.bags.episode import (
    EE_POSE_TOPIC,
    JOINT_STATES_TOPIC,
    META_BIT_CONFIG,
    META_EPISODE,
    META_SEED,
    META_TASK,
)
from daptq_ros.bags.trajectory import StampSource, TfChain, read_bit_configs
from daptq_ros.drift.metrics import (
    AlignedPair,
    Trajectory,
    TrajectoryMetrics,
    align,
    check_stamps,
    compute_metrics,
    interpolate_linear,
    interpolate_rotations,
)
from daptq_ros.drift.pose_errors import PoseErrorSettings
from daptq_ros.drift.rungs import RungSummary, summarize_rungs
from daptq_ros.drift.stats import Summary, summarize
from daptq_ros.errors import BagError, DaptqError, DriftError

if TYPE_CHECKING:
    from daptq_ros.drift.kinematics import Kinematics

# A run episode is paired with the reference episode of the same (task, seed, episode), read
# from the bag's custom_data (the Episode contract of bags.episode); runs group by bit config.
EPISODE_KEYS = (META_TASK, META_SEED, META_EPISODE)

DEFAULT_JOINT_TOPIC = JOINT_STATES_TOPIC
DEFAULT_EE_TOPIC = EE_POSE_TOPIC

# How a run episode's stamps meet its reference's: "absolute" = the recorded stamps as they
# are, "start" = each re-zeroed at its first sample, "auto" = absolute when the two recordings
# cover the same time, else start (see `choose_time_base`).
TimeBase = Literal["auto", "absolute", "start"]
TIME_BASES: tuple[str, ...] = get_args(TimeBase)
# auto takes the absolute time base when the recordings share at least this fraction of the
# shorter one's span: a brief, accidental overlap of recordings made one after another is not
# one run recorded twice.
MIN_SHARED_FRACTION = 0.5

# Metrics that are one number per episode (the per-joint tuples are aggregated per joint).
SCALAR_METRICS = (
    "ee_position_rmse",
    "ee_position_max_error",
    "ee_position_final_error",
    "ee_rotation_rmse",
    "cumulative_drift",
    "drift_growth_rate",
    "dtw_distance",
    "dtw_lag",
    "path_length_ratio",
    "ee_jerk_rms",
    "ape_translation_rmse",
    "ape_rotation_rmse",
    "rpe_translation_rmse",
    "rpe_rotation_rmse",
)
JOINT_METRICS = ("joint_rms_error", "joint_max_error", "joint_final_error")


@dataclass(frozen=True)
class Sources:
    """Where trajectories come from: the topics, and the kinematics for bags without poses.

    `tf_chain` (base, tool frames) is needed when `ee_topic` is a tf2_msgs/TFMessage topic.
    """

    joint_topic: str = DEFAULT_JOINT_TOPIC
    ee_topic: str = DEFAULT_EE_TOPIC
    kinematics: Kinematics | None = None
    stamp_source: StampSource = "header"
    tf_chain: TfChain | None = None


@dataclass(frozen=True)
class BagEntry:
    """A bag found on disk with its description (topics, custom_data); nothing decoded yet."""

    path: Path
    info: BagInfo

    @property
    def key(self) -> tuple[str, ...] | None:
        """(task, seed, episode) from the metadata, or None when any of them is missing."""
        meta = self.info.custom_data
        return (
            tuple(meta[k] for k in EPISODE_KEYS) if all(k in meta for k in EPISODE_KEYS) else None
        )


@dataclass(frozen=True)
class Episode:
    """One bag as a drift trajectory (stamps in s since its first sample, at `origin`)."""

    bag: Path
    trajectory: Trajectory
    ee_source: str  # "topic /ee_pose", "topic /tf (world -> tool0)", "fk tool0 (<urdf>)", "none"
    metadata: dict[str, str]
    origin: float = 0.0  # s: the recorded stamp (header or bag time) of the first sample
    bit_configs: tuple[tuple[float, str], ...] = ()  # (recorded stamp, bit config) of ~/status

    @property
    def end(self) -> float:
        """The recorded stamp of the last sample, s."""
        return self.origin + float(self.trajectory.stamps[-1])


@dataclass(frozen=True)
class TimeAlignment:
    """The time base a run episode was compared on against its reference, and why.

    start_offset_s: the run's first sample minus the reference's, on the recorded stamps. On
    the absolute base the run's stamps are shifted by it onto the reference's (times count
    from the reference's first sample); on the start base they are not.
    """

    base: str  # "absolute" or "start"
    reason: str
    start_offset_s: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {"base": self.base, "reason": self.reason, "start_offset_s": self.start_offset_s}

    def describe(self) -> str:
        """A short label: 'absolute (run +5 s)' or 'start'."""
        if self.base == "absolute":
            return f"absolute (run {self.start_offset_s:+.4g} s)"
        return "start"


@dataclass(frozen=True)
class EpisodeResult:
    """A scored pair: the run episode, its reference, the aligned samples and the metrics."""

    config: str
    paired_by: str  # "metadata" or "order"
    run: Episode
    reference: Episode
    pair: AlignedPair
    metrics: TrajectoryMetrics
    time: TimeAlignment
    rungs: RungSummary | None = None  # bit configs over time, when the run recorded ~/status

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of this episode."""
        return {
            "config": self.config,
            "paired_by": self.paired_by,
            "run_bag": str(self.run.bag),
            "reference_bag": str(self.reference.bag),
            "run_ee_source": self.run.ee_source,
            "reference_ee_source": self.reference.ee_source,
            "time_base": self.time.to_dict(),
            "metadata": dict(self.run.metadata),
            "metrics": self.metrics.to_dict(),
            "bit_configs": None if self.rungs is None else self.rungs.to_dict(),
        }


@dataclass(frozen=True)
class Analysis:
    """Everything `daptq drift` found: inputs, per-episode results, per-configuration summaries."""

    reference: Path
    runs: tuple[Path, ...]
    dtw_window_s: float
    episodes: tuple[EpisodeResult, ...]
    summaries: dict[str, dict[str, Summary]]
    time_base: str = "auto"  # as asked for; each episode's `time` says what was used
    pose_settings: PoseErrorSettings = field(default_factory=PoseErrorSettings)

    @property
    def configs(self) -> list[str]:
        """Bit configurations in the order they were first met."""
        return list(dict.fromkeys(result.config for result in self.episodes))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: inputs, every episode, and the summaries per configuration."""
        return {
            "reference": str(self.reference),
            "runs": [str(run) for run in self.runs],
            "dtw_window_s": self.dtw_window_s,
            "time_base": self.time_base,
            "pose_errors": self.pose_settings.to_dict(),
            "metadata_keys": {"pair_on": list(EPISODE_KEYS), "group_on": META_BIT_CONFIG},
            "episodes": [result.to_dict() for result in self.episodes],
            "configurations": {
                config: {name: s.to_dict() for name, s in summary.items()}
                for config, summary in self.summaries.items()
            },
        }


def find_bags(path: str | Path) -> list[BagEntry]:
    """The bags at `path`: the bag itself, or every bag folder below it, sorted by path."""
    return [BagEntry(folder, bag_info(folder)) for folder in find_bag_dirs(path)]


def load_kinematics(
    urdf: str, ee_frame: str | None, locked_joints: Sequence[str] | None = None
) -> Kinematics:
    """Kinematics of a named arm (panda, ur5, so101, xarm7) or of a URDF file and its ee frame.

    `locked_joints` are held at 0 (None: a named arm's gripper joints, a file's none).
    """
    from daptq_ros.drift.kinematics import ARMS, Kinematics  # pinocchio only when asked for

    if urdf in ARMS:
        return Kinematics.from_robot_name(urdf, ee_frame, locked_joints)
    if ee_frame is None:
        raise DriftError(
            f"{urdf}: a URDF file needs the end-effector frame; pass --ee-frame NAME "
            f"(or one of the arm names {', '.join(sorted(ARMS))})"
        )
    return Kinematics.from_urdf(urdf, ee_frame, locked_joints or ())


@contextmanager
def _naming(where: str) -> Iterator[None]:
    """Prefix a DriftError (or kinematics error) with the bag and topic it concerns."""
    try:
        yield
    except BagError:
        raise
    except DaptqError as error:
        raise DriftError(f"{where}: {error}") from None


def load_episode(entry: BagEntry, sources: Sources) -> Episode:
    """Read a bag's joints and poses (topic, else FK, else none) into a drift Trajectory."""
    has_ee = any(t.name == sources.ee_topic for t in entry.info.topics)
    recorded = read_trajectory(
        entry.path,
        sources.joint_topic,
        sources.ee_topic if has_ee else None,
        stamp_source=sources.stamp_source,
        tf_chain=sources.tf_chain,
    )
    joints = recorded.joints
    with _naming(f"{entry.path}: {sources.joint_topic}"):
        stamps = check_stamps(joints.stamps, "joint stamps")
    positions = quats = None
    ee_source = "none"
    if recorded.ee is not None:
        with _naming(f"{entry.path}: {sources.ee_topic}"):
            stamps, positions, quats = _resample_poses(stamps, recorded.ee)
        chain = f" ({' -> '.join(sources.tf_chain)})" if sources.tf_chain else ""
        ee_source = f"topic {sources.ee_topic}{chain}"
    elif (kin := sources.kinematics) is not None:
        with _naming(f"{entry.path}: {sources.joint_topic}"):
            positions, quats = kin.fk_batch(kin.q_from_joint_state(joints.names, joints.positions))
        ee_source = f"fk {kin.ee_frame} ({kin.source})"
    keep = np.isin(joints.stamps, stamps)
    with _naming(f"{entry.path}: {sources.joint_topic}"):
        trajectory = Trajectory(
            stamps - stamps[0], joints.positions[keep], joints.names, positions, quats
        )
    metadata = dict(entry.info.custom_data)
    rungs = tuple(read_bit_configs(entry.path))
    return Episode(entry.path, trajectory, ee_source, metadata, float(stamps[0]), rungs)


def _resample_poses(
    stamps: np.ndarray, ee: PoseTrajectory
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The joint stamps inside the pose stream's span, with the poses interpolated at them."""
    t_ee = check_stamps(ee.stamps, "pose stamps")
    inside = stamps[(stamps >= t_ee[0]) & (stamps <= t_ee[-1])]
    if len(inside) < 2 or len(t_ee) < 2:
        raise DriftError(
            "the joint states and the poses overlap in fewer than 2 samples; record both "
            "topics over the whole episode"
        )
    return (
        inside,
        interpolate_linear(t_ee, ee.positions, inside),
        interpolate_rotations(t_ee, ee.quats, inside),
    )


def pair_entries(
    runs: Sequence[BagEntry], references: Sequence[BagEntry]
) -> tuple[list[tuple[BagEntry, BagEntry]], str]:
    """Pair run bags with reference bags by (task, seed, episode) when all have it, else in order.

    Returns the pairs and "metadata" or "order". Order pairing needs equal counts.
    """
    if all(e.key is not None for e in [*runs, *references]):
        return _pair_by_metadata(runs, references), "metadata"
    if len(runs) != len(references):
        run_dir, ref_dir = runs[0].path.parent, references[0].path.parent
        raise DriftError(
            f"{run_dir}: {len(runs)} run episodes but {len(references)} reference episodes in "
            f"{ref_dir}; without the metadata {', '.join(EPISODE_KEYS)} on every bag, episodes "
            "are paired in sorted order and the counts must match"
        )
    return list(zip(runs, references, strict=True)), "order"


def _pair_by_metadata(
    runs: Sequence[BagEntry], references: Sequence[BagEntry]
) -> list[tuple[BagEntry, BagEntry]]:
    by_key: dict[tuple[str, ...] | None, BagEntry] = {}
    for ref in references:
        if (other := by_key.setdefault(ref.key, ref)) is not ref:
            raise DriftError(
                f"{ref.path} and {other.path}: two reference episodes with the same "
                f"{'/'.join(EPISODE_KEYS)} = {'/'.join(ref.key or ())}; keep one per episode"
            )
    pairs = []
    for run in runs:
        if run.key not in by_key:
            raise DriftError(
                f"{run.path}: no reference episode has its {'/'.join(EPISODE_KEYS)} = "
                f"{'/'.join(run.key or ())}; record that reference episode or drop the run"
            )
        pairs.append((run, by_key[run.key]))
    return pairs


def run_name(path: str | Path) -> str:
    """The name of a `--run` path: its folder's name (a bag's, or the folder of bags')."""
    run = Path(path).resolve()
    return (run.parent if run.is_file() else run).name


def config_name(entry: BagEntry, run: str) -> str:
    """The bit configuration of a run bag: its daptq.bit_config metadata, else the run's name."""
    return entry.info.custom_data.get(META_BIT_CONFIG) or run


def episode_values(metrics: TrajectoryMetrics) -> dict[str, float]:
    """The metrics of one episode as flat numbers: scalars, and 'joint_rms_error/<joint>' etc."""
    values = {
        name: float(v) for name in SCALAR_METRICS if (v := getattr(metrics, name)) is not None
    }
    names = metrics.joint_names
    for name in JOINT_METRICS:
        per_joint = getattr(metrics, name)
        if per_joint is not None:
            labels = names or [str(i) for i in range(len(per_joint))]
            values |= {f"{name}/{j}": float(v) for j, v in zip(labels, per_joint, strict=True)}
    return values


def aggregate(results: Iterable[EpisodeResult]) -> dict[str, dict[str, Summary]]:
    """Per configuration, each metric's Summary over the episodes that have it."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for result in results:
        metrics = grouped.setdefault(result.config, {})
        for name, value in episode_values(result.metrics).items():
            metrics.setdefault(name, []).append(value)
    return {
        config: {name: summarize(values) for name, values in metrics.items()}
        for config, metrics in grouped.items()
    }


def shared_fraction(run: Episode, reference: Episode) -> float:
    """How much of the shorter recording the two spans share on the recorded stamps, 0..1."""
    shared = min(run.end, reference.end) - max(run.origin, reference.origin)
    shorter = min(run.end - run.origin, reference.end - reference.origin)
    if shared < 0:
        return 0.0
    return 1.0 if shorter <= 0 else min(shared / shorter, 1.0)


def check_time_base(time_base: str) -> None:
    """DriftError unless `time_base` is one of TIME_BASES."""
    if time_base not in TIME_BASES:
        raise DriftError(
            f"time base {time_base!r}: unknown; pass one of {', '.join(TIME_BASES)} (--time-base)"
        )


def choose_time_base(
    run: Episode, reference: Episode, time_base: TimeBase = "auto", paired_by: str = "order"
) -> TimeAlignment:
    """The time base to compare `run` with `reference` on (see TimeBase), with its reason.

    auto: start for episodes paired by the daptq episode metadata (separate rollouts of a
    task); else absolute when the recordings share at least MIN_SHARED_FRACTION of the
    shorter one's span, else start. DriftError for absolute on recordings that do not overlap.
    """
    offset = run.origin - reference.origin
    shared = shared_fraction(run, reference)
    check_time_base(time_base)
    if time_base == "absolute" and shared == 0.0:
        raise DriftError(
            f"--time-base absolute: the run's stamps [{run.origin:.6f}, {run.end:.6f}] s and the "
            f"reference's [{reference.origin:.6f}, {reference.end:.6f}] s do not overlap "
            f"(the run starts {offset:+.6g} s after it); for recordings made at different "
            "times pass --time-base start (or auto)"
        )
    if time_base != "auto":
        return TimeAlignment(time_base, f"asked for (--time-base {time_base})", offset)
    if paired_by == "metadata":
        why = "auto: paired by episode metadata, so separate rollouts"
        return TimeAlignment("start", why, offset)
    if shared >= MIN_SHARED_FRACTION:
        why = f"auto: the recordings overlap ({shared:.0%} of the shorter one)"
        return TimeAlignment("absolute", why, offset)
    if shared == 0.0:
        return TimeAlignment("start", "auto: the recordings do not overlap in time", offset)
    why = f"auto: the recordings share only {shared:.0%} of the shorter one's time"
    return TimeAlignment("start", why, offset)


def on_time_base(run: Episode, time: TimeAlignment) -> Trajectory:
    """The run's trajectory with its stamps on the reference's clock for that time base."""
    if time.base != "absolute":
        return run.trajectory
    return replace(run.trajectory, stamps=run.trajectory.stamps + time.start_offset_s)


def score(
    config: str,
    paired_by: str,
    run: Episode,
    reference: Episode,
    *,
    joint_topic: str = DEFAULT_JOINT_TOPIC,
    dtw_window_s: float = 0.25,
    time_base: TimeBase = "auto",
    pose_settings: PoseErrorSettings | None = None,
) -> EpisodeResult:
    """All metrics of one run episode against its reference episode, on the chosen time base."""
    with _naming(f"{run.bag}: {joint_topic} against the reference {reference.bag}"):
        time = choose_time_base(run, reference, time_base, paired_by)
        executed = on_time_base(run, time)
        pair = align(executed, reference.trajectory)
        metrics = compute_metrics(
            executed,
            reference.trajectory,
            dtw_window_s=dtw_window_s,
            pose_settings=pose_settings,
        )
    return EpisodeResult(
        config, paired_by, run, reference, pair, metrics, time, rungs_of(run, pair, time)
    )


def rungs_of(run: Episode, pair: AlignedPair, time: TimeAlignment) -> RungSummary | None:
    """The run's bit configs over time (its ~/status) and the drift around each switch."""
    if not run.bit_configs:
        return None
    shift = time.start_offset_s if time.base == "absolute" else 0.0
    stamps = run.origin + pair.stamps - shift  # back on the run's recorded clock
    if pair.exec_positions is not None and pair.ref_positions is not None:
        deviation = np.linalg.norm(pair.exec_positions - pair.ref_positions, axis=1)
    else:
        deviation = np.linalg.norm(pair.exec_joints - pair.ref_joints, axis=1)
    return summarize_rungs(run.bit_configs, run.origin, run.end, stamps, deviation)


def analyze(
    runs: Sequence[str | Path],
    reference: str | Path,
    sources: Sources | None = None,
    *,
    dtw_window_s: float = 0.25,
    time_base: TimeBase = "auto",
    pose_settings: PoseErrorSettings | None = None,
    progress: Callable[[list[Any]], Iterable[Any]] = iter,
) -> Analysis:
    """Load, pair and score every run episode against the reference; summarise per config.

    `time_base` puts each pair on one clock (see TimeBase); `pose_settings` are evo's APE and
    RPE options. `progress` wraps the list of episode pairs (e.g. tqdm) while they are read
    and scored.
    """
    sources = sources or Sources()
    pose_settings = pose_settings or PoseErrorSettings()
    check_time_base(time_base)
    references = find_bags(reference)
    jobs = []
    for run in runs:
        entries = find_bags(run)
        for entry in [*entries, *references]:  # fail before any bag is decoded
            entry.info.topic(sources.joint_topic)
        pairs, paired_by = pair_entries(entries, references)
        jobs += [(config_name(r, run_name(run)), paired_by, r, ref) for r, ref in pairs]
    loaded: dict[Path, Episode] = {}

    def episode(entry: BagEntry) -> Episode:
        if entry.path not in loaded:
            loaded[entry.path] = load_episode(entry, sources)
        return loaded[entry.path]

    results = tuple(
        score(
            config,
            paired_by,
            episode(r),
            episode(ref),
            joint_topic=sources.joint_topic,
            dtw_window_s=dtw_window_s,
            time_base=time_base,
            pose_settings=pose_settings,
        )
        for config, paired_by, r, ref in progress(jobs)
    )
    runs_read = tuple(Path(r) for r in runs)
    summaries = aggregate(results)
    return Analysis(
        Path(reference), runs_read, dtw_window_s, results, summaries, time_base, pose_settings
    )
