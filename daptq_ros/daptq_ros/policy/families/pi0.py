"""The pi0 family: transformers' native PI0ForConditionalGeneration behind the family adapter.

PaliGemma backbone (`model.vlm`) + Gemma flow-matching action expert (`model.dit`), exactly as
transformers implements them; this module only builds configs, assembles inputs and names layers.

- Config: config.json is the PI0Config itself (so real checkpoints keep loading with
  `from_pretrained`), plus `daptq_*` keys: the real action width inside the max_action_dim
  padding, the number of camera views tiled in the image, and the optional vision stem.
- Vision stem (a module swap, measured): for the small models trained here, PaliGemma's
  SigLIP tower is replaced by `KeypointVisionTower` when `daptq_vision_stem` is set. At 96 px
  per camera, batch 32, 2 cores, a one-layer SigLIP took 0.21 s/step with 16 px patches
  (36 coarse tokens per camera) and 0.33 s/step with 12 px patches, against 0.18 s/step for
  the stem's 16 keypoint tokens with sub-cell positions (see vision.py). Real checkpoints
  keep SigLIP.
- Loss: the model's own forward (it mixes noise and actions at time t); the velocity MSE is
  recomputed from its output so that action dimensions can be weighted (drift scores) and
  padded chunk steps masked, which `F.mse_loss` inside the model cannot do.
- Time sampling: t = Beta(alpha, 1) * scale + offset as in pi0, drawn by inverse CDF
  (u^(1/alpha)) from the caller's generator so training is seeded; pi0 uses beta = 1.
- Sampling: the model's own `sample_actions` (Euler steps from t = 1 to 0) with seeded noise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PI0Config, PI0ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from daptq_ros.errors import ModelError
from daptq_ros.policy.families.base import (
    Batch,
    FamilyAdapter,
    compute_dtype,
    linear_names,
    preset,
    weighted_mse,
)
from daptq_ros.policy.families.vision import KeypointStem
from daptq_ros.policy.pi0_inputs import pi0_action_dim, pi0_inputs, prefix_cache
from daptq_ros.policy.rtc import RtcGuide, euler_flow

# The Gemma-2B backbone and 1024-wide action expert of pi0 (PaliGemma 3B geometry).
PI0_BACKBONE: dict[str, Any] = {
    "hidden_size": 2048,
    "expert_hidden_size": 1024,
    "num_layers": 18,
    "num_heads": 8,
    "head_dim": 256,
    "intermediate_size": 16384,
    "num_inference_steps": 10,
}
# Preset sizes: Gemma widths for the backbone (vlm) and the action expert (dit). The two share
# a key/value cache, so they need the same layer count, kv heads and head_dim.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 32,
        "expert_hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "head_dim": 16,
        "intermediate_size": 64,
        "stem_channels": [8, 16],
        "tokens_per_view": 4,
        "stem_sharpness": 10.0,
        "num_inference_steps": 5,
    },
    "default": {
        "hidden_size": 128,
        "expert_hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "head_dim": 32,
        "intermediate_size": 384,
        "stem_channels": [16, 32, 32],
        "tokens_per_view": 16,
        "stem_sharpness": 10.0,
        "num_inference_steps": 10,
    },
    # Deployment-scale configurations (random weights; speed and memory only, bench/deploy.py).
    # SmolVLA-like: ~0.42 G Linear parameters (16 layers, 1024 wide, expert 0.75x).
    "smolvla": {
        "hidden_size": 1024,
        "expert_hidden_size": 768,
        "num_layers": 16,
        "num_heads": 16,
        "head_dim": 64,
        "intermediate_size": 4096,
        "stem_channels": [16, 32, 32],
        "tokens_per_view": 32,
        "stem_sharpness": 10.0,
        "num_inference_steps": 10,
    },
    # pi0-like: ~3 G parameters (PaliGemma's Gemma-2B geometry, a 1024-wide action expert).
    "pi0": {
        **PI0_BACKBONE,
        "stem_channels": [16, 32, 32],
        "tokens_per_view": 32,
        "stem_sharpness": 10.0,
    },
    # pi0 as released (lerobot/pi0_base): the same backbone and expert behind PaliGemma's own
    # SigLIP So400m/14 tower (224 px views, 256 tokens each) instead of the keypoint stem.
    "pi0_siglip": {
        **PI0_BACKBONE,
        "siglip": {
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "patch_size": 14,
        },
    },
}


class KeypointVisionTower(nn.Module):
    """Stands in for PaliGemma's SigLIP tower: same call, keypoint tokens as last_hidden_state."""

    def __init__(
        self,
        channels: list[int],
        num_tokens: int,
        hidden_size: int,
        sharpness: float | None = None,
    ) -> None:
        super().__init__()
        self.stem = KeypointStem(channels, num_tokens, hidden_size, sharpness)

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        """pixel_values [N, 3, H, W] in [-1, 1] -> tokens [N, K, hidden]."""
        return BaseModelOutputWithPooling(last_hidden_state=self.stem(pixel_values))


def _gemma(settings: dict[str, Any], hidden: int, vocab_size: int) -> dict[str, Any]:
    return {
        "model_type": "gemma",
        "hidden_size": hidden,
        "intermediate_size": settings["intermediate_size"],
        "num_hidden_layers": settings["num_layers"],
        "num_attention_heads": settings["num_heads"],
        "num_key_value_heads": 1,
        "head_dim": settings["head_dim"],
        "vocab_size": vocab_size,
        "max_position_embeddings": 512,
    }


class Pi0Adapter(FamilyAdapter):
    """Family adapter of transformers' PI0ForConditionalGeneration."""

    name = "pi0"

    def default_config(
        self,
        *,
        size: str,
        vocab_size: int,
        max_text_length: int,
        state_dim: int,
        action_dim: int,
        horizon: int,
        image_size: tuple[int, int],
        num_views: int,
        overrides: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A PI0Config dict: preset `size` with `overrides` applied, with the keypoint vision
        stem, or PaliGemma's SigLIP tower for a preset that gives its `siglip` settings."""
        settings = preset(SIZES, self.name, size, overrides)
        view_width = image_size[1] // num_views
        text = _gemma(settings, settings["hidden_size"], vocab_size)
        siglip = settings.get("siglip")
        # Without `siglip` the SigLIP config is still required by PaliGemmaConfig; with the stem
        # swapped in it only fixes the tower's output width: one layer deep, cheap to build.
        vision = {
            "model_type": "siglip_vision_model",
            **(
                siglip
                or {
                    "hidden_size": settings["hidden_size"],
                    "intermediate_size": settings["intermediate_size"],
                    "num_hidden_layers": 1,
                    "num_attention_heads": settings["num_heads"],
                    "patch_size": view_width,
                }
            ),
            "image_size": view_width,
            "vision_use_head": False,
        }
        config = PI0Config(
            vlm_config={
                "model_type": "paligemma",
                "text_config": text,
                "vision_config": vision,
                "projection_dim": settings["hidden_size"],
                "hidden_size": settings["hidden_size"],
                "vocab_size": vocab_size,
                # Outside the embedding table: PI0 replaces image tokens before the lookup.
                "image_token_index": vocab_size,
            },
            dit_config=_gemma(settings, settings["expert_hidden_size"], vocab_size),
            chunk_size=horizon,
            max_state_dim=state_dim,
            max_action_dim=action_dim,
            num_inference_steps=settings["num_inference_steps"],
        )
        result = {
            **config.to_dict(),
            "daptq_action_dim": action_dim,
            "daptq_num_views": num_views,
        }
        if not siglip:
            result["daptq_vision_stem"] = {
                "channels": settings["stem_channels"],
                "tokens_per_view": settings["tokens_per_view"],
                "sharpness": settings["stem_sharpness"],
            }
        return result

    def build(self, config: dict[str, Any]) -> PI0ForConditionalGeneration:
        """A freshly initialised PI0ForConditionalGeneration (with the keypoint tower if asked)."""
        try:
            model = PI0ForConditionalGeneration(PI0Config.from_dict(config))
        except (TypeError, ValueError) as error:
            raise ModelError(f"pi0 config.json is not a valid PI0Config: {error}") from None
        stem = config.get("daptq_vision_stem")
        if stem:
            vlm = model.model.vlm
            vlm.vision_tower = KeypointVisionTower(
                stem["channels"],
                stem["tokens_per_view"],
                vlm.config.vision_config.hidden_size,
                stem.get("sharpness"),  # absent in models saved before it existed
            )
        return model

    def from_pretrained(
        self, directory: str | Path, config: PI0Config | None = None
    ) -> PI0ForConditionalGeneration:
        """A pi0 checkpoint from a local directory (no hub, no remote code); `config` replaces
        its config.json (a LeRobot folder's is not a transformers config)."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise ModelError(f"{directory}: no config.json; point at a transformers pi0 checkpoint")
        try:
            return PI0ForConditionalGeneration.from_pretrained(
                directory, config=config, local_files_only=True, use_safetensors=True
            )
        except OSError as error:
            raise ModelError(f"{directory}: cannot load the pi0 checkpoint ({error})") from None

    @staticmethod
    def _action_dim(model: nn.Module) -> int:
        """The real action width inside max_action_dim (all of it for a plain checkpoint)."""
        return pi0_action_dim(model.config)

    def _inputs(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """PI0 keyword inputs (policy/pi0_inputs.py)."""
        return pi0_inputs(model.config, batch)

    def loss(
        self,
        model: nn.Module,
        batch: Batch,
        dim_weights: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Flow-matching velocity MSE (target noise - actions), dims weighted, padding masked."""
        if batch.actions is None:
            raise ModelError("pi0 loss needs batch.actions")
        config = model.config
        if config.time_sampling_beta_beta != 1.0:
            raise ModelError(
                f"pi0 config time_sampling_beta_beta={config.time_sampling_beta_beta}: seeded "
                "training samples Beta(alpha, 1) only (pi0's value); set it to 1.0"
            )
        inputs = self._inputs(model, batch)
        action_dim = batch.actions.shape[-1]
        actions = F.pad(batch.actions, (0, config.max_action_dim - action_dim))
        size = actions.shape[0]
        noise = torch.randn(actions.shape, generator=generator).to(actions)
        uniform = torch.rand(size, generator=generator).to(actions)
        time = uniform.pow(1.0 / config.time_sampling_beta_alpha)
        time = time * config.time_sampling_scale + config.time_sampling_offset
        velocity = model(**inputs, noise=noise, timestep=time, actions=actions).logits
        target = noise - actions
        return weighted_mse(
            velocity[..., :action_dim], target[..., :action_dim], batch.action_mask, dim_weights
        )

    def sample(
        self,
        model: nn.Module,
        batch: Batch,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """PI0's Euler sampler from seeded noise; the first action_dim dims of each step."""
        return self.sample_guided(model, batch, None, num_steps, generator)[0]

    def sample_guided(
        self,
        model: nn.Module,
        batch: Batch,
        guide: RtcGuide | None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, str]:
        """The sampler, RTC-guided toward `guide` (policy/rtc.py), and the method that ran."""
        config = model.config
        inputs = self._inputs(model, batch.to_dtype(compute_dtype(model)))
        shape = (batch.state.shape[0], config.chunk_size, config.max_action_dim)
        noise = torch.randn(shape, generator=generator).to(inputs["pixel_values"])
        with torch.no_grad():
            velocity_at = _flow_velocity(model, inputs)
            steps = num_steps or config.num_inference_steps
            actions, method = euler_flow(velocity_at, noise, steps, guide)
        return actions[..., : self._action_dim(model)].float(), method

    def horizon_setting(self, horizon: int) -> dict[str, Any]:
        """PI0Config's chunk_size: no weight depends on it."""
        return {"chunk_size": horizon}

    def interface_layers(self, model: nn.Module) -> list[str]:
        """Backbone k/v_proj (the prefix KV cache) + embed_action_time and action_out_proj."""
        backbone = [
            name
            for name in linear_names(model, "model.vlm.language_model")
            if name.endswith(("self_attn.k_proj", "self_attn.v_proj"))
        ]
        return backbone + linear_names(model, "embed_action_time") + ["action_out_proj"]

    def prefix_modules(self, model: nn.Module) -> list[str]:
        """The vision tower (with its projector) and the PaliGemma language model."""
        return [
            "model.vlm.vision_tower",
            "model.vlm.multi_modal_projector",
            "model.vlm.language_model",
        ]

    def action_head_layers(self, model: nn.Module) -> list[str]:
        """The action expert's nn.Linear layers with its input embedding and output projection."""
        return (
            linear_names(model, "embed_action_time")
            + linear_names(model, "model.dit")
            + ["action_out_proj"]
        )


def _flow_velocity(
    model: nn.Module, inputs: dict[str, torch.Tensor]
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """v(x, t) of PI0 over one observation: the prefix KV cache is computed once, here.

    The same calls as transformers' PI0ForConditionalGeneration.sample_actions: positions from
    the attention mask, one VLM pass with use_cache, then per step the action expert over the
    cache, cropped back to the prefix afterwards.
    """
    mask = inputs["attention_mask"]
    cache = prefix_cache(
        model, inputs["input_ids"], inputs["pixel_values"], inputs["pixel_attention_mask"], mask
    )
    prefix_length = cache.get_seq_length()

    def velocity_at(x: torch.Tensor, t: float) -> torch.Tensor:
        time = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        output = model(
            state=inputs["state"],
            noise=x,
            timestep=time,
            pixel_attention_mask=inputs["pixel_attention_mask"],
            attention_mask=mask,
            cache=cache,
        )
        cache.crop(prefix_length - cache.get_seq_length())
        return output.logits

    return velocity_at
