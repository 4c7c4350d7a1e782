"""Benchmark: wall time of a policy rollout rendering the cameras every step vs only at predictions.

The same embedded policy, tasks and seeds, one process, alternating the two modes per episode:
prints the mean seconds per episode of each, their ratio, and checks that the end-effector paths
are the same. Example:

    python bench/rollout_rendering.py --family pi0 --episodes 3
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import statistics


def main() -> None:
    """Parse the options, run both modes on the same episodes, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="pi0", choices=("pi0", "cogact"))
    parser.add_argument("--tasks", nargs="+", default=["reach", "drawer-open"])
    parser.add_argument("--episodes", type=int, default=3, help="seeds per task (default 3)")
    parser.add_argument("--seed", type=int, default=300_000, help="first seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    import numpy as np
    import torch

    from daptq_ros.policy.inference import load_policy
    from daptq_ros.policy.model_dir import default_model_dir
    from daptq_ros.quant.kernel_choice import cpu_model
    from daptq_ros.sim.env import SimEnv
    from daptq_ros.sim.evaluate import PolicyActor
    from daptq_ros.sim.rollout import run_episode

    class EveryFrame(PolicyActor):
        """The same actor with the cameras rendered at every step."""

        def needs_frame(self) -> bool:
            return True

    class Tracked:
        """Records the end-effector position after every step of the wrapped env."""

        def __init__(self, env: SimEnv) -> None:
            self.env, self.path = env, []

        def __getattr__(self, name: str):
            return getattr(self.env, name)

        def step(self, action, render: bool = True):
            observation, success = self.env.step(action, render=render)
            self.path.append(observation.ee_position)
            return observation, success

    torch.set_num_threads(args.threads)
    policy = load_policy(default_model_dir(args.family))
    seconds = {"every step": [], "at predictions": []}
    same_paths = True
    for task in args.tasks:
        with SimEnv(task) as env:
            for seed in range(args.seed, args.seed + args.episodes):
                paths = []
                modes = (("every step", EveryFrame), ("at predictions", PolicyActor))
                for mode, actor_type in modes:
                    tracked = Tracked(env)
                    actor = actor_type(policy, execute_steps=4, model="m", bit_config="")
                    result = run_episode(tracked, actor, seed)
                    seconds[mode].append(result.wall_s)
                    paths.append(np.array(tracked.path))
                same_paths &= bool(np.array_equal(*paths))
    every, sparse = (statistics.mean(seconds[m]) for m in seconds)
    result = {
        "cpu": cpu_model(),
        "family": args.family,
        "episodes": len(seconds["every step"]),
        "s_per_episode_every_step": every,
        "s_per_episode_at_predictions": sparse,
        "speedup": every / sparse,
        "same_paths": same_paths,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"rollout rendering, {args.family} on {result['cpu']}, {result['episodes']} episodes")
    print(f"cameras every step:     {every:.2f} s per episode")
    print(f"cameras at predictions: {sparse:.2f} s per episode ({result['speedup']:.2f}x faster)")
    print(f"same end-effector paths: {same_paths}")


if __name__ == "__main__":
    main()
