"""A tiny pi0 checkpoint saved as a user would: transformers' own classes, random weights.

PaliGemma with a one-layer SigLIP (32 px views, 16 px patches), a one-layer Gemma backbone and
action expert, and a real PI0Processor (SigLIP image processor, a word-level tokenizer) with
normalisation statistics for the simulated Sawyer's 4 state and 4 action dimensions. Keywords
change the geometry (layers, widths, view size, state/action width) and the image processor's
resizing: stretched to the view (SigLIP's) or fitted and padded (PI0ImageProcessor's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = (
    "<pad>", "<eos>", "<bos>", "<unk>", "reach", "the", "goal", "push", "puck", "to", "open",
    "drawer", "press", "button", "pick", "place", "and", "it", "a", "up",
)  # fmt: skip
VIEW = 32  # px per camera view
ACTION_STD = 0.1  # small: random weights then command small hand steps


def statistics(dims: int) -> dict[str, list[float]]:
    """PI0Processor's state and action mean/std: the Sawyer's for 4 dimensions."""
    if dims == 4:
        return {
            "state_mean": [0.0, 0.6, 0.2, 0.5],
            "state_std": [0.1, 0.1, 0.1, 0.5],
            "actions_mean": [0.0] * 4,
            "actions_std": [ACTION_STD] * 4,
        }
    return {
        "state_mean": [0.1 * i for i in range(dims)],
        "state_std": [0.2 + 0.05 * i for i in range(dims)],
        "actions_mean": [0.01 * i for i in range(dims)],
        "actions_std": [ACTION_STD] * dims,
    }


def save_tiny_pi0(
    folder: Path,
    *,
    processor_stats: bool = True,
    chunk_size: int = 10,
    layers: int = 1,
    widths: tuple[int, int] = (32, 32),
    view: int = VIEW,
    dims: int = 4,
    letterbox: bool = False,
    vision_mlp: int = 64,
) -> Path:
    """Save the checkpoint (save_pretrained of the model and the processor) into `folder`.

    `widths`: the backbone's and the action expert's; `dims`: state and action dimensions;
    `vision_mlp`: SigLIP's MLP width;
    `letterbox`: PI0ImageProcessor's fit-and-pad settings (on SigLIP's class, whose PIL backend
    runs without torchvision) instead of SigLIP's stretch."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PI0Config,
        PI0ForConditionalGeneration,
        PI0Processor,
        PreTrainedTokenizerFast,
        SiglipImageProcessor,
    )

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )

    def gemma(hidden: int) -> dict:
        return {
            "model_type": "gemma",
            "hidden_size": hidden,
            "intermediate_size": 64,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": len(WORDS),
            "max_position_embeddings": 256,
        }

    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": vision_mlp,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": view,
        "patch_size": 16,
        "vision_use_head": False,
    }
    config = PI0Config(
        vlm_config={
            "model_type": "paligemma",
            "text_config": gemma(widths[0]),
            "vision_config": vision,
            "projection_dim": widths[0],
            "hidden_size": widths[0],
            "vocab_size": len(WORDS),
            "image_token_index": len(WORDS),
        },
        dit_config=gemma(widths[1]),
        chunk_size=chunk_size,
        max_state_dim=8,
        max_action_dim=8,
        num_inference_steps=3,
    )
    PI0ForConditionalGeneration(config).save_pretrained(folder)
    stats = statistics(dims) if processor_stats else {}
    square = {"height": view, "width": view}
    fit = {"size": {"max_height": view, "max_width": view}, "do_pad": True, "pad_size": square}
    images = SiglipImageProcessor(**(fit if letterbox else {"size": square}))
    PI0Processor(
        image_processor=images, tokenizer=fast, max_state_dim=8, chunk_size=chunk_size, **stats
    ).save_pretrained(folder)
    return folder


def checkpoint_actions(
    folder: Path, views: list[np.ndarray], instruction: str, state: np.ndarray, seed: int = 0
) -> np.ndarray:
    """The checkpoint's own pipeline on raw camera frames, in FP32: PI0Processor -> the model's
    sample_actions from the noise VlaPolicy draws for `seed` -> the processor's normalisation
    undone (its inverse, (std + 1e-8) * z + mean). Returns [chunk, action dims]."""
    import torch
    from transformers import PI0ForConditionalGeneration, PI0Processor

    processor = PI0Processor.from_pretrained(folder, local_files_only=True)
    model = PI0ForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    config = model.config
    vision = config.vlm_config.vision_config
    processor.image_seq_length = (vision.image_size // vision.patch_size) ** 2
    inputs = processor(images=[views], text=instruction, state=np.asarray(state)[None])
    # Pi0Adapter.sample's draw: one randn of [batch, chunk, max_action_dim] from the seed.
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, config.chunk_size, config.max_action_dim), generator=generator)
    with torch.inference_mode():
        normalised = model.sample_actions(**inputs, noise=noise)[0].numpy()
    mean, std = np.asarray(processor.actions_mean), np.asarray(processor.actions_std)
    return normalised[:, : mean.size] * (std + 1e-8) + mean


LEROBOT_PRE_STATS = "policy_preprocessor_step_5_normalizer_processor.safetensors"
LEROBOT_POST_STATS = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
GEMMA_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")
GEMMA_KEYS += ("num_key_value_heads", "head_dim")
SIGLIP_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
SIGLIP_KEYS += ("patch_size",)


def lerobot_tables(checkpoint: Path) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """LeRobot's variant entries for this checkpoint's sizes ("tiny_vlm", "tiny_expert") and
    its SigLIP table: LeRobot ships full-size ones only, so tests register these."""
    import json

    config = json.loads((checkpoint / "config.json").read_text())
    text, expert = config["vlm_config"]["text_config"], config["dit_config"]
    vision = config["vlm_config"]["vision_config"]
    variants = {
        "tiny_vlm": {k: text[k] for k in GEMMA_KEYS},
        "tiny_expert": {k: expert[k] for k in GEMMA_KEYS},
    }
    return variants, {k: vision[k] for k in SIGLIP_KEYS}


def save_lerobot_folder(checkpoint: Path, folder: Path, action_mode: str = "MEAN_STD") -> Path:
    """The checkpoint in LeRobot's published layout (PI0Policy's `model.` key names, config
    with "type": "pi0" and variant names, the processor pipelines with their normaliser state
    files, the tokenizer only named); actions normalised by `action_mode`. The statistics are
    the checkpoint processor's, so both layouts predict the same."""
    import json

    from safetensors.numpy import load_file, save_file

    folder.mkdir(parents=True)
    weights = load_file(checkpoint / "model.safetensors")
    save_file({f"model.{k}": v for k, v in weights.items()}, folder / "model.safetensors")
    model = json.loads((checkpoint / "config.json").read_text())
    processor = json.loads((checkpoint / "processor_config.json").read_text())
    view = int(model["vlm_config"]["vision_config"]["image_size"])
    dims = len(processor["state_mean"])
    features = {
        "observation.state": {"type": "STATE", "shape": [dims]},
        "observation.images.base_0_rgb": {"type": "VISUAL", "shape": [3, view, view]},
    }
    config = {
        "type": "pi0",
        "paligemma_variant": "tiny_vlm",
        "action_expert_variant": "tiny_expert",
        "chunk_size": model["chunk_size"],
        "n_action_steps": model["chunk_size"],
        "max_state_dim": model["max_state_dim"],
        "max_action_dim": model["max_action_dim"],
        "num_inference_steps": model["num_inference_steps"],
        "image_resolution": [view, view],
        "tokenizer_max_length": 48,
        "input_features": features,
        "output_features": {"action": {"type": "ACTION", "shape": [dims]}},
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": action_mode},
    }
    (folder / "config.json").write_text(json.dumps(config))
    norm_map = config["normalization_mapping"]
    tokenizer = {"tokenizer_name": "google/paligemma-3b-pt-224", "max_length": 48,
                 "padding_side": "right", "padding": "max_length"}  # fmt: skip
    pre = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "pi0_new_line_processor", "config": {}},
        {"registry_name": "tokenizer_processor", "config": tokenizer},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
        {"registry_name": "normalizer_processor", "state_file": LEROBOT_PRE_STATS,
         "config": {"eps": 1e-8, "features": features, "norm_map": norm_map}},
    ]  # fmt: skip
    post = [
        {"registry_name": "unnormalizer_processor", "state_file": LEROBOT_POST_STATS,
         "config": {"eps": 1e-8, "features": config["output_features"], "norm_map": norm_map}},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
    ]  # fmt: skip
    for name, steps in (("policy_preprocessor", pre), ("policy_postprocessor", post)):
        (folder / f"{name}.json").write_text(json.dumps({"name": name, "steps": steps}))
    action_mean = np.asarray(processor["actions_mean"], np.float32)
    action_std = np.asarray(processor["actions_std"], np.float32)
    stats = {
        "observation.state.mean": np.asarray(processor["state_mean"], np.float32),
        "observation.state.std": np.asarray(processor["state_std"], np.float32),
        "action.mean": action_mean,
        "action.std": action_std,
        # MIN_MAX over the same band: the affine map equals MEAN_STD's
        "action.min": action_mean - action_std,
        "action.max": action_mean + action_std,
    }
    save_file(stats, folder / LEROBOT_PRE_STATS)
    save_file(
        {k: v for k, v in stats.items() if k.startswith("action.")}, folder / LEROBOT_POST_STATS
    )
    return folder
