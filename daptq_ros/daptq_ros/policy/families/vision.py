"""Compact visual tokens: a small conv stem whose spatial-softmax keypoints are K tokens per view.

Why not ViT patches: on 2 CPU cores a from-scratch transformer VLA gets too few optimiser steps
with 36-64 patch tokens per camera, and the task's bottleneck is localising a small object
precisely (SIM_NOTES.md). A spatial softmax gives each token an attention map over the feature
grid (H/4 x W/4); the token carries the expected (x, y) of that map, at sub-cell precision, and
the feature vector pooled under it.

The attention logits are multiplied by a learned per-keypoint sharpness (a spatial-softmax
temperature, as in Levine et al. 2016), initialised at 10 so that the maps start peaked: with
plain logits they stayed near uniform (mean entropy 5.8-6.0 of the 6.36 maximum over the 24x24
grid in the first default models; 3.7 in pi0's with the sharpness). Either way a linear probe
reads the goal's position from the tokens (R^2 >= 0.98, bench/stem_probe.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class KeypointStem(nn.Module):
    """Images [N, 3, H, W] in [-1, 1] (as SigLIP) -> `num_tokens` tokens of `hidden_size` each."""

    def __init__(
        self,
        channels: Sequence[int],
        num_tokens: int,
        hidden_size: int,
        sharpness: float | None = None,
    ) -> None:
        """`sharpness`: initial logit scale of every keypoint, learned; None keeps the logits
        unscaled (models saved before the scale existed)."""
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for index, out_channels in enumerate(channels):
            # Stride 2 on the first two layers only: the grid stays fine enough (H/4) for the
            # keypoints to resolve a few-pixel object.
            stride = 2 if index < 2 else 1
            kernel = 5 if index == 0 else 3
            layers.append(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2))
            in_channels = out_channels
            if index == len(channels) - 1:
                # One norm, on the features the keypoints read, keeps their logits on one
                # scale; norms on the large early maps cost ~25% of the stem's step time.
                layers.append(nn.GroupNorm(1, out_channels))
            layers.append(nn.ReLU())
        self.convs = nn.Sequential(*layers)
        self.keypoints = nn.Conv2d(in_channels, num_tokens, kernel_size=1)
        # One projection per keypoint (a grouped 1x1 conv), not one shared Linear: attention
        # starts out uniform, and a uniform sum of shared projections mixes the keypoints'
        # positions beyond recovery; with per-keypoint weights the sum keeps each position.
        self.to_token = nn.Conv1d(
            num_tokens * (in_channels + 2), num_tokens * hidden_size, 1, groups=num_tokens
        )
        self.num_tokens = num_tokens
        self.log_sharpness = (
            None
            if sharpness is None
            else nn.Parameter(torch.full((num_tokens,), math.log(sharpness)))
        )

    def attention(self, features: torch.Tensor) -> torch.Tensor:
        """Each keypoint's softmax map over `convs` features [N, C, h, w]: [N, K, h*w]."""
        logits = self.keypoints(features).flatten(2)
        if self.log_sharpness is not None:
            logits = logits * self.log_sharpness.exp()[:, None]
        return F.softmax(logits, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens [N, num_tokens, hidden_size]."""
        features = self.convs(images)  # [N, C, h, w]
        h, w = features.shape[-2:]
        attention = self.attention(features)
        pooled = attention @ features.flatten(2).transpose(1, 2)  # [N, K, C]
        ys = torch.linspace(-1.0, 1.0, h, device=images.device, dtype=features.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=images.device, dtype=features.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)
        positions = attention @ grid  # [N, K, 2]: expected (x, y) of each keypoint
        keypoints = torch.cat([pooled, positions], dim=-1).flatten(1)[:, :, None]
        return self.to_token(keypoints).view(images.shape[0], self.num_tokens, -1)
