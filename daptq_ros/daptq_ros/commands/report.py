"""`daptq report`: the results table of every quantization method on paired simulated episodes."""

from __future__ import annotations

import argparse
from pathlib import Path

FAMILIES = ("pi0", "cogact")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq report`."""
    from daptq_ros.commands.eval import add_parallel_arguments
    from daptq_ros.evidence.results_stats import METHODS

    parser = subparsers.add_parser(
        "report",
        help="the paper-style results table: every quantization method, paired episodes",
        description="For each model: quantize with every method (`daptq quantize` on the "
        "calibration bags), evaluate each on the same seeds (`daptq eval`), measure drift "
        "against the FP32 rollout of the same seed, and write OUT/results.md (table, comparison "
        "at 4.5 average weight bits, ablations as paired differences, drift curves and bit-map "
        "plots), OUT/results.json and a drift report per method under OUT/drift/. The "
        "quantizations run as Ray tasks and each evaluation's episodes on Ray workers (a local "
        "Ray by default, a cluster with --address; --workers 0: serially, no Ray). Finished "
        "steps are kept under WORK, so a re-run resumes.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="DIR",
        help="model directories (default: the embedded default of every family that has one)",
    )
    parser.add_argument(
        "--calib", nargs="+", required=True, metavar="BAGS", help="calibration episode bags"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        metavar="METHOD",
        help=f"methods to run (FP32 always runs), from: {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--tasks", nargs="+", metavar="TASK", help="sim tasks (default: the five default tasks)"
    )
    parser.add_argument(
        "--episodes", type=int, default=50, help="episodes per task and method (default: 50)"
    )
    parser.add_argument(
        "--seed", type=int, default=100_000, help="first evaluation seed (default: 100000)"
    )
    parser.add_argument("--bins", type=int, default=6, help="calibration bins (default: 6)")
    add_parallel_arguments(parser, "quantizations and episodes")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("out/daptq_table"),
        help="quantized models and runs, one folder per model (default: out/daptq_table)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs"), help="where results.md goes (default: docs)"
    )
    parser.add_argument("--note", default="", help="a remark printed under the title")
    parser.add_argument("--json", action="store_true", help="print results.json instead")
    return parser


def _serial_batch(commands: list[list[str]]) -> list[tuple[int, str]]:
    """Run commands one after the other here (their errors are printed as they happen)."""
    from daptq_ros.cli import run_quietly

    return [(run_quietly(command), "") for command in commands]


def run(args: argparse.Namespace) -> int:
    """Run every model's table and write the results."""
    from daptq_ros.cli import run_quietly
    from daptq_ros.commands.eval import resolve_parallel
    from daptq_ros.commands.fanout import ray_session, run_commands_on_ray
    from daptq_ros.commands.results_table import Steps, run_tables
    from daptq_ros.errors import DaptqError
    from daptq_ros.evidence.results_markdown import write_results
    from daptq_ros.evidence.results_stats import TableOptions
    from daptq_ros.policy.model_dir import default_model_dir

    resolve_parallel(args)
    if args.models:
        models = [Path(m) for m in args.models]
    else:
        models = []
        for family in FAMILIES:
            try:
                models.append(default_model_dir(family))
            except DaptqError:
                continue
        if not models:
            raise DaptqError("no embedded default model found; pass --models DIR")
    labels = [model.resolve().name for model in models]
    if len(set(labels)) != len(labels):
        raise DaptqError(f"model directories must have distinct names, got {labels}")
    options = TableOptions(
        calib=tuple(args.calib),
        methods=tuple(args.methods),
        tasks=tuple(args.tasks) if args.tasks else None,
        episodes=args.episodes,
        seed=args.seed,
        bins=args.bins,
        threads=args.threads,
        workers=args.workers,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    named = list(zip(models, labels, strict=True))
    if args.workers == 0:
        tables = run_tables(named, options, args.work, args.out, Steps(run_quietly, _serial_batch))
    else:
        with ray_session(args.workers, args.address) as ray:
            steps = Steps(
                run_quietly, lambda commands: run_commands_on_ray(ray, commands, "quantize")
            )
            tables = run_tables(named, options, args.work, args.out, steps)
    path = write_results(tables, options, args.out, args.note)
    if args.json:
        print((args.out / "results.json").read_text())
    else:
        print(path.read_text())
    return 0
