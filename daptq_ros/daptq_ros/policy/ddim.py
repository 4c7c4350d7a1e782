"""The cogact family's sampler without its model: the squared-cosine schedule, deterministic
DDIM (eta = 0) and classifier-free guidance over any noise predictor.

Torch only: the torch model (families/cogact.py) and the OpenVINO runtime, which never builds
it (runtime_openvino.py), sample through the same loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# (noisy chunks [B, H, D], integer timesteps [B], condition z [B, C, hidden]) -> noise [B, H, D]
NoiseHead = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def squared_cosine_alphas_cumprod(timesteps: int) -> torch.Tensor:
    """alpha-bar_t of the squared-cosine schedule (Nichol & Dhariwal 2021, eq. 17)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1.0 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999)
        for i in range(timesteps)
    ]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), dim=0).float()


def guided_noise(
    head: NoiseHead, x: torch.Tensor, t: int, z: torch.Tensor, scale: float
) -> torch.Tensor:
    """The head's noise prediction at timestep t, with classifier-free guidance `scale` (the
    unconditional branch sees z = 0, as training drops the condition)."""
    if scale == 1.0:
        return head(x, torch.full((x.shape[0],), t, device=z.device), z)
    both = head(
        torch.cat([x, x]),
        torch.full((2 * x.shape[0],), t, device=z.device),
        torch.cat([z, torch.zeros_like(z)]),
    )
    conditional, unconditional = both.chunk(2)
    return unconditional + scale * (conditional - unconditional)


def ddim_sample(
    head: NoiseHead,
    z: torch.Tensor,
    x: torch.Tensor,
    alphas: torch.Tensor,
    steps: int,
    guidance_scale: float,
) -> torch.Tensor:
    """Deterministic DDIM from noise `x` over `steps` evenly spaced timesteps of the schedule
    `alphas` (alpha-bar per training timestep), x0 clipped to [-1, 1]."""
    train_timesteps = alphas.shape[0]
    timesteps = torch.linspace(train_timesteps - 1, 0, steps).round().long().tolist()
    for index, t in enumerate(timesteps):
        alpha_t = alphas[t]
        alpha_prev = alphas[timesteps[index + 1]] if index + 1 < steps else alphas.new_ones(())
        eps = guided_noise(head, x, t, z, guidance_scale)
        clean = ((x - (1 - alpha_t).sqrt() * eps) / alpha_t.sqrt()).clamp(-1.0, 1.0)
        # Re-derive the noise from the clipped estimate so both stay consistent (as DDIM does).
        eps = (x - alpha_t.sqrt() * clean) / (1 - alpha_t).sqrt()
        x = alpha_prev.sqrt() * clean + (1 - alpha_prev).sqrt() * eps
    return x
