"""A tiny pi0 checkpoint saved as a user would: transformers' own classes, random weights.

PaliGemma with a one-layer SigLIP (32 px views, 16 px patches), a one-layer Gemma backbone and
action expert, and a real PI0Processor (SigLIP image processor, a word-level tokenizer) with
normalisation statistics for the simulated Sawyer's 4 state and 4 action dimensions.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "<pad>", "<eos>", "<bos>", "<unk>", "reach", "the", "goal", "push", "puck", "to", "open",
    "drawer", "press", "button", "pick", "place", "and", "it", "a", "up",
)  # fmt: skip
VIEW = 32  # px per camera view
ACTION_STD = 0.1  # small: random weights then command small hand steps


def save_tiny_pi0(folder: Path, *, processor_stats: bool = True, chunk_size: int = 10) -> Path:
    """Save the checkpoint (save_pretrained of the model and the processor) into `folder`."""
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
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": len(WORDS),
            "max_position_embeddings": 256,
        }

    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": VIEW,
        "patch_size": 16,
        "vision_use_head": False,
    }
    config = PI0Config(
        vlm_config={
            "model_type": "paligemma",
            "text_config": gemma(32),
            "vision_config": vision,
            "projection_dim": 32,
            "hidden_size": 32,
            "vocab_size": len(WORDS),
            "image_token_index": len(WORDS),
        },
        dit_config=gemma(32),
        chunk_size=chunk_size,
        max_state_dim=8,
        max_action_dim=8,
        num_inference_steps=3,
    )
    PI0ForConditionalGeneration(config).save_pretrained(folder)
    stats = (
        {
            "state_mean": [0.0, 0.6, 0.2, 0.5],
            "state_std": [0.1, 0.1, 0.1, 0.5],
            "actions_mean": [0.0] * 4,
            "actions_std": [ACTION_STD] * 4,
        }
        if processor_stats
        else {}
    )
    images = SiglipImageProcessor(size={"height": VIEW, "width": VIEW})
    PI0Processor(
        image_processor=images, tokenizer=fast, max_state_dim=8, chunk_size=chunk_size, **stats
    ).save_pretrained(folder)
    return folder
