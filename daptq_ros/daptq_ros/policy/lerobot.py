"""LeRobot policy folders read as a transformers pi0, without the lerobot package.

LeRobot (0.4+) saves a policy as `config.json` (its PI0Config, `"type": "pi0"`),
`model.safetensors` (PI0Policy's state dict: `model.paligemma_with_expert.*`, `model.state_proj`,
... which transformers' pi0 loader maps onto PI0ForConditionalGeneration by name), and two
processor pipelines, `policy_preprocessor.json` / `policy_postprocessor.json`, whose steps name
their state files (the normaliser's statistics, keyed `<feature>.<stat>`). The tokenizer is only
named there (`google/paligemma-3b-pt-224`), so a local copy is needed. Facts from LeRobot's
published layout (`policies/pi0/configuration_pi0.py`, `processor/normalize_processor.py`,
`processor/tokenizer_processor.py`, `policies/pi0/processor_pi0.py`):

- sizes come from `paligemma_variant` / `action_expert_variant` (gemma_2b: 2048 wide, 18 layers,
  MLP 16384, 8 heads, 1 KV head of 256; gemma_300m: 1024, 18, 4096, 8, 1, 256) on PaliGemma's
  SigLIP (1152 wide, 27 layers, MLP 4304, 16 heads, 14 px patches) with its 257152 tokens;
- the prompt is `<bos>` + task + "\\n", right-padded to `tokenizer_max_length` (48);
- MEAN_STD maps x to (x - mean) / std; MIN_MAX, QUANTILES and QUANTILE10 map [lo, hi] onto
  [-1, 1]: an affine map too, (x - (lo + hi) / 2) / ((hi - lo) / 2), so every mode is a mean and
  a scale here; IDENTITY is mean 0, scale 1;
- each camera image, as floats in [0, 1], is brought to `image_resolution` by openpi's
  `resize_with_pad_torch` (`policies/pi0/modeling_pi0.py` `_preprocess_images`, only when its
  size differs): scaled to fit with its aspect kept (bilinear, align_corners=False, no
  antialiasing, clamped to [0, 1]), padded evenly on both sides (the odd pixel after) with 0.0,
  black, then mapped to [-1, 1]. The folder does not record this; it is `LEROBOT_RESIZE`.
  LeRobot releases before huggingface/lerobot#2218 was fixed padded with -1.0 ahead of that
  mapping (-3 at the model): set daptq.json's image_resize.pad_value to -1.0 for those.

pi0.5 (adaRMS time conditioning, state in the prompt, no state projection) and SmolVLA (a
SmolVLM backbone) are other architectures: they are refused by type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from daptq_ros.errors import ModelError
from daptq_ros.policy.images import ImageResize
from daptq_ros.policy.normalize import Normalizer

PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"
GEMMA_VARIANTS: dict[str, dict[str, int]] = {
    "gemma_2b": {
        "hidden_size": 2048,
        "num_hidden_layers": 18,
        "intermediate_size": 16384,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 256,
    },
    "gemma_300m": {
        "hidden_size": 1024,
        "num_hidden_layers": 18,
        "intermediate_size": 4096,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 256,
    },
}
# PaliGemma-3b-224's SigLIP and vocabulary (pi0's backbone in every LeRobot variant).
PALIGEMMA_VISION: dict[str, int] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "patch_size": 14,
}
VOCAB_SIZE = 257152
OTHER_ARCHITECTURES = {
    "pi05": "pi0.5 conditions its action expert on time with adaRMS and puts the state in the "
    "prompt, so its weights do not fit pi0's architecture",
    "smolvla": "SmolVLA runs a SmolVLM backbone, not PaliGemma",
}
PROMPT_SUFFIX = "\n"  # LeRobot's pi0_new_line_processor
LEROBOT_RESIZE = ImageResize("letterbox", "torch_bilinear", pad_value=0.0, pad="centre")
# Modes that map [low, high] statistics onto [-1, 1].
AFFINE_RANGES = {
    "MIN_MAX": ("min", "max"),
    "QUANTILES": ("q01", "q99"),
    "QUANTILE10": ("q10", "q90"),
}


@dataclass(frozen=True)
class LeRobotPi0:
    """What a LeRobot pi0 folder says, in this package's terms."""

    config: Any  # transformers' PI0Config of the checkpoint's sizes
    normalizer: Normalizer
    state_dim: int
    action_dim: int
    tokenizer_name: str  # what the folder names (a hub id): a local copy is needed
    max_length: int  # tokens the prompt is padded to
    image_resize: ImageResize  # how each camera is brought to the model's size


def is_lerobot_folder(directory: Path) -> bool:
    """Whether `directory` holds a LeRobot policy (its config.json has LeRobot's "type")."""
    config = directory / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "type" in data and "model_type" not in data


def read_lerobot_pi0(directory: Path) -> LeRobotPi0:
    """The config, statistics and tokenizer settings of a LeRobot pi0 folder (ModelError)."""
    data = _json(directory / "config.json")
    kind = str(data.get("type"))
    if kind in OTHER_ARCHITECTURES:
        raise ModelError(
            f"{directory}: a LeRobot '{kind}' policy cannot be imported: "
            f"{OTHER_ARCHITECTURES[kind]}; daptq imports LeRobot 'pi0' policies"
        )
    if kind != "pi0":
        raise ModelError(
            f"{directory}: a LeRobot '{kind}' policy cannot be imported; daptq imports LeRobot "
            "'pi0' policies (and transformers PI0 checkpoints)"
        )
    for name in (PREPROCESSOR, POSTPROCESSOR):
        if not (directory / name).is_file():
            raise ModelError(
                f"{directory}: {name} is missing; save the policy with LeRobot's "
                "save_pretrained (0.4 or later), which writes its processors beside it"
            )
    state_dim = _feature_dim(data.get("input_features", {}), "observation.state", directory)
    action_dim = _feature_dim(data.get("output_features", {}), "action", directory)
    pre, post = _steps(directory / PREPROCESSOR), _steps(directory / POSTPROCESSOR)
    tokenizer = _step(pre, "tokenizer_processor", directory / PREPROCESSOR)["config"]
    state = _affine(directory, PREPROCESSOR, pre, "normalizer_processor", state_dim)
    action = _affine(directory, POSTPROCESSOR, post, "unnormalizer_processor", action_dim)
    return LeRobotPi0(
        config=_pi0_config(data, directory),
        normalizer=Normalizer.from_mean_std(*state, *action),
        state_dim=state_dim,
        action_dim=action_dim,
        tokenizer_name=str(tokenizer.get("tokenizer_name", "")),
        max_length=int(tokenizer.get("max_length", data.get("tokenizer_max_length", 48))),
        image_resize=LEROBOT_RESIZE,
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not readable JSON ({error})") from None


def _feature_dim(features: Any, key: str, directory: Path) -> int:
    shape = features.get(key, {}).get("shape") if isinstance(features, dict) else None
    if not shape:
        raise ModelError(f"{directory}/config.json: the feature '{key}' has no shape")
    return int(shape[-1])


def _steps(path: Path) -> list[dict[str, Any]]:
    steps = _json(path).get("steps")
    if not isinstance(steps, list):
        raise ModelError(f"{path}: no 'steps' list; not a LeRobot processor pipeline")
    return steps


def _step(steps: list[dict[str, Any]], registry_name: str, path: Path) -> dict[str, Any]:
    for step in steps:
        if step.get("registry_name") == registry_name:
            return step
    raise ModelError(f"{path}: no '{registry_name}' step; the policy's processor is incomplete")


def _affine(
    directory: Path, pipeline: str, steps: list[dict[str, Any]], registry_name: str, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) with normalised = (x - mean) / scale, from the (un)normaliser step of
    `pipeline`: the state in the preprocessor, the action in the postprocessor."""
    source = directory / pipeline
    feature = "action" if pipeline == POSTPROCESSOR else "observation.state"
    step = _step(steps, registry_name, source)
    kind = "ACTION" if feature == "action" else "STATE"
    mode = str(step.get("config", {}).get("norm_map", {}).get(kind, "MEAN_STD")).upper()
    if mode == "IDENTITY":
        return np.zeros(dim), np.ones(dim)
    if "state_file" not in step:
        raise ModelError(f"{source}: the {registry_name} step has no statistics (state_file)")
    try:
        stats = load_file(directory / step["state_file"])
    except (OSError, SafetensorError) as error:
        raise ModelError(f"{directory / step['state_file']}: unreadable ({error})") from None

    def stat(name: str) -> np.ndarray:
        key = f"{feature}.{name}"
        if key not in stats:
            raise ModelError(f"{directory / step['state_file']}: no '{key}' for {mode}")
        return stats[key].astype(np.float64)

    if mode == "MEAN_STD":
        return stat("mean"), stat("std")
    if mode in AFFINE_RANGES:
        low, high = (stat(name) for name in AFFINE_RANGES[mode])
        return (low + high) / 2.0, (high - low) / 2.0
    raise ModelError(f"{source}: normalisation mode {mode} of {feature} is not known")


def _pi0_config(data: dict[str, Any], directory: Path) -> Any:
    """transformers' PI0Config with the sizes LeRobot's config names."""
    from transformers import PI0Config

    if "paligemma_variant" not in data:
        raise ModelError(
            f"{directory}/config.json: a LeRobot pi0 config of before 0.4 (no "
            "paligemma_variant); load and save it again with LeRobot 0.4 or later"
        )
    sizes = {}
    for key in ("paligemma_variant", "action_expert_variant"):
        variant = data.get(key)
        if variant not in GEMMA_VARIANTS:
            raise ModelError(
                f"{directory}/config.json: {key} {variant!r} is not one of "
                f"{', '.join(GEMMA_VARIANTS)}"
            )
        sizes[key] = GEMMA_VARIANTS[variant]
    resolution = data.get("image_resolution", [224, 224])
    if len(set(resolution)) != 1:
        raise ModelError(f"{directory}/config.json: image_resolution {resolution} is not square")
    text = {**sizes["paligemma_variant"], "vocab_size": VOCAB_SIZE}
    vlm = {
        "model_type": "paligemma",
        "text_config": {"model_type": "gemma", **text},
        "vision_config": {
            "model_type": "siglip_vision_model",
            **PALIGEMMA_VISION,
            "image_size": int(resolution[0]),
            "vision_use_head": False,
        },
        "projection_dim": text["hidden_size"],
        "hidden_size": text["hidden_size"],
        "vocab_size": VOCAB_SIZE,
        "image_token_index": VOCAB_SIZE,
    }
    dit = {"model_type": "gemma", **sizes["action_expert_variant"], "vocab_size": VOCAB_SIZE}
    keys = ("chunk_size", "max_state_dim", "max_action_dim", "num_inference_steps")
    keys += ("min_period", "max_period")
    keys += tuple(f"time_sampling_{k}" for k in ("beta_alpha", "beta_beta", "scale", "offset"))
    settings = {key: data[key] for key in keys if key in data}
    return PI0Config(vlm_config=vlm, dit_config=dit, **settings)
