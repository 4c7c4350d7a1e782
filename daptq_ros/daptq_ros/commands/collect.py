"""`daptq collect`: record scripted-expert demonstrations in the simulator as episode bags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from daptq_ros.sim.tasks import DEFAULT_TASKS, TASKS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq collect`."""
    parser = subparsers.add_parser(
        "collect",
        help="record scripted-expert demonstrations in the MetaWorld simulator as episode bags",
        description="Run MetaWorld's scripted expert on each task for seeds SEED .. "
        "SEED+N-1 and write every episode as a rosbag2 (MCAP) with the topics a real arm "
        "records, under OUT/<task>/<task>_seed<k>/, plus OUT/summary.json with the success "
        "rate per task. The same (task, seed) always starts from the same scene.",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=list(TASKS),
        default=list(DEFAULT_TASKS),
        metavar="TASK",
        help=f"tasks to record, from: {', '.join(TASKS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--episodes",
        type=_positive,
        default=10,
        help="episodes per task, one per seed (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="first seed; episode k of each task uses seed SEED+k (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the episode bags and summary.json"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=96,
        help="side S of each camera view in px; the image is S x 2S (default: %(default)s)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="std of Gaussian noise added to the executed action (DART); the recorded label "
        "stays the clean expert action (default: %(default)s, no noise)",
    )
    parser.add_argument(
        "--control",
        default="ee_delta",
        choices=("ee_delta", "joint_position", "joint_delta"),
        help="the recorded actions: hand displacements (MetaWorld's), or targets of the seven "
        "arm joints (rad), or their change per step, and the gripper effort; the expert's "
        "displacement is taken to the joints by one least-squares step (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes recording in parallel, each with its own simulator (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object for scripts"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Collect the demonstrations and print the per-task summary (or JSON)."""
    # Imported here: MuJoCo and MetaWorld load only when the simulator is needed.
    from daptq_ros.sim.collect import CollectConfig, collect

    config = CollectConfig(
        out=args.out,
        tasks=tuple(args.tasks),
        episodes=args.episodes,
        seed=args.seed,
        image_size=args.image_size,
        noise=args.noise,
        workers=args.workers,
        control=args.control,
    )
    summary = collect(config)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """Per-task success table plus totals."""
    rows = [("task", "success", "rate", "mean steps")]
    for task, stats in summary["per_task"].items():
        rows.append(
            (
                task,
                f"{stats['successes']}/{stats['episodes']}",
                f"{100 * stats['success_rate']:.0f} %",
                f"{stats['mean_steps']:.1f}",
            )
        )
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  {r[1]:>7}  {r[2]:>5}  {r[3]:>10}" for r in rows]
    lines += [
        "",
        f"episodes in {summary['out']} ({summary['steps']} steps, {summary['wall_s']} s; "
        f"{summary['ms_per_step']} ms per step per worker)",
    ]
    return "\n".join(lines)


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value
