"""The keyword inputs of transformers' PI0 for one batch, from the model's config alone.

Torch only (no architecture): the pi0 adapter and the OpenVINO runtime (which never builds the
torch model) build the same inputs here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from daptq_ros.policy.batch import Batch, trim_padding


def pi0_action_dim(config: Any) -> int:
    """The real action width inside max_action_dim (all of it for a plain checkpoint)."""
    return getattr(config, "daptq_action_dim", config.max_action_dim)


def pi0_inputs(config: Any, batch: Batch) -> dict[str, torch.Tensor]:
    """Per-camera pixels in [-1, 1], image placeholders + text ids, their mask, padded state."""
    input_ids, text_mask = trim_padding(batch.input_ids, batch.attention_mask)
    views = getattr(config, "daptq_num_views", 1)
    size = batch.images.shape[0]
    pixels = batch.images.unflatten(-1, (views, -1)).permute(0, 3, 1, 2, 4) * 2.0 - 1.0
    stem = getattr(config, "daptq_vision_stem", None)
    vision = config.vlm_config.vision_config
    per_view = stem["tokens_per_view"] if stem else (vision.image_size // vision.patch_size) ** 2
    image_ids = torch.full(
        (size, views * per_view),
        config.vlm_config.image_token_id,
        dtype=input_ids.dtype,
        device=input_ids.device,
    )
    ones = torch.ones_like(image_ids, dtype=text_mask.dtype)
    state = F.pad(batch.state, (0, config.max_state_dim - batch.state.shape[-1]))
    return {
        "state": state,
        "input_ids": torch.cat([image_ids, input_ids], dim=1),
        "attention_mask": torch.cat([ones, text_mask], dim=1),
        "pixel_values": pixels.contiguous(),
        "pixel_attention_mask": torch.ones(size, views, dtype=torch.bool, device=pixels.device),
    }


def prefix_cache(
    model: Any,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_attention_mask: torch.Tensor,
    attention_mask: torch.Tensor,
) -> Any:
    """PI0's prefix pass over images and prompt: the backbone's KV cache (transformers' own
    sample_actions step 2: positions from the mask, one VLM pass with use_cache)."""
    inner = model.model
    embeds = inner.embed_prefix(input_ids, pixel_values, pixel_attention_mask)
    return inner.vlm(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=attention_mask.cumsum(-1) - 1,
        token_type_ids=torch.zeros_like(embeds)[:, :, 0],
        use_cache=True,
    ).cache
