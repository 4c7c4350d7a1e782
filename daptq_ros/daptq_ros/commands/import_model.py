"""`daptq import`: a user's pi0 (transformers or LeRobot folder) -> a model directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daptq_ros.policy.importer import RobotMapping
    from daptq_ros.policy.normalize import Normalizer


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq import`."""
    parser = subparsers.add_parser(
        "import",
        help="import a pretrained pi0 (transformers or LeRobot folder) as a model directory",
        description="Read a pi0 checkpoint from local files only: a transformers one "
        "(PI0ForConditionalGeneration and PI0Processor saved with save_pretrained: config.json, "
        "model.safetensors, tokenizer.json, processor_config.json) or a LeRobot policy folder "
        "(config.json with type pi0, model.safetensors, policy_preprocessor.json and "
        "policy_postprocessor.json with their statistics). Every tensor is checked against the "
        "config before anything is built; map its state and action dimensions onto the robot, "
        "and write a model directory that the policy node, `daptq quantize` and `daptq eval` "
        "load. pi0.5 and SmolVLA are refused by type; pickle weights are refused; no code from "
        "the checkpoint runs.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="the pi0 checkpoint folder (transformers or LeRobot layout)",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="a folder with the checkpoint's tokenizer.json, when the checkpoint does not hold "
        "it (a LeRobot pi0 names google/paligemma-3b-pt-224: pass a local copy of it)",
    )
    parser.add_argument(
        "--robot",
        required=True,
        metavar="MAPPING",
        help="robot mapping: a preset of config/mappings/ (panda, ur5e, so101, sawyer_sim) or a "
        "YAML file with name, num_views, state_source, state_names, action_space, action_names, "
        "dt and instruction_length",
    )
    parser.add_argument(
        "--stats-from",
        nargs="+",
        default=[],
        metavar="BAGS",
        help="fit the state/action normalisation on these episode bags, or for a joint-space "
        "mapping your own `ros2 bag record` recordings of the arm (folders are searched); "
        "default: the checkpoint's own statistics (processor_config.json, or LeRobot's "
        "normaliser files)",
    )
    parser.add_argument(
        "--image-topic",
        default="/camera/image_raw",
        help="the camera topic of plain recordings (default: %(default)s)",
    )
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to write")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Import and print where the model directory went."""
    from daptq_ros.policy.importer import import_pi0, load_mapping

    mapping = load_mapping(args.robot)
    normalizer = (
        stats_from_bags(args.stats_from, mapping, args.image_topic) if args.stats_from else None
    )
    provenance = {"command": " ".join(["daptq", *sys.argv[1:]])}
    out = import_pi0(args.checkpoint, mapping, args.out, normalizer, provenance, args.tokenizer)
    meta = json.loads((Path(out) / "daptq.json").read_text())
    report = {
        "model_dir": str(out),
        "robot_mapping": mapping.name,
        "action_space": meta["action_space"],
        "horizon": meta["horizon"],
        "image_size": meta["image_size"],
        "checkpoint_layout": meta["provenance"]["checkpoint_layout"],
        "normalization": meta["provenance"]["normalization"],
    }
    print(json.dumps(report, indent=2) if args.json else f"model directory written to {out}")
    return 0


def stats_from_bags(roots: list[str], mapping: RobotMapping, image_topic: str) -> Normalizer:
    """States (as the mapping builds them) and commanded actions of the episode bags under
    `roots` (episode bags, or plain recordings of the arm for a joint-space mapping), fitted
    per dimension."""
    import numpy as np

    from daptq_ros.bags import find_bag_dirs
    from daptq_ros.bags.recording import read_demonstration
    from daptq_ros.bags.state import StateSpec
    from daptq_ros.errors import ModelError
    from daptq_ros.policy.normalize import Normalizer

    folders = [bag for root in roots for bag in find_bag_dirs(root)]
    if not folders:
        raise ModelError(f"--stats-from {' '.join(roots)}: no rosbag2 episodes found")
    state = StateSpec(mapping.state_source, mapping.state_names)
    episodes = [
        read_demonstration(
            folder,
            state,
            mapping.action_space,
            mapping.action_names,
            mapping.dt,
            image_topic=image_topic,
            instruction="-",  # statistics need no instruction
        )
        for folder in folders
    ]
    for episode in episodes:
        recorded = (getattr(episode, "action_space", None), getattr(episode, "action_names", None))
        if recorded[0] is not None and recorded != (mapping.action_space, mapping.action_names):
            raise ModelError(
                f"--stats-from {episode.path}: its actions are {recorded[0]} "
                f"({', '.join(recorded[1])}), the mapping {mapping.name} names "
                f"{mapping.action_space} ({', '.join(mapping.action_names)}); record the "
                "checkpoint's actions or fix the mapping's action_space and action_names"
            )
    states = np.concatenate([e.states for e in episodes])
    actions = np.concatenate([e.labels.reshape(-1, e.labels.shape[-1]) for e in episodes])
    return Normalizer.fit(states, actions)
