"""Benchmark: what inference latency does to the arm, per chunk method, on the sim (lockstep).

The policy node's logic drives the sim bridge without ROS (robot/lockstep.py), with inference
latency injected in sim time at fractions of the model's chunk duration. Prints, per method and
delay over the same (task, seed) episodes: success with its 95 % Wilson interval, active share,
stopped share, mean timeline rate, boundary jerk (at chunk switches over inside chunks) and
hand deviation from the zero-delay path of the same seed (evidence/latency_sweep.py defines
each).

    python bench/latency_sweep.py --episodes 3 --out docs/robot_latency.png
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import platform
import sys

import numpy as np

from daptq_ros.drift.stats import success_rate
from daptq_ros.evidence.latency_sweep import DELAYS, METHODS, sweep
from daptq_ros.robot.params import defaults
from daptq_ros.robot.policy_builder import default_policy_builder
from daptq_ros.robot.probe import probe

TASKS = ("reach", "push", "drawer-open", "button-press-topdown")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model directory ('default' = embedded)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="sim tasks")
    parser.add_argument("--episodes", type=int, default=2, help="seeds per task (from --seed)")
    parser.add_argument("--seed", type=int, default=100000, help="first seed")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=300,
        help="sim steps per episode: twice the tasks' own 150, so a slowed timeline is scored "
        "on what it does, not on the time it takes (mean rate shows that)",
    )
    parser.add_argument(
        "--delays", type=float, nargs="+", default=list(DELAYS), help="x the chunk duration"
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), help="chunk_method[:rtc_jacobian]"
    )
    parser.add_argument("--overrun", choices=("slow", "hold"), default="slow", help="overrun")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default="", help="write the curve (PNG) here")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    return parser.parse_args()


def main() -> int:
    """Run the sweep and print its table."""
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    params = {**defaults("policy_node"), "model": args.model, "num_threads": args.threads}
    policy = default_policy_builder(params)("fp32")
    timing, error = probe(policy, params)  # the node's start-up probe: the model's own size
    if error:
        print(error, file=sys.stderr)
        return 2
    span = timing.span
    episodes = [(task, args.seed + k) for task in args.tasks for k in range(args.episodes)]
    rows = sweep(
        policy,
        span,
        episodes,
        args.max_steps,
        args.delays,
        args.methods,
        args.overrun,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps([row.__dict__ for row in rows]))
        return 0
    cpu = platform.processor() or platform.machine()
    print(
        f"chunk {timing.horizon} x {timing.dt * 1e3:.1f} ms = {span:.3f} s; {cpu}; "
        f"{len(episodes)} episodes per cell, overrun {args.overrun}"
    )
    print(
        "| method | delay (x chunk) | success % [95 % CI] | active | stopped | mean rate | "
        "boundary jerk (x in-chunk) | hand dev. (mm) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        rate = success_rate(sum(row.success), len(row.success))
        low, high = rate.ci_low or 0.0, rate.ci_high or 0.0
        print(
            f"| {row.method} | {row.delay_fraction:g} | {100 * np.mean(row.success):.0f} "
            f"[{100 * low:.0f}, {100 * high:.0f}] | {np.nanmean(row.active):.2f} | "
            f"{np.nanmean(row.stopped):.2f} | {np.nanmean(row.mean_rate):.2f} | "
            f"{np.nanmean(row.jerk_ratio):.2f} | "
            f"{1e3 * np.nanmean(row.deviation):.1f} |"
        )
    if args.out:
        plot(rows, args.out)
        print(f"curve: {args.out}")
    return 0


def plot(rows, path: str) -> None:
    """Success, boundary jerk and mean rate against the delay, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for method in dict.fromkeys(row.method for row in rows):
        mine = [row for row in rows if row.method == method]
        delays = [row.delay_fraction for row in mine]
        axes[0].plot(delays, [100 * np.mean(r.success) for r in mine], "o-", label=method)
        axes[1].plot(delays, [np.nanmean(r.jerk_ratio) for r in mine], "o-", label=method)
        axes[2].plot(delays, [np.nanmean(r.mean_rate) for r in mine], "o-", label=method)
    for axis, title in zip(
        axes, ("success %", "boundary jerk / in-chunk jerk", "mean timeline rate"), strict=True
    ):
        axis.set_title(title)
        axis.set_xlabel("inference delay (x chunk duration)")
        axis.grid(alpha=0.3)
    axes[1].axhline(1.5, color="grey", linestyle=":")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
