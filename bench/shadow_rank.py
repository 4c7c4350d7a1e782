"""Benchmark: does the shadow rank drift as a recorded reference does? Spearman over methods.

For every (task, seed), the FP32 run is recorded; each method then runs the same seed with an
FP32 shadow, watched by two drift monitor cores: one against the recorded FP32 run, one with no
reference (it reports against the shadow). Everything runs through the nodes' logic in lockstep
(evidence/shadow_rank.py). Prints per method the drift by each monitor (mm, mean and 95 %
interval over episodes) and its rank, the percentiles of the shadow's hand divergence per chunk
(what the precision ladder's ladder_up_m and ladder_down_m are chosen from), then Spearman's rho
over the methods.

    python bench/shadow_rank.py --methods bf16 w8a8 w4a16 w4a8 w3a8 w2a8 --episodes 2
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from daptq_ros.drift.stats import summarize
from daptq_ros.evidence.drift_guard import cached_builder
from daptq_ros.evidence.shadow_rank import rank_agreement
from daptq_ros.policy.model_dir import default_model_dir
from daptq_ros.policy.quantize import load_policy_with_bits
from daptq_ros.quant.kernel_choice import cpu_model

TASKS = ("reach", "push", "drawer-open", "button-press-topdown")
METHODS = ("bf16", "w8a8", "w4a16", "w4a8", "w3a8", "w2a8")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model directory ('default' = embedded)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="bit configs to rank")
    parser.add_argument("--shadow", default="fp32", help="the shadow's bit config")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="sim tasks")
    parser.add_argument("--episodes", type=int, default=2, help="seeds per task (from --seed)")
    parser.add_argument("--seed", type=int, default=100000, help="first seed")
    parser.add_argument("--max-steps", type=int, default=300, help="sim steps per episode")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args()


def interval_mm(values: list[float]) -> str:
    """'mean [low, high]' in mm."""
    s = summarize(np.array(values) * 1e3)
    return (
        f"{s.mean:.2f}" if s.ci_low is None else f"{s.mean:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]"
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    model = str(default_model_dir("pi0")) if args.model == "default" else args.model
    build = cached_builder(lambda bits: load_policy_with_bits(model, bits)[0])
    episodes = [(t, args.seed + k) for t in args.tasks for k in range(args.episodes)]
    with tempfile.TemporaryDirectory(prefix="shadow_rank_") as folder:
        result = rank_agreement(
            build,
            args.methods,
            episodes,
            args.max_steps,
            Path(folder),
            args.shadow,
            progress=lambda line: print(line, file=sys.stderr),
        )
    if args.json:
        rows = [m.__dict__ for m in result.methods]
        print(json.dumps({"cpu": cpu_model(), "spearman": result.spearman, "rows": rows}))
        return
    recorded_rank = rankdata([np.mean(m.recorded_m) for m in result.methods])
    shadow_rank = rankdata([np.mean(m.shadow_m) for m in result.methods])
    print(f"{'method':<8} {'recorded mm [95 % CI]':>24} {'rank':>5} {'shadow mm [95 % CI]':>24} "
          f"{'rank':>5}  chunk divergence p10/p50/p90 mm")  # fmt: skip
    for m, r, s in zip(result.methods, recorded_rank, shadow_rank, strict=True):
        p10, p50, p90 = np.percentile(np.array(m.chunk_divergence_m) * 1e3, [10, 50, 90])
        print(
            f"{m.method:<8} {interval_mm(m.recorded_m):>24} {r:>5g} "
            f"{interval_mm(m.shadow_m):>24} {s:>5g}  {p10:.2f}/{p50:.2f}/{p90:.2f}"
        )
    print(
        f"Spearman rho over {len(result.methods)} methods: {result.spearman:.2f} "
        f"(p {result.p_value:.3f}); {len(episodes)} episodes per method, {args.shadow} shadow"
    )
    print(f"CPU: {cpu_model()}; lockstep (the shadow awaited at each step)")


if __name__ == "__main__":
    main()
