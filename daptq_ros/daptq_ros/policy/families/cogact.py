"""The cogact family: vision-language backbone -> cognition latent z -> diffusion transformer head.

The architecture the DA-PTQ paper quantizes (CogACT), at a size that trains on a CPU:

- vision: per camera view, `KeypointStem` tokens (or, for real checkpoints, a transformers
  SiglipVisionModel and a linear projector); a learned embedding tells the views apart;
- language model: a transformers LlamaModel (causal) over
  [visual tokens; instruction tokens; state token; C learnable cognition tokens];
- interface: the cognition tokens' last hidden states, projected by `cognition_proj`, are z
  [B, C, head_hidden] (CogACT has C = 1; see `cognition_tokens` for why ours has more);
- action head: a DiT over [z + timestep embedding; H noisy action tokens] (CogACT's
  condition token, one per cognition token), trained with epsilon-prediction MSE over a
  squared-cosine schedule and sampled with deterministic DDIM (eta = 0), optionally with
  classifier-free guidance (`condition_dropout`, `guidance_scale`; CogACT samples at 1.5).

As in CogACT, each observation is paired with several noise draws per step (`noise_samples`):
the backbone pass is the expensive part, the head is cheap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel, SiglipVisionConfig, SiglipVisionModel

from daptq_ros.errors import ModelError
from daptq_ros.policy.batch import trim_padding
from daptq_ros.policy.ddim import ddim_sample, squared_cosine_alphas_cumprod
from daptq_ros.policy.families.base import (
    Batch,
    FamilyAdapter,
    compute_dtype,
    linear_names,
    preset,
    weighted_mse,
)
from daptq_ros.policy.families.vision import KeypointStem

# Preset sizes. "default" is the embedded model (a few million parameters, sized for fast CPU
# steps); "tiny" is for tests.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "stem_channels": [8, 16],
        "tokens_per_view": 4,
        "stem_sharpness": 10.0,
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 64,
        "head_hidden_size": 32,
        "head_layers": 1,
        "head_heads": 2,
        "cognition_tokens": 2,
        "noise_samples": 2,
        "condition_dropout": 0.0,
        "guidance_scale": 1.0,
    },
    "default": {
        "stem_channels": [16, 32, 32],
        "tokens_per_view": 16,
        "stem_sharpness": 10.0,
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 384,
        "head_hidden_size": 128,
        "head_layers": 2,
        "head_heads": 4,
        "cognition_tokens": 8,
        "noise_samples": 4,
        "condition_dropout": 0.0,
        "guidance_scale": 1.0,
    },
    # Deployment scale (random weights; speed and memory only, `daptq bench --deploy`): a
    # ~0.42 G Llama backbone (20 layers, 1024 wide) and a DiT-B-like head (12 blocks, 768
    # wide), CogACT's geometry at SmolVLA's size.
    "large": {
        "stem_channels": [16, 32, 32],
        "tokens_per_view": 32,
        "stem_sharpness": 10.0,
        "hidden_size": 1024,
        "num_layers": 20,
        "num_heads": 16,
        "intermediate_size": 4096,
        "head_hidden_size": 768,
        "head_layers": 12,
        "head_heads": 12,
        "noise_samples": 4,
        "condition_dropout": 0.0,
        "guidance_scale": 1.0,
    },
}


@dataclass(frozen=True)
class CogactConfig:
    """Everything needed to rebuild a cogact model (stored as config.json)."""

    vocab_size: int
    max_text_length: int
    state_dim: int
    action_dim: int
    horizon: int
    image_size: tuple[int, int]  # (H, V*W) of the tiled model input
    num_views: int
    stem_channels: tuple[int, ...] = (16, 32, 32)
    tokens_per_view: int = 16
    # Initial keypoint logit scale (learned); None in models saved before it existed.
    stem_sharpness: float | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 384
    head_hidden_size: int = 128
    head_layers: int = 2
    head_heads: int = 4
    # Cognition tokens C. CogACT uses one; with one, our earlier default model's z carried the
    # goal (ridge-probe R^2 0.9 on first frames, bench/stem_probe.py) but nothing of the puck's
    # position (R^2 0.0), which push and pick-place need, though its stem held it (R^2 0.8).
    cognition_tokens: int = 1
    train_timesteps: int = 100
    sample_steps: int = 10
    noise_samples: int = 4
    # Classifier-free guidance (as CogACT samples, with scale 1.5): training replaces z by zeros
    # with probability `condition_dropout`, teaching the head an unconditional prediction;
    # sampling then uses eps_u + guidance_scale * (eps_c - eps_u). Scale 1 is the plain
    # conditional head (one pass); other scales run the head on both branches in one batch.
    condition_dropout: float = 0.0
    guidance_scale: float = 1.0
    vision: str = "keypoints"  # "keypoints" or "siglip"
    siglip: dict[str, Any] = field(default_factory=dict)  # SiglipVisionConfig kwargs

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(self.image_size))
        object.__setattr__(self, "stem_channels", tuple(self.stem_channels))
        if self.image_size[1] % self.num_views:
            raise ModelError(
                f"cogact config: image width {self.image_size[1]} is not a multiple of "
                f"num_views={self.num_views} (views are tiled horizontally)"
            )
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ModelError(
                f"cogact config: condition_dropout {self.condition_dropout} is not in [0, 1)"
            )
        if self.vision not in ("keypoints", "siglip"):
            raise ModelError(f"cogact config: vision {self.vision!r} is not keypoints or siglip")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CogactConfig:
        """From config.json's content; a ModelError names unknown or missing keys."""
        data = {k: v for k, v in data.items() if k not in ("family", "model_type")}
        try:
            return cls(**data)
        except TypeError as error:
            raise ModelError(f"cogact config.json does not match this version: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, tagged with the family."""
        return {"family": "cogact", "model_type": "daptq_cogact", **asdict(self)}


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps t [B]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class DiTBlock(nn.Module):
    """Pre-norm transformer block (self-attention + MLP) over [condition; action tokens]."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, N, hidden] -> [B, N, hidden] (bidirectional attention)."""
        batch, length, hidden = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + self.proj(attended)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DiffusionActionHead(nn.Module):
    """DiT that predicts the noise in a noisy action chunk from condition tokens (z + time).

    As in CogACT's action model, the condition (each of z's C tokens plus the timestep
    embedding) sits as tokens in front of the H noisy action tokens. We first built DiT's
    adaLN-Zero conditioning on z + time instead; on a localisation task it had not learned to
    use z after 800 steps, while the condition token did by 600 (and pi0, which also conditions
    by attention, by 400).
    """

    def __init__(self, config: CogactConfig) -> None:
        super().__init__()
        hidden = config.head_hidden_size
        self.action_in = nn.Linear(config.action_dim, hidden)
        length = config.cognition_tokens + config.horizon
        self.position = nn.Parameter(torch.randn(1, length, hidden) * hidden**-0.5)
        self.time_in = nn.Linear(hidden, hidden)
        self.time_out = nn.Linear(hidden, hidden)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden, config.head_heads) for _ in range(config.head_layers)
        )
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.out = nn.Linear(hidden, config.action_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # DiT's initialisation
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # A zero output layer: the head starts by predicting zero noise for every input.
        nn.init.zeros_(self.out.weight)

    def forward(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        """Predicted noise [B, H, D] for noisy chunks [B, H, D] at integer timesteps [B]
        given z [B, C, head_hidden]."""
        time = sinusoidal_embedding(timesteps, self.time_in.in_features).to(noisy.dtype)
        condition = z + self.time_out(F.silu(self.time_in(time)))[:, None, :]
        x = torch.cat([condition, self.action_in(noisy)], dim=1) + self.position
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, z.shape[1] :]))


class CogactModel(nn.Module):
    """Vision-language backbone + cognition token -> z -> diffusion action head."""

    def __init__(self, config: CogactConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        if config.vision == "keypoints":
            self.vision = KeypointStem(
                config.stem_channels, config.tokens_per_view, hidden, config.stem_sharpness
            )
        else:
            siglip = SiglipVisionConfig(**{"vision_use_head": False, **config.siglip})
            self.vision = SiglipVisionModel(siglip)
            self.vision_proj = nn.Linear(siglip.hidden_size, hidden)
        self.view_embedding = nn.Parameter(torch.zeros(config.num_views, 1, hidden))
        self.language_model = LlamaModel(
            LlamaConfig(
                vocab_size=config.vocab_size,
                hidden_size=hidden,
                intermediate_size=config.intermediate_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                num_key_value_heads=config.num_heads,
                max_position_embeddings=256,
                pad_token_id=0,
                bos_token_id=None,
                eos_token_id=None,
            )
        )
        self.state_proj = nn.Linear(config.state_dim, hidden)
        self.cognition_token = nn.Parameter(torch.randn(1, config.cognition_tokens, hidden) * 0.02)
        self.cognition_proj = nn.Linear(hidden, config.head_hidden_size)
        self.action_head = DiffusionActionHead(config)
        self.register_buffer(
            "alphas_cumprod",
            squared_cosine_alphas_cumprod(config.train_timesteps),
            persistent=False,
        )

    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens [B, V*K, hidden] of images [B, 3, H, V*W] in [0, 1]."""
        views = self.config.num_views
        batch = images.shape[0]
        per_view = images.unflatten(-1, (views, -1)).permute(0, 3, 1, 2, 4).flatten(0, 1)
        per_view = per_view * 2.0 - 1.0
        if self.config.vision == "keypoints":
            tokens = self.vision(per_view)
        else:
            tokens = self.vision_proj(self.vision(per_view).last_hidden_state)
        tokens = tokens.unflatten(0, (batch, views)) + self.view_embedding
        return tokens.flatten(1, 2)

    def encode(self, batch: Batch) -> torch.Tensor:
        """The conditioning latent z [B, C, head_hidden] (output of the interface layer)."""
        input_ids, text_mask = trim_padding(batch.input_ids, batch.attention_mask)
        return self.encode_tokens(batch.images, input_ids, text_mask, batch.state)

    def encode_tokens(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        text_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> torch.Tensor:
        """z of images, prompt tokens without trailing padding columns, and state."""
        visual = self.visual_tokens(images)
        text = self.language_model.embed_tokens(input_ids)
        state = self.state_proj(state)[:, None, :]
        cognition = self.cognition_token.expand(visual.shape[0], -1, -1)
        embeds = torch.cat([visual, text, state, cognition], dim=1)
        # Only instruction padding is masked: visual, state and cognition tokens all attend.
        mask = F.pad(text_mask, (visual.shape[1], 1 + cognition.shape[1]), value=1)
        # Padding takes no position, so a row's output does not depend on its padding.
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
        hidden = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions
        ).last_hidden_state
        # Causal attention: the cognition tokens, last, have seen every other token.
        return self.cognition_proj(hidden[:, -cognition.shape[1] :])

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        state: torch.Tensor,
        noisy_actions: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """One denoising step: predicted noise [B, H, D] (the unit calibration runs)."""
        z = self.encode(Batch(images, input_ids, attention_mask, state))
        return self.action_head(noisy_actions, timesteps, z)


class CogactAdapter(FamilyAdapter):
    """Family adapter of CogactModel."""

    name = "cogact"

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
        """The family config of a new model: preset `size` with `overrides` applied."""
        return CogactConfig(
            vocab_size=vocab_size,
            max_text_length=max_text_length,
            state_dim=state_dim,
            action_dim=action_dim,
            horizon=horizon,
            image_size=image_size,
            num_views=num_views,
            **preset(SIZES, self.name, size, overrides),
        ).to_dict()

    def build(self, config: dict[str, Any]) -> CogactModel:
        """A freshly initialised CogactModel."""
        return CogactModel(CogactConfig.from_dict(config))

    def loss(
        self,
        model: nn.Module,
        batch: Batch,
        dim_weights: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Epsilon-prediction MSE, `noise_samples` noise draws per observation, dims weighted."""
        if batch.actions is None:
            raise ModelError("cogact loss needs batch.actions")
        repeats = model.config.noise_samples
        clean = batch.actions.repeat_interleave(repeats, dim=0)
        mask = (
            None if batch.action_mask is None else batch.action_mask.repeat_interleave(repeats, 0)
        )
        z = model.encode(batch).repeat_interleave(repeats, dim=0)
        if model.training and model.config.condition_dropout > 0:  # guidance: unconditional
            keep = torch.rand(z.shape[0], generator=generator) >= model.config.condition_dropout
            z = z * keep.to(z)[:, None, None]
        timesteps = torch.randint(
            0, model.config.train_timesteps, (clean.shape[0],), generator=generator
        ).to(clean.device)
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        alpha_bar = model.alphas_cumprod[timesteps][:, None, None]
        noisy = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
        predicted = model.action_head(noisy, timesteps, z)
        return weighted_mse(predicted, noise, mask, dim_weights)

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        batch: Batch,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) over `num_steps` evenly spaced timesteps, x0 in [-1, 1],
        with classifier-free guidance where the config's guidance_scale is not 1."""
        config = model.config
        steps = min(num_steps or config.sample_steps, config.train_timesteps)
        z = model.encode(batch.to_dtype(compute_dtype(model)))
        shape = (z.shape[0], config.horizon, config.action_dim)
        x = torch.randn(shape, generator=generator).to(z)
        alphas = model.alphas_cumprod
        return ddim_sample(model.action_head, z, x, alphas, steps, config.guidance_scale).float()

    def interface_layers(self, model: nn.Module) -> list[str]:
        """cognition_proj: its output z is the action head's only view of the backbone."""
        return ["cognition_proj"]

    def prefix_modules(self, model: nn.Module) -> list[str]:
        """The vision encoder (with its projector) and the Llama language model."""
        vision = ["vision"] + (["vision_proj"] if hasattr(model, "vision_proj") else [])
        return [*vision, "language_model"]

    def action_head_layers(self, model: nn.Module) -> list[str]:
        """Every nn.Linear of the DiT action head."""
        return linear_names(model, "action_head")
