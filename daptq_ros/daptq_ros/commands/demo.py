"""`daptq demo`: the main job: the default model at FP32 vs RTN W4 vs DA-PTQ, paired in sim."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daptq_ros.commands.eval import add_kernel_choice_argument
from daptq_ros.sim.tasks import DEFAULT_TASKS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job: default model at FP32 vs RTN W4 vs DA-PTQ, paired rollouts, drift",
        description="Load the embedded default model (or --model); collect a few scripted-"
        "expert demonstrations (seeds 0..) as calibration episodes; quantize it with DA-PTQ "
        "(budgeted allocation, GPTQ rounding, weight-only) at the average weight bits of RTN "
        "W4 (w4a16); roll out FP32, RTN W4 and DA-PTQ on the same held-out seeds with the "
        "deployed low-bit kernels; score each quantized rollout's end-effector deviation from "
        "the FP32 rollout of the same seed; time every config round-robin (BF16 as the speed "
        "reference); write DEMO_DIR/demo.md (table + deviation-over-time plot), demo.json and "
        "the drift report.",
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="model directory; default: the embedded default model of --family",
    )
    parser.add_argument(
        "--family",
        default="pi0",
        choices=("pi0", "cogact"),
        help="which embedded default model to load when --model is not given (default: pi0)",
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        default=[],
        metavar="BITS",
        help="extra RTN bit configs (presets or YAML files) rolled out besides RTN W4; FP32 "
        "and the BF16 speed reference are always in the table (default: none)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(DEFAULT_TASKS),
        help=f"tasks to roll out and calibrate on (default: {' '.join(DEFAULT_TASKS)})",
    )
    parser.add_argument(
        "--episodes", type=int, default=3, help="held-out episodes per task (default: 3)"
    )
    parser.add_argument(
        "--seed", type=int, default=100_000, help="first held-out seed (default: 100000)"
    )
    parser.add_argument(
        "--calib-episodes",
        type=int,
        default=2,
        help="calibration demonstrations collected per task, seeds 0.. (default: 2; "
        "unused with --calib)",
    )
    parser.add_argument(
        "--calib",
        metavar="DIR",
        help="existing calibration episode bags (searched recursively) instead of collecting",
    )
    parser.add_argument("--out", default="out/demo", help="DEMO_DIR (default: out/demo)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch intra-op threads of the quantization, rollouts and timing (default: 2)",
    )
    add_kernel_choice_argument(parser)
    parser.add_argument("--json", action="store_true", help="print demo.json instead of the table")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print each step's own output (collection and calibration reports, per-task "
        "success), on stderr; by default only the table and where the report is",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    import shutil

    import torch

    from daptq_ros.cli import run_quietly, run_silently
    from daptq_ros.errors import DaptqError
    from daptq_ros.evidence.demo import DemoConfig, format_table, run_demo
    from daptq_ros.policy.model_dir import default_model_dir

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if (out / "demo.json").is_file():
        shutil.rmtree(out)  # an earlier demo's output: a rerun replaces it
    elif out.exists() and any(out.iterdir()):
        raise DaptqError(f"{out} exists and is not a demo output; choose another --out")
    config = DemoConfig(
        model=Path(args.model) if args.model else default_model_dir(args.family),
        out=out,
        tasks=tuple(args.tasks),
        episodes=args.episodes,
        seed=args.seed,
        presets=tuple(args.presets),
        calib=Path(args.calib) if args.calib else None,
        calib_episodes=args.calib_episodes,
        kernel_choice=args.kernel_choice,
    )
    report = run_demo(config, run_quietly if args.verbose else run_silently)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
