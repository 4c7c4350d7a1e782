"""`daptq drift`: kinematic drift of recorded runs against a reference, as a report with plots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daptq_ros.drift.analysis import Sources
    from daptq_ros.drift.pose_errors import PoseErrorSettings


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq drift`."""
    parser = subparsers.add_parser(
        "drift",
        help="compare recorded runs with a reference run: drift metrics, plots, report",
        description="Read rosbag2 episodes (MCAP or sqlite3) of one or more runs (e.g. quantized "
        "policies) and of a reference (e.g. the full-precision policy), pair the episodes, "
        "compute joint and end-effector errors, cumulative drift, DTW distance and lag, "
        "path-length ratio, jerk, and evo's APE and RPE (translation in m, rotation in deg), and "
        "write report.md, metrics.json and PNG plots. Episodes "
        "are paired by the bag metadata daptq.task/daptq.seed/daptq.episode when every bag has "
        "it, else in sorted order; runs are grouped by the metadata daptq.bit_config, else by "
        "the run folder's name.",
    )
    parser.add_argument(
        "--run",
        nargs="+",
        required=True,
        metavar="BAG_OR_DIR",
        help="one or more runs: each a bag folder (or its .mcap/.db3 file), or a folder "
        "holding one bag folder per episode",
    )
    parser.add_argument(
        "--reference",
        metavar="BAG_OR_DIR",
        help="the reference episodes: a bag folder or a folder of bag folders (default, with "
        "--reference-topic or --reference-tf-chain: each run bag itself)",
    )
    parser.add_argument(
        "--run-topic",
        metavar="TOPIC",
        help="compare poses only (no joint states needed): the run's pose topic, "
        "geometry_msgs/PoseStamped, PoseWithCovarianceStamped or TransformStamped, "
        "nav_msgs/Odometry, or /tf with --run-tf-chain (default: --ee-topic)",
    )
    parser.add_argument(
        "--reference-topic",
        metavar="TOPIC",
        help="compare poses only: the reference's pose topic, e.g. a localisation or "
        "motion-capture topic in the run's own bag (default: --ee-topic)",
    )
    for side in ("run", "reference"):
        parser.add_argument(
            f"--{side}-tf-chain",
            nargs=2,
            metavar=("BASE", "TOOL"),
            help=f"compare poses only: the {side}'s pose is frame TOOL in frame BASE, looked up "
            "in /tf (and /tf_static) as tf2 does, each transform interpolated at the stamps of "
            "the chain's busiest moving transform",
        )
    parser.add_argument(
        "--association",
        choices=("nearest", "interpolate"),
        default="nearest",
        help="pose-only: how run and reference poses are paired in time: nearest = the "
        "nearest stamp within --t-max-diff, unpaired poses dropped (evo's default); interpolate "
        "= the denser stream interpolated at the paired stamps, never across --max-gap "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--t-max-diff",
        type=float,
        default=0.01,
        metavar="S",
        help="pose-only: the most two paired stamps may differ (evo's default) (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--offset",
        type=float,
        default=0.0,
        metavar="S",
        help="pose-only: seconds added to the run's stamps before pairing (default: %(default)s)",
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        default=2.0,
        metavar="S",
        help="pose-only: an interval longer than this between two poses of a stream is a gap: "
        "counted in the report, never interpolated across (default: %(default)s)",
    )
    parser.add_argument(
        "--urdf",
        metavar="PATH_OR_ARM_NAME",
        help="compute end-effector poses by forward kinematics for bags without the pose topic: "
        "a URDF file (needs --ee-frame) or an arm name (panda, ur5, so101, xarm7); without "
        "it such bags give joint-space metrics only",
    )
    parser.add_argument(
        "--ee-frame",
        metavar="NAME",
        help="the URDF frame to treat as the end effector (default for a named arm: its tool "
        "frame, e.g. panda_hand_tcp)",
    )
    parser.add_argument(
        "--locked-joints",
        nargs="+",
        metavar="NAME",
        help="URDF joints to hold at 0 for forward kinematics, e.g. the fingers of a full-arm "
        "URDF whose joint states name the arm joints only (default for a named arm: its "
        "gripper joints; for a URDF file: none)",
    )
    parser.add_argument(
        "--joint-topic",
        default="/joint_states",
        metavar="TOPIC",
        help="sensor_msgs/JointState topic every bag must have (default: %(default)s)",
    )
    parser.add_argument(
        "--ee-topic",
        metavar="TOPIC",
        help="end-effector pose topic, used in the bags that have it: geometry_msgs/PoseStamped, "
        "PoseWithCovarianceStamped or TransformStamped, nav_msgs/Odometry, or tf2_msgs/"
        "TFMessage with --tf-chain (default: /ee_pose, or /tf with --tf-chain)",
    )
    parser.add_argument(
        "--tf-chain",
        nargs=2,
        metavar=("BASE", "TOOL"),
        help="take the end-effector pose from /tf: the transforms composed from frame BASE to "
        "frame TOOL along the tf tree (static ones from /tf_static when the bag has it)",
    )
    parser.add_argument(
        "--dtw-window",
        type=float,
        default=0.25,
        metavar="S",
        help="half-width in seconds of the DTW band; lags longer than this are not recovered "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--stamp-source",
        choices=("header", "bag"),
        default="header",
        help="time of each sample: the message header stamp (when it was measured) or the "
        "bag's record time (for publishers that leave header stamps at zero) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--time-base",
        choices=("auto", "absolute", "start"),
        default="auto",
        help="how run and reference stamps meet: absolute = the recorded stamps as they are "
        "(two streams of one robot run), start = each episode re-zeroed at its first sample "
        "(recordings made at different times, e.g. two rollouts of a task); auto = start for "
        "episodes paired by daptq episode metadata, else absolute when the recordings cover "
        "the same time (at least half of the shorter one), else start (default: %(default)s)",
    )
    parser.add_argument(
        "--align",
        choices=("none", "se3", "sim3"),
        default="none",
        help="for APE and RPE, align the run's end-effector poses onto the reference's first "
        "(Umeyama, on the time-associated positions): se3 = rotation and translation, sim3 = "
        "and scale; none suits arms, whose base frame is shared and where alignment would "
        "hide drift (default: %(default)s)",
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=1.0,
        metavar="N",
        help="RPE compares poses this far apart, in --delta-unit (default: %(default)s)",
    )
    parser.add_argument(
        "--delta-unit",
        choices=("frames", "m"),
        default="frames",
        help="unit of --delta: run samples, or metres travelled along the run's path "
        "(consecutive segments, as evo's default) (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="REPORT_DIR",
        help="folder to write report.md, metrics.json and the PNG plots into (created)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print metrics.json (every episode and the per-configuration summaries) instead "
        "of the summary table",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Analyse the runs, write the report, print a summary (or JSON)."""
    # Imported here: numpy, scipy and matplotlib would slow down every `daptq --help`.
    from tqdm import tqdm

    from daptq_ros.drift.pose_errors import PoseErrorSettings
    from daptq_ros.errors import DriftError

    if not args.dtw_window > 0:
        raise DriftError(f"--dtw-window {args.dtw_window}: need a number of seconds > 0")
    pose_settings = PoseErrorSettings(args.align, args.delta, args.delta_unit)
    if poses_only(args):
        return _run_poses(args, pose_settings)
    if args.reference is None:
        raise DriftError(
            "--reference: pass the reference episodes, or --reference-topic TOPIC to compare "
            "with another pose stream of the run's own bags"
        )
    from daptq_ros.drift.analysis import analyze
    from daptq_ros.evidence.drift_report import summary_table, write_report

    analysis = analyze(
        args.run,
        args.reference,
        _sources(args),
        dtw_window_s=args.dtw_window,
        time_base=args.time_base,
        pose_settings=pose_settings,
        # disable=None: no bar when stderr is not a terminal (logs, CI, --json pipes).
        progress=lambda jobs: tqdm(jobs, desc="episodes", unit="ep", disable=None),
    )
    return _print(write_report(analysis, args.out), summary_table(analysis), args.json)


def poses_only(args: argparse.Namespace) -> bool:
    """Compare pose streams alone: a side's source was named, or the bags hold no joint states.

    Joint states are needed only for forward kinematics (--urdf).
    """
    from daptq_ros.drift.analysis import find_bags

    if args.run_topic or args.reference_topic or args.run_tf_chain or args.reference_tf_chain:
        return True
    if args.urdf is not None or args.locked_joints:
        return False
    first = find_bags(args.run[0])[0]
    return all(topic.name != args.joint_topic for topic in first.info.topics)


def _run_poses(args: argparse.Namespace, pose_settings: PoseErrorSettings) -> int:
    """`daptq drift` on pose streams: evo's association, APE and RPE, the pose report."""
    from tqdm import tqdm

    from daptq_ros.bags.trajectory import PoseSource
    from daptq_ros.drift.association import AssociationSettings
    from daptq_ros.drift.pose_drift import analyze_poses
    from daptq_ros.errors import DriftError
    from daptq_ros.evidence.pose_report import summary_table, write_pose_report

    if args.urdf is not None or args.locked_joints:
        raise DriftError(
            "--urdf and --locked-joints compute poses from joint states; drop them to compare "
            "pose streams (--run-topic, --reference-topic, --*-tf-chain)"
        )
    default_chain = tuple(args.tf_chain) if args.tf_chain else None
    sources = []
    for topic, chain in (
        (args.run_topic, args.run_tf_chain),
        (args.reference_topic, args.reference_tf_chain),
    ):
        chain = tuple(chain) if chain else default_chain
        sources.append(
            PoseSource(topic or args.ee_topic or ("/tf" if chain else "/ee_pose"), chain)
        )
    if args.reference is None and sources[0] == sources[1]:
        raise DriftError(
            f"run and reference are both {sources[0].describe()} of the same bags; pass "
            "--reference BAG_OR_DIR, or --reference-topic (or --reference-tf-chain) for the "
            "reference's stream"
        )
    association = AssociationSettings(args.association, args.t_max_diff, args.offset, args.max_gap)
    analysis = analyze_poses(
        args.run,
        args.reference,
        sources[0],
        sources[1],
        association=association,
        settings=pose_settings,
        time_base=args.time_base,
        stamp_source=args.stamp_source,
        progress=lambda jobs: tqdm(jobs, desc="bags", unit="bag", disable=None),
    )
    return _print(write_pose_report(analysis, args.out), summary_table(analysis), args.json)


def _print(files: list[Path], table: str, as_json: bool) -> int:
    """metrics.json (files[1]) with --json, else the summary table and where report.md is."""
    if as_json:
        print(files[1].read_text(), end="")
    else:
        print(table)
        print(f"\nreport: {files[0]}")
    return 0


def _sources(args: argparse.Namespace) -> Sources:
    """The topics, the kinematics (with its locked joints) and the tf chain the options name."""
    from daptq_ros.drift.analysis import Sources, load_kinematics
    from daptq_ros.errors import DriftError

    if args.locked_joints and args.urdf is None:
        raise DriftError("--locked-joints: only used for forward kinematics; pass --urdf too")
    kinematics = None
    if args.urdf is not None:
        kinematics = load_kinematics(args.urdf, args.ee_frame, args.locked_joints)
    tf_chain = None if args.tf_chain is None else (args.tf_chain[0], args.tf_chain[1])
    ee_topic = args.ee_topic or ("/tf" if tf_chain else "/ee_pose")
    return Sources(args.joint_topic, ee_topic, kinematics, args.stamp_source, tf_chain)
