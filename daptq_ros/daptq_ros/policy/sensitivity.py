"""Layer sensitivity phi_l under the drift-weighted loss: DA-PTQ's ranking for bit allocation.

phi_l = mean over R calibration batches of mean_{w in W_l} |dL_drift / dw| (METHOD.md §4.3),
with L_drift the family's training loss whose action dimensions are weighted by the drift
scores s_j (§4.2). First order only: one backward pass per batch, no Hessian.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from tqdm import tqdm

from daptq_ros.errors import PolicyError
from daptq_ros.policy.families import Batch, FamilyAdapter
from daptq_ros.policy.families.base import linear_names


def layer_sensitivities(
    adapter: FamilyAdapter,
    model: nn.Module,
    batches: Iterable[Batch],
    dim_weights: torch.Tensor | None,
    layer_names: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """phi_l for every nn.Linear of `model` in model order, or for the `layer_names` given.

    `dim_weights` [D] are the drift scores s_j (None: the plain loss). The model runs in eval
    mode (no dropout) with gradients on the chosen weights only; its mode and requires_grad
    flags are restored afterwards and no .grad is left behind. Noise and diffusion times come
    from one torch Generator seeded with `seed`, so the result is deterministic for a seed.
    """
    modules = dict(model.named_modules())
    names = linear_names(model, "") if layer_names is None else list(layer_names)
    if bad := [n for n in names if not isinstance(modules.get(n), nn.Linear)]:
        raise PolicyError(
            f"layers {bad} are not nn.Linear modules of the model; pass names from "
            "the model's named_modules() (e.g. the adapter's action_head_layers)"
        )
    if not names:
        raise PolicyError("the model has no nn.Linear layer to rank")
    weights = [modules[n].weight for n in names]
    device = weights[0].device
    # Sums stay on the device: no host sync per layer and batch.
    totals = {n: torch.zeros((), dtype=torch.float64, device=device) for n in names}
    generator = torch.Generator().manual_seed(seed)  # the families draw noise on the CPU
    count = 0
    with _gradients_on(model, weights):
        for batch in tqdm(batches, desc="layer sensitivity", unit="batch", disable=not progress):
            if batch.actions is None:
                raise PolicyError(
                    "a calibration batch has no actions; build the batches from demonstrations "
                    "(daptq_ros.policy.calibration.calibration_batches)"
                )
            if dim_weights is not None:
                _check_dim_weights(dim_weights, batch.actions.shape[-1])
            loss = adapter.loss(model, batch.to(device), dim_weights, generator)
            # A layer the loss never reaches gets phi = 0 (e.g. pi0's last backbone layer past
            # its k/v projections: the action expert reads only the prefix keys and values).
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
            for name, grad in zip(names, grads, strict=True):
                if grad is not None:
                    totals[name] += grad.detach().abs().mean(dtype=torch.float64)
            count += 1
    if count == 0:
        raise PolicyError("no calibration batches; pass at least one batch with actions")
    return {name: float(total) / count for name, total in totals.items()}


@contextmanager
def _gradients_on(model: nn.Module, weights: list[torch.Tensor]) -> Iterator[None]:
    """Eval mode, requires_grad on `weights` only; the previous mode and flags come back."""
    was_training = model.training
    flags = {param: param.requires_grad for param in model.parameters()}
    try:
        model.eval()
        for param in flags:
            param.requires_grad_(False)
        for weight in weights:
            weight.requires_grad_(True)
        yield
    finally:
        for param, flag in flags.items():
            param.requires_grad_(flag)
        model.train(was_training)


def _check_dim_weights(dim_weights: torch.Tensor, action_dim: int) -> None:
    """The drift scores must give one finite, non-negative weight per action dimension."""
    if dim_weights.shape != (action_dim,):
        raise PolicyError(
            f"dim_weights has shape {tuple(dim_weights.shape)} for {action_dim} action "
            "dimensions; compute the drift scores with the model's action names"
        )
    if not torch.isfinite(dim_weights).all() or (dim_weights < 0).any():
        raise PolicyError(f"dim_weights must be finite and >= 0, got {dim_weights.tolist()}")
