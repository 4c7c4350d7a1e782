"""What every VLA family provides: build, training loss, sampler, and its DA-PTQ layer names.

A family adapter is stateless; the model it builds is a plain nn.Module whose `config` holds
the family config (the JSON of config.json). Batches are normalised tensors (see `Batch`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from daptq_ros.errors import ModelError
from daptq_ros.policy.batch import Batch
from daptq_ros.quant.deploy import DeployedLinear


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs must have: that of every floating parameter outside the deployed
    Linears if they share one (a whole-model bfloat16 deployment), else float32 (deployed
    Linears convert on their own, whatever their kernel's dtype)."""
    dtypes = {
        p.dtype
        for module in model.modules()
        if not isinstance(module, DeployedLinear)
        for p in module.parameters(recurse=False)
        if p.is_floating_point()
    }
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def weighted_mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    dim_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L = mean over valid (b, h) of (1/D) sum_j s_j (pred_j - target_j)^2 (METHOD.md §4.2).

    With s_j = 1 (dim_weights None) this is the plain MSE; DA-PTQ passes drift scores s_j
    normalised to mean 1, so the loss keeps its scale.
    """
    squared = (prediction - target).pow(2)  # [B, H, D]
    if dim_weights is not None:
        squared = squared * dim_weights.to(squared)
    per_step = squared.mean(dim=-1)  # [B, H]
    if mask is None:
        return per_step.mean()
    mask = mask.to(per_step)
    return (per_step * mask).sum() / mask.sum().clamp_min(1.0)


class FamilyAdapter(ABC):
    """Build / loss / sample / layer names for one family of VLA models."""

    name: ClassVar[str]

    @abstractmethod
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
        """The family config (config.json) of a new model: preset `size` plus `overrides`."""

    @abstractmethod
    def build(self, config: dict[str, Any]) -> nn.Module:
        """A freshly initialised model from a family config."""

    @abstractmethod
    def loss(
        self,
        model: nn.Module,
        batch: Batch,
        dim_weights: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The action head's training loss, each action dimension j weighted by s_j."""

    @abstractmethod
    def sample(
        self,
        model: nn.Module,
        batch: Batch,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Normalised action chunks [B, H, D] from `num_steps` denoising steps."""

    @abstractmethod
    def interface_layers(self, model: nn.Module) -> list[str]:
        """Names of the nn.Linear layers that carry the conditioning latent z (CSRC targets)."""

    @abstractmethod
    def action_head_layers(self, model: nn.Module) -> list[str]:
        """Names of the action head's nn.Linear layers, in forward order."""

    @abstractmethod
    def prefix_modules(self, model: nn.Module) -> list[str]:
        """Modules that run once per chunk to encode the observation (vision, language
        backbone); the rest of `sample` is the action head's denoising loop."""

    def horizon_setting(self, horizon: int) -> dict[str, Any]:
        """The config setting that gives `horizon` rows per chunk (a fine-tune to another
        horizon checks that the weights still fit it)."""
        return {"horizon": horizon}


def preset(
    sizes: dict[str, dict[str, Any]], family: str, size: str, overrides: dict | None
) -> dict:
    """Preset `size` of a family's SIZES with `overrides` (keys of the preset only) applied."""
    if size not in sizes:
        raise ModelError(f"{family} has no size {size!r}; choose one of {', '.join(sizes)}")
    unknown = sorted(set(overrides or {}) - set(sizes[size]))
    if unknown:
        raise ModelError(
            f"{family}: unknown model setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(sizes[size]))}"
        )
    return {**sizes[size], **(overrides or {})}


def linear_names(model: nn.Module, prefix: str) -> list[str]:
    """Names of every nn.Linear under module `prefix` ("" = the whole model), in order."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and (not prefix or name.startswith(prefix + "."))
    ]
