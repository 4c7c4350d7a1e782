"""Benchmark: what the drift guard's shadow costs the policy node, measured as ratios in one run.

Runs bench/control_loop.py (the node's pipeline in real time, without ROS) in a fresh process per
run, alternating without and with `shadow_bit_config`, --rounds times, and prints per shadow
config: the command rate, the deployed model's inference rate, CPU cores used and resident
memory after start-up, each as the median over rounds and as a ratio to the run without a
shadow; and how many chunks the shadow compared and skipped (busy).

    python bench/shadow_cost.py --shadows fp32 w8a8 --seconds 15 --rounds 3
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from daptq_ros.quant.kernel_choice import cpu_model

HERE = Path(__file__).resolve().parent
METRICS = ("command_hz", "inference_hz", "cpu_cores_used", "rss_mb")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model directory ('default' = embedded)")
    parser.add_argument("--shadows", nargs="+", default=["fp32"], help="shadow bit configs")
    parser.add_argument("--shadow-every", type=int, default=4, help="shadow on every N-th chunk")
    parser.add_argument("--seconds", type=float, default=15.0, help="run time of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each config, alternated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for inference")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args()


def one_run(args: argparse.Namespace, shadow: str) -> dict:
    """bench/control_loop.py once, in a fresh process (its memory is its own)."""
    command = [sys.executable, str(HERE / "control_loop.py"), "--models", args.model, "--json"]
    command += ["--seconds", str(args.seconds), "--threads", str(args.threads)]
    command += ["--shadow", shadow, "--shadow-every", str(args.shadow_every)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"control_loop.py failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout)[0]


def main() -> None:
    args = parse_args()
    configs = ["", *args.shadows]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for round_ in range(args.rounds):
        for config in configs:
            runs[config].append(one_run(args, config))
            print(
                f"round {round_ + 1}/{args.rounds}: shadow {config or 'none'} done", file=sys.stderr
            )
    table = []
    base = {m: float(np.median([r[m] for r in runs[""]])) for m in METRICS}
    for config in configs:
        medians = {m: float(np.median([r[m] for r in runs[config]])) for m in METRICS}
        shadow = [r["shadow"] for r in runs[config] if r["shadow"]]
        table.append(
            {
                "shadow": config or "none",
                **medians,
                **{f"{m}_x_none": medians[m] / base[m] for m in METRICS},
                "compared": sum(s["compared"] for s in shadow),
                "skipped_busy": sum(s["skipped_busy"] for s in shadow),
            }
        )
    if args.json:
        print(json.dumps({"cpu": cpu_model(), "rows": table}, indent=2))
        return
    print(f"{'shadow':<8} {'cmd Hz':>7} {'x':>5} {'infer Hz':>8} {'x':>5} {'CPU':>5} {'x':>5} "
          f"{'RSS MB':>7} {'x':>5} {'compared':>8} {'skipped':>7}")  # fmt: skip
    for r in table:
        print(
            f"{r['shadow']:<8} {r['command_hz']:>7.1f} {r['command_hz_x_none']:>5.2f} "
            f"{r['inference_hz']:>8.1f} {r['inference_hz_x_none']:>5.2f} "
            f"{r['cpu_cores_used']:>5.2f} {r['cpu_cores_used_x_none']:>5.2f} "
            f"{r['rss_mb']:>7.0f} {r['rss_mb_x_none']:>5.2f} {r['compared']:>8} "
            f"{r['skipped_busy']:>7}"
        )
    print(
        f"CPU: {cpu_model()}; medians of {args.rounds} runs of {args.seconds:g} s, x = against no "
        f"shadow; shadow on every {args.shadow_every}th chunk at nice 19"
    )


if __name__ == "__main__":
    main()
