"""A model input batch (normalised tensors) and the prompt-padding trim both families use.

Torch only: the OpenVINO runtime builds its inputs from these without importing a family's
architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    """One model input batch; actions and their mask only when training."""

    images: torch.Tensor  # [B, 3, H, V*W] float in [0, 1]: V camera views tiled horizontally
    input_ids: torch.Tensor  # [B, L] int64 instruction tokens
    attention_mask: torch.Tensor  # [B, L] int64, 1 = real token
    state: torch.Tensor  # [B, S] normalised
    actions: torch.Tensor | None = None  # [B, H, D] normalised to [-1, 1]
    action_mask: torch.Tensor | None = None  # [B, H] bool, False where the chunk was padded

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device`."""
        moved = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
            for f in fields(self)
        }
        return Batch(**moved)

    def to_dtype(self, dtype: torch.dtype) -> Batch:
        """The same batch with its floating-point tensors (images, state, actions) in `dtype`."""
        if self.images.dtype == dtype and self.state.dtype == dtype:
            return self
        cast = {
            f.name: value.to(dtype) if value is not None and value.is_floating_point() else value
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }
        return Batch(**cast)


def trim_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing padding columns no row uses (tokens are right-padded).

    Instructions are short and padded to a fixed length; trimming saves backbone work. Both
    families give positions from the mask's cumulative sum, so the outputs do not change.
    """
    length = max(1, int(attention_mask.sum(dim=1).max()))
    return input_ids[:, :length], attention_mask[:, :length]
