"""`daptq bench`: measured benchmarks (kernels now; deployment and control loop later)."""

from __future__ import annotations

import argparse
import json

from daptq_ros.errors import DaptqError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq bench`."""
    parser = subparsers.add_parser(
        "bench",
        help="measure latency, weight bytes and bandwidth use of the deployed kernels",
        description="Benchmarks that print measured numbers, each also as a ratio to FP32 "
        "measured in the same process. Set OMP_WAIT_POLICY=PASSIVE (the daptq command does).",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="benchmark a stack of Linear layers in every deployed format (required for now)",
    )
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[2048, 256],
        help="layer widths: a realistic VLA width and the default model's (default: 2048 256)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 64],
        help="batch sizes (rows of activations) to test (default: 1 64)",
    )
    parser.add_argument(
        "--layers", type=int, default=8, help="Linear layers in the stack (default: 8)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        help="formats to measure (default: all; an unknown name lists the valid ones); "
        "FP32 is always measured as the baseline",
    )
    parser.add_argument(
        "--repeats", type=int, default=30, help="timed calls per measurement (default: 30)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (default: 2)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON for scripts")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the selected benchmark and print its report."""
    if not args.kernels:
        raise DaptqError("choose a benchmark: --kernels (more arrive with later releases)")
    import torch

    from daptq_ros.quant.kernel_bench import VARIANTS, format_table, run_kernel_bench

    variants = args.variants or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise DaptqError(f"unknown variant '{unknown[0]}'; valid: {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    report = run_kernel_bench(
        args.widths, args.batches, args.layers, variants, args.warmup, args.repeats
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
