"""`daptq train`: behaviour cloning of a VLA family from episode bags."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daptq_ros.bags.state import STATE_SOURCES
from daptq_ros.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq train`."""
    parser = subparsers.add_parser(
        "train",
        help="train a VLA policy (behaviour cloning) from episode bags",
        description="Behaviour cloning from demonstration bags (e.g. written by `daptq collect`): "
        "each step's image, instruction and state -> the chunk of the next H commanded actions. "
        "Deterministic for a seed, resumable from the checkpoint beside the model "
        "(MODEL_DIR.checkpoint/), exports the EMA weights as a model directory (safetensors).",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="DIR",
        help="episode bags, or folders searched recursively for them (folders with metadata.yaml)",
    )
    parser.add_argument(
        "--family", required=True, choices=("cogact", "pi0"), help="VLA family to train"
    )
    parser.add_argument(
        "--out", required=True, metavar="MODEL_DIR", help="model directory to write"
    )
    parser.add_argument(
        "--size",
        default="default",
        help="model size preset of the family: 'default' (the embedded model) or 'tiny' "
        "(smoke tests) (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model settings over the size preset (VALUE read as JSON, else as text), e.g. "
        "cognition_tokens=8; with --init, only settings that keep the weights' shapes, e.g. "
        "cogact's condition_dropout=0.1 guidance_scale=1.5 (classifier-free guidance)",
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="rows per action chunk (default: 8, or the --init model's; a pi0 fine-tuned from "
        "--init to another horizon keeps its weights, e.g. pi0's own 50)",
    )
    parser.add_argument(
        "--state",
        default="ee_position_gripper",
        choices=STATE_SOURCES,
        help="the model's state: the tool position and Sawyer gripper opening, or the "
        "positions of named joints (--state-joints) (default: %(default)s)",
    )
    parser.add_argument(
        "--state-joints",
        nargs="+",
        default=None,
        metavar="JOINT",
        help="--state joint_positions: the joints, in order (default: every joint of the "
        "first episode's /joint_states)",
    )
    parser.add_argument(
        "--action-norm",
        default="min_max",
        choices=("min_max", "mean_std"),
        help="how actions are normalised: their min/max to [-1, 1], or mean -/+ std, which "
        "keeps small typical actions apart when rare extremes set the range (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--steps", type=int, default=10_000, help="optimiser steps (default: 10000)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    parser.add_argument(
        "--lr", type=float, help="peak learning rate (default: the training default, 1e-3)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of init, batches, noise (default: 0)"
    )
    parser.add_argument(
        "--only-successful",
        action="store_true",
        help="skip episodes whose metadata marks them failed",
    )
    parser.add_argument(
        "--init",
        metavar="MODEL_DIR",
        help="fine-tune: start from this model directory's weights, tokenizer and normalisation "
        "statistics instead of a random initialisation (e.g. an embedded default model); the "
        "data must have its action space, chunk, timing and camera layout",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in MODEL_DIR.checkpoint/ if one exists",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=500, help="steps between checkpoints (default: 500)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (default: 2)"
    )
    parser.add_argument("--json", action="store_true", help="print the training result as JSON")
    return parser


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs -> {KEY: VALUE}, each VALUE read as JSON where it parses, else as text."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} is not KEY=VALUE; write e.g. guidance_scale=1.5")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def run(args: argparse.Namespace) -> int:
    """Load the episodes, train, and print where the model went."""
    import torch
    from tqdm import tqdm

    from daptq_ros.bags import find_bag_dirs, read_episode
    from daptq_ros.bags.episode import recorded_joint_names
    from daptq_ros.bags.state import StateSpec
    from daptq_ros.errors import BagError
    from daptq_ros.policy import TrainConfig, train

    overrides = parse_settings(args.set)  # before minutes of reading bags
    torch.set_num_threads(args.threads)
    bags = [bag for root in args.data for bag in find_bag_dirs(root)]
    if not bags:
        raise BagError(f"--data {' '.join(args.data)}: no rosbag2 episodes found")
    state = StateSpec()
    if args.state == "joint_positions":
        state = StateSpec(args.state, args.state_joints or recorded_joint_names(bags[0]))
    episodes = [read_episode(p, state) for p in tqdm(bags, desc="read episodes", unit="bag")]
    if args.only_successful:
        episodes = [e for e in episodes if e.meta.success]
    first = episodes[0]
    if args.horizon is not None and args.horizon < 1:
        raise ConfigError(f"--horizon {args.horizon}: a chunk needs at least 1 row")
    config = TrainConfig(
        family=args.family,
        **({} if args.horizon is None else {"horizon": args.horizon}),
        dt=first.chunk_dt,
        action_names=first.action_names,
        action_space=first.action_space,
        state_source=state.source,
        state_names=state.names,
        action_norm=args.action_norm,
        size=args.size,
        model_overrides=overrides,
        steps=args.steps,
        batch_size=args.batch_size,
        **({} if args.lr is None else {"lr": args.lr}),
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        init_from=args.init,
    )
    provenance = {
        "command": " ".join(["daptq", *sys.argv[1:]]),
        "data": [str(d) for d in args.data],
        "episodes": len(episodes),
        "git_revision": _git_revision(),
    }
    demonstrations = [
        _Demonstration(
            e.images, e.instruction, e.states.astype("float32"), e.labels.astype("float32")
        )
        for e in episodes
    ]
    result = train(demonstrations, args.out, config, resume=args.resume, provenance=provenance)
    report = {
        "model_dir": str(result.model_dir),
        "step": result.step,
        "seconds_per_step": result.seconds_per_step,
        "final_loss": sum(result.losses[-100:]) / max(1, len(result.losses[-100:])),
        "episodes": len(episodes),
    }
    print(json.dumps(report, indent=2) if args.json else f"model written to {result.model_dir}")
    return 0


@dataclass(frozen=True)
class _Demonstration:
    """The arrays of one episode that behaviour cloning reads (policy.training.Demonstration)."""

    images: Any
    instruction: str
    states: Any
    actions: Any
