"""`daptq bench`: measured benchmarks of the deployed kernels and of whole deployed VLAs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daptq_ros.commands.eval import add_kernel_choice_argument
from daptq_ros.errors import DaptqError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq bench`."""
    parser = subparsers.add_parser(
        "bench",
        help="measure latency, weight bytes and bandwidth use of the deployed kernels",
        description="Benchmarks that print measured numbers, each also as a ratio to FP32 "
        "measured in the same process. The daptq command sets OMP_WAIT_POLICY=PASSIVE and "
        "GOMP_SPINCOUNT=10000 unless they are set (see daptq_ros/openmp.py).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--kernels",
        action="store_true",
        help="benchmark a stack of Linear layers in every deployed format",
    )
    which.add_argument(
        "--deploy",
        action="store_true",
        help="benchmark whole VLAs at deployment scale (~0.45 G parameters, random weights) in "
        "every variant: memory, load time, chunk / prefix / head latency, torch.compile, "
        "batch-1 roofline; writes docs/performance.md with --out",
    )
    deploy = parser.add_argument_group("--deploy options")
    deploy.add_argument(
        "--families",
        nargs="+",
        default=["pi0", "cogact"],
        choices=["pi0", "cogact"],
        help="VLA families to build (default: pi0 cogact)",
    )
    deploy.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="FAMILY=SIZE",
        help="size preset per family (default: pi0=smolvla, cogact=large; pi0=pi0 is ~3 G, "
        "pi0=pi0_siglip the released pi0 with its SigLIP tower, ~3.4 G)",
    )
    deploy.add_argument(
        "--runs", type=int, default=20, help="timed action chunks per variant (default: 20)"
    )
    add_kernel_choice_argument(deploy)
    deploy.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the variants run: cpu, or cuda on a GPU machine (bench/gpu_check.sh); "
        "with cuda the roofline columns give way to the peak GPU memory (default: cpu)",
    )
    deploy.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch"],
        choices=["torch", "openvino"],
        help="runtimes to measure each variant on: torch (this package's kernels) and openvino "
        "(the exported model; ratios against torch's FP32 / BF16) (default: torch)",
    )
    deploy.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the torch.compile measurements (they add ~30 s of compilation per variant)",
    )
    deploy.add_argument(
        "--out",
        type=Path,
        help="write the markdown report here (and its plot beside it), e.g. docs/performance.md",
    )
    deploy.add_argument(
        "--findings",
        type=Path,
        help="markdown appended to the report as its analysis (default with --out: "
        "<report name>_findings.md beside it, e.g. performance_findings.md, if it exists)",
    )
    kernels = parser.add_argument_group("--kernels options")
    kernels.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[2048, 256],
        help="layer widths: a realistic VLA width and the default model's (default: 2048 256)",
    )
    kernels.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 64],
        help="batch sizes (rows of activations) to test (default: 1 64)",
    )
    kernels.add_argument(
        "--layers", type=int, default=8, help="Linear layers in the stack (default: 8)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        help="formats (--kernels) or variants (--deploy: fp32 bf16 w8a16 w8a8 w4a16 daptq_topk "
        "daptq_budget) to measure (default: all; an unknown name lists the valid ones); "
        "FP32 is always the baseline of --kernels",
    )
    kernels.add_argument(
        "--repeats", type=int, default=30, help="timed calls per measurement (default: 30)"
    )
    kernels.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (default: 2)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON for scripts")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the selected benchmark and print its report."""
    if args.deploy:
        return run_deploy(args)
    if not args.kernels:
        raise DaptqError("choose a benchmark: --kernels or --deploy")
    import torch

    from daptq_ros.evidence.kernel_bench import VARIANTS, format_table, run_kernel_bench

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


def run_deploy(args: argparse.Namespace) -> int:
    """`daptq bench --deploy`: every variant of each family, then the table (and the report)."""
    import sys

    from daptq_ros.evidence.deploy_bench import VARIANTS, run_deploy_bench
    from daptq_ros.evidence.deploy_report import failed_rows, kernels_table, write_performance_doc

    sizes = {}
    for item in args.size:
        family, _, size = item.partition("=")
        if family not in ("pi0", "cogact") or not size:
            raise DaptqError(f"--size {item!r}: expected FAMILY=SIZE, e.g. pi0=smolvla")
        sizes[family] = size
    log = (lambda message: print(message, file=sys.stderr)) if args.json else print
    report = run_deploy_bench(
        args.families,
        args.variants or list(VARIANTS),
        args.runs,
        args.threads,
        not args.no_compile,
        sizes,
        progress=log,
        kernel_choice=args.kernel_choice,
        device=args.device,
        runtimes=tuple(args.runtimes),
    )
    if args.out:
        findings = args.findings or args.out.with_name(args.out.stem + "_findings.md")
        text = findings.read_text() if findings.is_file() else ""
        write_performance_doc(report, args.out, _deploy_command(args), text)
        log(f"report written to {args.out}")
    table = [*kernels_table(report["results"]), "", *failed_rows(report["failed"])]
    print(json.dumps(report, indent=2) if args.json else "\n".join(table).rstrip())
    return 0


def _deploy_command(args: argparse.Namespace) -> str:
    """The command line that regenerates a --deploy report, for the report itself."""
    parts = ["daptq bench --deploy", "--families", *args.families, "--runs", str(args.runs)]
    parts += [f"--size {item}" for item in args.size]
    if args.variants:
        parts += ["--variants", *args.variants]
    parts += ["--threads", str(args.threads), "--kernel-choice", args.kernel_choice]
    parts += ["--device", args.device] if args.device != "cpu" else []
    parts += ["--runtimes", *args.runtimes] if args.runtimes != ["torch"] else []
    parts += ["--no-compile"] if args.no_compile else []
    return " ".join([*parts, "--out", str(args.out)])
