"""`daptq eval`: closed-loop success of a policy in the simulator, full precision or quantized."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from daptq_ros.errors import DaptqError

MODES = ("deployed", "simulated")


def add_kernel_choice_argument(parser: argparse.ArgumentParser) -> None:
    """`--kernel-choice`, shared by the commands that deploy a model."""
    parser.add_argument(
        "--kernel-choice",
        choices=("auto", "packed", "fastest"),
        default="auto",
        help="how each deployed layer's kernel is picked, by timing the candidates on this CPU "
        "for the rows the layer sees (cached per CPU and torch version): auto = packed low-bit "
        "weights unless slower than bf16 there, packed = always packed (least memory), "
        "fastest = fastest whatever the memory; every choice computes the same bit config "
        "(default: %(default)s)",
    )


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    """`--runtime`, shared by the commands that run a quantized model."""
    from daptq_ros.policy.quantize import RUNTIMES

    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        help="torch: this package's kernels (the reference); openvino: the OpenVINO model that "
        "`daptq quantize --runtime openvino` exported into the directory (with --mode "
        "simulated: its activation arithmetic) (default: %(default)s)",
    )


def add_parallel_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """`--workers`, `--address`, `--threads`: shared by `daptq eval` and `daptq report`."""
    parser.add_argument(
        "--workers",
        type=int,
        help=f"run the {what} on this many Ray workers, one CPU each (results do not depend on "
        "the count); 0 = serial in this process, as without Ray installed (default: the cores "
        "of this machine, or serial without Ray)",
    )
    parser.add_argument(
        "--address",
        metavar="auto|HOST:PORT",
        help="join this running Ray cluster instead of starting a local one (folders written "
        "must be on storage every node sees)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads of each worker (serial: of this process) (default: the "
        "cores divided among the workers)",
    )


def resolve_parallel(args: argparse.Namespace) -> None:
    """Fill in the `add_parallel_arguments` defaults: workers and threads, checked."""
    from daptq_ros.commands.fanout import available_cores, ray_available

    cores = available_cores()
    if args.workers is None:
        args.workers = cores if ray_available() else 0
    elif args.workers < 0:
        raise DaptqError(f"--workers {args.workers}: pass 0 (serial) or more workers")
    elif args.workers > 0 and not ray_available():
        print("Ray is not installed: running serially (pip install ray)", file=sys.stderr)
        args.workers = 0
    if args.address and args.workers == 0:
        raise DaptqError("--address joins a Ray cluster: pass --workers N (N > 0) too")
    if args.threads is None:
        args.threads = max(1, cores // max(1, args.workers))
    elif args.threads < 1:
        raise DaptqError(f"--threads {args.threads}: pass 1 or more")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq eval`."""
    from daptq_ros.sim.tasks import DEFAULT_EVAL_SEED, DEFAULT_TASKS, TASKS

    parser = subparsers.add_parser(
        "eval",
        help="closed-loop evaluation of a policy in the simulator (success, bags, latency)",
        description="Roll the policy out on each task for seeds SEED..SEED+N-1 (the same seeds "
        "give the same scenes for every model, so runs of different bit configs are paired), "
        "write one episode bag per rollout under RUN_DIR/<task>/, and report success per task "
        "with 95 % Wilson intervals and the inference latency per action chunk.",
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="model directory to load")
    parser.add_argument(
        "--bits",
        metavar="CONFIG",
        help="bit config (preset name or YAML) to quantize the model with; default: full precision",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="deployed",
        help="with --bits: run packed low-bit kernels (deployed) or exact fake-quant arithmetic "
        "(simulated) (default: %(default)s)",
    )
    add_kernel_choice_argument(parser)
    add_runtime_argument(parser)
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(DEFAULT_TASKS),
        choices=list(TASKS),
        metavar="TASK",
        help=f"tasks to evaluate, from: {', '.join(TASKS)} (default: the five default tasks)",
    )
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task (default: 10)")
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_EVAL_SEED,
        help="first seed; held out from demonstrations by default (default: %(default)s)",
    )
    parser.add_argument(
        "--execute-steps",
        type=int,
        default=4,
        help="actions of each predicted chunk executed before predicting again (default: 4)",
    )
    parser.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="folder for bags and eval.json"
    )
    add_parallel_arguments(parser, "episodes")
    parser.add_argument(
        "--record",
        action="store_true",
        help="full precision only: write the measured success (per task, overall, seeds, "
        "episodes) and latency into the model directory's manifest (daptq.json), as the "
        "embedded default models carry it",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Load (and quantize) the policy, evaluate it, print the table or JSON."""
    import torch

    from daptq_ros.commands.fanout import PolicySpec, evaluate_on_ray
    from daptq_ros.policy.model_dir import record_evaluation
    from daptq_ros.policy.quantize import FULL_PRECISION, load_policy_with_bits
    from daptq_ros.quant import weight_bytes
    from daptq_ros.sim.evaluate import SUMMARY_FILE, EvalConfig, evaluate, format_summary

    resolve_parallel(args)
    if args.record and args.bits:
        raise DaptqError(
            "--record writes a full-precision evaluation into the model's manifest; "
            "drop --bits (or --record)"
        )
    torch.set_num_threads(args.threads)
    policy, label = load_policy_with_bits(
        args.model,
        args.bits or FULL_PRECISION,
        deployed=args.mode == "deployed",
        kernel_choice=args.kernel_choice,
        runtime=args.runtime,
    )
    bit_config = "" if label == FULL_PRECISION else label
    config = EvalConfig(
        out=Path(args.out),
        tasks=tuple(args.tasks),
        episodes=args.episodes,
        seed=args.seed,
        image_size=policy.loaded.meta.image_size[0],
        control=policy.loaded.meta.action_space,
        state=policy.loaded.meta.state_spec,
        execute_steps=args.execute_steps,
        model=str(args.model),
        bit_config=bit_config,
    )
    if args.workers > 0:
        spec = PolicySpec(
            model=str(args.model),
            bits=args.bits or FULL_PRECISION,
            deployed=args.mode == "deployed",
            kernels_by_layer={
                n: c.kernel for n, c in getattr(policy, "kernel_choices", {}).items()
            },
            threads=args.threads,
            runtime=args.runtime,
        )
        summary = evaluate_on_ray(spec, config, args.workers, args.address)
    else:
        summary = evaluate(policy, config)
    summary["weight_bytes"] = getattr(policy, "weight_bytes", None) or weight_bytes(policy.model)
    (Path(args.out) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if args.record:
        record_evaluation(args.model, manifest_metrics(summary, args))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def manifest_metrics(summary: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What `--record` writes into the manifest: the command, seeds, success and latency."""
    last_seed = args.seed + args.episodes - 1
    command = f"daptq eval --model {args.model} --episodes {args.episodes} --seed {args.seed}"
    command += f" --tasks {' '.join(args.tasks)} --threads {args.threads}"
    return {
        "eval_command": command,
        "seeds": [args.seed, last_seed],
        "per_task": summary["per_task"],
        "overall": summary["overall"],
        f"inference_ms_p50_{args.threads}_thread": summary["inference_ms"]["p50"],
    }
