"""`daptq demo`: the main job: the default model at FP32 vs RTN W8A8 / W4, paired in sim."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daptq_ros.commands.eval import add_kernel_choice_argument

DEFAULT_PRESETS = ("w8a8", "w4a16")
DEFAULT_DEMO_TASKS = ("reach", "drawer-open", "button-press-topdown", "push", "pick-place")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job: default model at FP32 vs quantized, paired rollouts, drift, report",
        description="Load the embedded default model (or --model), roll it out at FP32 and "
        "under each bit config on the same held-out seeds with the deployed low-bit kernels, "
        "measure each quantized rollout's end-effector deviation from the FP32 rollout of the "
        "same seed, time every config round-robin (BF16 as the speed reference), and write "
        "DEMO_DIR/demo.md (table + paths plot) and the drift report.",
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
        default=list(DEFAULT_PRESETS),
        help="bit configs (RTN presets or YAML files) compared to FP32 (default: w8a8 w4a16)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(DEFAULT_DEMO_TASKS),
        help="tasks to roll out (default: the five default tasks)",
    )
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task (default: 2)")
    parser.add_argument(
        "--seed", type=int, default=100_000, help="first held-out seed (default: 100000)"
    )
    parser.add_argument("--out", default="out/demo", help="DEMO_DIR (default: out/demo)")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (default: 2)"
    )
    add_kernel_choice_argument(parser)
    parser.add_argument("--json", action="store_true", help="print demo.json instead of the table")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    import shutil

    import torch

    from daptq_ros.demo import format_table, run_demo
    from daptq_ros.errors import DaptqError
    from daptq_ros.policy.model_dir import default_model_dir

    torch.set_num_threads(args.threads)
    model = Path(args.model) if args.model else default_model_dir(args.family)
    out = Path(args.out)
    if (out / "demo.json").is_file():
        shutil.rmtree(out)  # an earlier demo's output: a rerun replaces it
    elif out.exists() and any(out.iterdir()):
        raise DaptqError(f"{out} exists and is not a demo output; choose another --out")
    report = run_demo(
        model, list(args.presets), args.tasks, args.episodes, args.seed, out, args.kernel_choice
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
