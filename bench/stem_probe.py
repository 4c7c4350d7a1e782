"""Diagnostic: can the goal and the object be read from a model's keypoint stem?

Renders the first frame of SCENES simulated scenes (seeds 200000.., away from demonstrations and
evaluation), runs the model's KeypointStem on each camera view, and fits a ridge regression from
the stem's tokens to the object's and the goal's positions on the first 2/3 of the scenes. Prints
R^2 on the remaining third per coordinate (1 = read exactly, <= 0 = not there), the keypoints'
attention entropy (the maximum is log(grid cells): near it, every keypoint averages the whole
view) and their learned sharpness. For a cogact model, a second row ("z") probes the cognition
latent, the action head's only view of the scene, the same way.

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

from daptq_ros.policy.families.cogact import CogactModel
from daptq_ros.policy.families.vision import KeypointStem
from daptq_ros.policy.model_dir import LoadedModel, load_model_dir
from daptq_ros.policy.preprocess import make_batch
from daptq_ros.sim.env import Observation, SimEnv

FIRST_SEED = 200000


def scenes(task: str, count: int, size: int) -> tuple[list[Observation], np.ndarray]:
    """First observations and targets [N, 6]: object xyz, goal xyz."""
    with SimEnv(task, image_size=size) as env:
        observations = [env.reset(seed) for seed in range(FIRST_SEED, FIRST_SEED + count)]
    targets = [np.r_[o.privileged[4:7], o.privileged[-3:]] for o in observations]
    return observations, np.array(targets)


@torch.no_grad()
def cognition_features(loaded: LoadedModel, observations: list[Observation]) -> np.ndarray:
    """A cogact model's cognition latent z per scene, flattened [N, C*head_hidden]."""
    batch = make_batch(
        np.stack([o.image for o in observations]),
        [o.instruction for o in observations],
        np.stack([o.state for o in observations]),
        loaded.tokenizer,
        loaded.meta.normalizer,
    )
    return loaded.model.encode(batch).flatten(1).numpy()


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
    frames: dict[tuple[str, int], tuple[list[Observation], np.ndarray]] = {}
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
            observations, targets = frames[task, size]
            images = np.stack([o.image for o in observations])
            features, entropy, cells = stem_features(stem, images, views)
            probed = {"stem": features}
            if isinstance(loaded.model, CogactModel):
                probed["z"] = cognition_features(loaded, observations)
            for source, values in probed.items():
                r2 = ridge_r2(values, targets, args.alpha)
                results.append(
                    {
                        "model": model_dir,
                        "task": task,
                        "features": source,
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
    header = f"{'model':40} {'task':11} {'feat':4} {'object R2 x y z':>17} {'goal R2 x y z':>17}"
    print(f"{header} entropy/max")
    for row in results:
        obj = " ".join(f"{v:5.2f}" for v in row["object_r2"])
        goal = " ".join(f"{v:5.2f}" for v in row["goal_r2"])
        entropy = f"{row['attention_entropy']:.2f}/{row['max_entropy']:.2f}"
        name = f"{row['model'][-40:]:40} {row['task']:11} {row['features']:4}"
        print(f"{name} {obj:>17} {goal:>17} {entropy}")


if __name__ == "__main__":
    main()
