"""Benchmark: the drift guard's ladder against fixed bits, on the sim, with paired intervals.

A low-bit config run four ways over the same (task, seed) episodes through the policy node's
logic in lockstep (evidence/drift_guard.py): fixed low bits, the precision ladder with an FP32
shadow, the ladder's top rung fixed, and FP32 (each seed's reference hand path). Prints per way:
success with its 95 % Wilson interval, hand deviation from FP32 (mm, mean and 95 % interval),
average weight bits, the share of steps on each bit config; and, paired by seed, the ladder's
drift against fixed low bits and its success against the fixed top rung.

    python bench/drift_guard.py --ladder w3a8 w4a8 w8a8 --episodes 6
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys

import numpy as np
import torch

from daptq_ros.drift.stats import success_rate, summarize
from daptq_ros.evidence.demo import rtn_bits_of
from daptq_ros.evidence.drift_guard import WAYS, GuardSettings, cached_builder, compare
from daptq_ros.policy.model_dir import default_model_dir, load_model_dir
from daptq_ros.policy.quantize import FULL_PRECISION, load_policy_with_bits
from daptq_ros.quant.kernel_choice import cpu_model

TASKS = ("reach", "push", "drawer-open", "button-press-topdown")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model directory ('default' = embedded)")
    parser.add_argument(
        "--ladder", nargs="+", default=["w3a8", "w4a8", "w8a8"], help="rungs, lowest bits first"
    )
    parser.add_argument("--shadow", default=FULL_PRECISION, help="the shadow's bit config")
    parser.add_argument("--up-m", type=float, default=0.005, help="ladder_up_m, m")
    parser.add_argument("--down-m", type=float, default=0.0015, help="ladder_down_m, m")
    parser.add_argument("--up-count", type=int, default=1, help="ladder_up_count")
    parser.add_argument("--down-count", type=int, default=6, help="ladder_down_count")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="sim tasks")
    parser.add_argument("--episodes", type=int, default=3, help="seeds per task (from --seed)")
    parser.add_argument("--seed", type=int, default=100000, help="first seed")
    parser.add_argument("--max-steps", type=int, default=300, help="sim steps per episode")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    return parser.parse_args()


def bound(value: float | None) -> float:
    """An interval bound for printing: NaN when there is none (0.0 is a bound, not "none")."""
    return float("nan") if value is None else value


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    model = str(default_model_dir("pi0")) if args.model == "default" else args.model
    build = cached_builder(lambda bits: load_policy_with_bits(model, bits)[0])
    torch_model = load_model_dir(model).model
    bits = {FULL_PRECISION: 32.0, "bf16": 16.0}

    def bits_of(config: str) -> float:
        if config not in bits:
            bits[config] = rtn_bits_of(torch_model, config)
        return bits[config]

    settings = GuardSettings(
        tuple(args.ladder), args.shadow, args.up_m, args.down_m, args.up_count, args.down_count
    )
    episodes = [(t, args.seed + k) for t in args.tasks for k in range(args.episodes)]
    rows = compare(
        build,
        settings,
        bits_of,
        episodes,
        args.max_steps,
        progress=lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    print(
        f"{'way':<10} {'success':>16} {'dev. mm [95 % CI]':>22} {'bits':>6}  steps per bit config"
    )
    for r in rows:
        s = success_rate(sum(r.success), len(r.success))
        d = summarize(np.array(r.deviation_m) * 1e3)
        interval = "" if d.ci_low is None else f" [{d.ci_low:.2f}, {d.ci_high:.2f}]"
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r.rung_share.items())
        print(
            f"{r.way:<10} {sum(r.success):>3}/{len(r.success)} [{s.ci_low:.0%}, {s.ci_high:.0%}] "
            f"{d.mean:>7.2f}{interval:>15} {np.mean(r.average_bits):>6.2f}  {shares}"
        )
    by = {r.way: r for r in rows}
    low, ladder, top = by[WAYS[0]], by[WAYS[1]], by[WAYS[2]]
    drift = summarize(1.0 - np.array(ladder.deviation_m) / np.array(low.deviation_m))
    success = summarize(np.array(ladder.success, float) - np.array(top.success, float))
    print(
        f"paired by seed: ladder drift below fixed low {drift.mean:+.0%} "
        f"[{bound(drift.ci_low):+.0%}, {bound(drift.ci_high):+.0%}]; "
        f"ladder success - fixed top {success.mean:+.0%} "
        f"[{bound(success.ci_low):+.0%}, {bound(success.ci_high):+.0%}]"
    )
    print(f"CPU: {cpu_model()}; {len(episodes)} episodes per way, lockstep (shadow awaited)")


if __name__ == "__main__":
    main()
