"""Benchmark: `daptq eval` episodes per second on 1 and 2 local Ray workers, and the efficiency.

Runs the same episodes (the embedded default pi0 unless --model, the same seeds) serially on
one Ray worker, then on two, each into a fresh run folder, and prints episodes per second
(episodes over the evaluation's wall time, Ray start and model loading included, and over the
episodes alone) and the scaling efficiency: rate(2) / (2 x rate(1)).

    python bench/ray_scaling.py --tasks reach push --episodes 4 --threads 1
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    """Parse the options, run both worker counts, print the table (or --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the embedded default pi0)")
    parser.add_argument("--bits", default="fp32", help="bit config (default: fp32)")
    parser.add_argument("--tasks", nargs="+", default=["reach", "push"], help="tasks to run")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per task (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args()

    from daptq_ros.commands.fanout import PolicySpec, evaluate_on_ray
    from daptq_ros.policy.model_dir import default_model_dir
    from daptq_ros.quant.kernel_choice import cpu_model
    from daptq_ros.sim.evaluate import EvalConfig

    model = args.model or str(default_model_dir("pi0"))
    spec = PolicySpec(model, args.bits, True, {}, args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ray_scaling_") as scratch:
        for workers in (1, 2):
            config = EvalConfig(
                out=Path(scratch) / f"w{workers}",
                tasks=tuple(args.tasks),
                episodes=args.episodes,
                model=model,
                bit_config="" if args.bits == "fp32" else args.bits,
            )
            start = time.perf_counter()
            summary = evaluate_on_ray(spec, config, workers)
            wall = time.perf_counter() - start
            episodes = summary["overall"]["episodes"]
            episode_s = sum(e["wall_s"] for e in summary["episodes_run"])
            rows.append(
                {
                    "workers": workers,
                    "episodes": episodes,
                    "wall_s": wall,
                    "episodes_per_s": episodes / wall,
                    "episode_s_total": episode_s,
                    "episodes_per_s_excluding_start": episodes / summary["wall_s"],
                }
            )
    efficiency = rows[1]["episodes_per_s"] / (2 * rows[0]["episodes_per_s"])
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    report.update({"rows": rows, "efficiency_2_workers": efficiency})
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['cpu']}, {report['cores']} cores, {args.threads} thread(s) per worker")
    print(f"{'workers':>7} {'episodes':>8} {'wall s':>8} {'episodes/s':>11} {'(no start)':>11}")
    for row in rows:
        print(
            f"{row['workers']:>7} {row['episodes']:>8} {row['wall_s']:>8.1f} "
            f"{row['episodes_per_s']:>11.3f} {row['episodes_per_s_excluding_start']:>11.3f}"
        )
    print(f"efficiency of 2 workers: {efficiency:.2f} (1.00 = linear)")


if __name__ == "__main__":
    main()
