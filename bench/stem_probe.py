"""Diagnostic: can the goal and the object be read from a model's keypoint stem?

Renders the first frame of SCENES simulated scenes (seeds 200000.., away from demonstrations and
evaluation), runs the model's KeypointStem on each camera view, and fits a ridge regression from
the stem's tokens to the object's and the goal's positions on the first 2/3 of the scenes. Prints
R^2 on the remaining third per coordinate (1 = read exactly, <= 0 = not there), the keypoints'
attention entropy (the maximum is log(grid cells): near it, every keypoint averages the whole
view) and their learned sharpness.

    python bench/stem_probe.py daptq_ros/models/pi0_default daptq_ros/models/cogact_default
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import json

import numpy as np
import torch

from daptq_ros.policy.families.vision import KeypointStem
from daptq_ros.policy.model_dir import load_model_dir
from daptq_ros.sim.env import SimEnv

FIRST_SEED = 200000


def scenes(task: str, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First frames [N, S, V*S, 3] and targets [N, 6]: object xyz, goal xyz."""
    images, targets = [], []
    with SimEnv(task, image_size=size) as env:
        for seed in range(FIRST_SEED, FIRST_SEED + count):
            observation = env.reset(seed)
            images.append(observation.image)
            targets.append(np.r_[observation.privileged[4:7], observation.privileged[-3:]])
    return np.stack(images), np.array(targets)


@torch.no_grad()
def stem_features(
    stem: KeypointStem, images: np.ndarray, views: int
) -> tuple[np.ndarray, float, int]:
    """Tokens of all views per scene [N, views*K*hidden], mean attention entropy, grid cells."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
    per_view = torch.cat(pixels.chunk(views, dim=-1), dim=0)
    attention = stem.attention(stem.convs(per_view))
    entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1).mean().item()
    tokens = stem(per_view).unflatten(0, (views, len(images))).transpose(0, 1)
    return tokens.flatten(1).numpy(), entropy, attention.shape[-1]


def ridge_r2(features: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Held-out R^2 per target column of a ridge fit on the first 2/3 of the rows."""
    split = 2 * len(features) // 3
    mean, std = features[:split].mean(0), features[:split].std(0) + 1e-6
    x = (features - mean) / std
    y_mean = targets[:split].mean(0)
    gram = x[:split].T @ x[:split] + alpha * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x[:split].T @ (targets[:split] - y_mean))
    residual = ((x[split:] @ weights + y_mean - targets[split:]) ** 2).sum(0)
    spread = ((targets[split:] - targets[split:].mean(0)) ** 2).sum(0)
    # A coordinate that does not vary (push's goal height) has no R^2.
    return np.where(spread > 1e-12, 1.0 - residual / np.maximum(spread, 1e-12), np.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model directories with a keypoint stem")
    parser.add_argument("--tasks", nargs="+", default=["reach", "push"], help="sim tasks")
    parser.add_argument("--scenes", type=int, default=300, help="scenes per task (default 300)")
    parser.add_argument("--alpha", type=float, default=100.0, help="ridge penalty (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    results = []
    for model_dir in args.models:
        loaded = load_model_dir(model_dir)
        stems = [m for m in loaded.model.modules() if isinstance(m, KeypointStem)]
        if not stems:
            raise SystemExit(f"{model_dir}: the model has no keypoint stem to probe")
        stem = stems[0].eval()
        views = loaded.meta.num_views
        sharpness = None if stem.log_sharpness is None else stem.log_sharpness.exp().tolist()
        size = loaded.meta.image_size[0]
        for task in args.tasks:
            if (task, size) not in frames:
                frames[task, size] = scenes(task, args.scenes, size)
            images, targets = frames[task, size]
            features, entropy, cells = stem_features(stem, images, views)
            r2 = ridge_r2(features, targets, args.alpha)
            results.append(
                {
                    "model": model_dir,
                    "task": task,
                    "object_r2": r2[:3].tolist(),
                    "goal_r2": r2[3:].tolist(),
                    "attention_entropy": entropy,
                    "max_entropy": float(np.log(cells)),
                    "sharpness": sharpness,
                }
            )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'model':44} {'task':6} {'object R2 x y z':>20} {'goal R2 x y z':>20} entropy/max")
    for row in results:
        obj = " ".join(f"{v:5.2f}" for v in row["object_r2"])
        goal = " ".join(f"{v:5.2f}" for v in row["goal_r2"])
        entropy = f"{row['attention_entropy']:.2f}/{row['max_entropy']:.2f}"
        print(f"{row['model'][-44:]:44} {row['task']:6} {obj:>20} {goal:>20} {entropy}")


if __name__ == "__main__":
    main()
