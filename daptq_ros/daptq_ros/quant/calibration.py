"""Collect per-layer input statistics from calibration batches with forward hooks.

Every method reads what it needs from one pass over the full-precision model:
SmoothQuant the per-channel max |x|, AWQ the mean |x| and a row sample of x, GPTQ the
Hessian H = 2/n * sum x x^T. Calibration items are whatever the model takes: a tensor
(model(x)), a tuple (model(*x)) or a mapping (model(**x)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from daptq_ros.errors import DaptqError


@dataclass
class LayerStats:
    """Running statistics of one Linear layer's inputs (rows = tokens)."""

    in_features: int
    keep_hessian: bool
    max_samples: int
    n_rows: int = 0
    abs_max: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None
    xtx: torch.Tensor | None = None
    samples: list[torch.Tensor] = field(default_factory=list)
    _sampled_rows: int = 0

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of inputs [..., in_features]."""
        rows = x.detach().reshape(-1, self.in_features).float()
        batch_abs = rows.abs()
        if self.abs_max is None:
            self.abs_max = batch_abs.amax(dim=0)
            self.abs_sum = batch_abs.sum(dim=0)
        else:
            self.abs_max = torch.maximum(self.abs_max, batch_abs.amax(dim=0))
            self.abs_sum = self.abs_sum + batch_abs.sum(dim=0)
        if self.keep_hessian:
            gram = rows.T @ rows
            self.xtx = gram if self.xtx is None else self.xtx + gram
        if self._sampled_rows < self.max_samples:
            take = rows[: self.max_samples - self._sampled_rows]
            self.samples.append(take.clone())
            self._sampled_rows += take.shape[0]
        self.n_rows += rows.shape[0]

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean |x| per input channel."""
        assert self.abs_sum is not None
        return self.abs_sum / max(self.n_rows, 1)

    def hessian(self) -> torch.Tensor:
        """GPTQ's H = 2/n * X X^T over all calibration rows."""
        if self.xtx is None:
            raise DaptqError("no Hessian was collected: calibrate with keep_hessian=True")
        return 2.0 * self.xtx / max(self.n_rows, 1)

    def sample(self) -> torch.Tensor:
        """The first `max_samples` input rows seen, [rows, in_features]."""
        return torch.cat(self.samples)


def run_model(model: nn.Module, item: Any) -> Any:
    """Call the model on one calibration item (tensor, tuple, mapping, or a callable).

    A callable item is called with the model: models whose forward needs more than its
    inputs (a VLA's loss or sampler) pass their calibration batches that way.
    """
    if callable(item) and not isinstance(item, torch.Tensor):
        return item(model)
    if isinstance(item, dict):
        return model(**item)
    if isinstance(item, (tuple, list)):
        return model(*item)
    return model(item)


def run_with_hooks(
    model: nn.Module,
    calibration: Iterable[Any],
    hooks: Mapping[str, Callable[[nn.Module, Any, Any], None]],
    run: Callable[[nn.Module, Any], Any] = run_model,
) -> None:
    """Run every calibration item with the forward hooks attached to the named modules."""
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook) for name, hook in hooks.items()]
    n_items = 0
    try:
        for item in tqdm(calibration, desc="calibration", unit="batch", leave=False):
            run(model, item)
            n_items += 1
    finally:
        for handle in handles:
            handle.remove()
    if n_items == 0:
        raise DaptqError("the calibration set is empty: pass at least one batch of model inputs")


@torch.no_grad()
def collect_layer_stats(
    model: nn.Module,
    calibration: Iterable[Any],
    layer_names: Iterable[str],
    keep_hessian: bool = False,
    max_samples: int = 4096,
) -> dict[str, LayerStats]:
    """One forward pass over `calibration`, recording the inputs of the named Linear layers."""
    modules = dict(model.named_modules())
    stats = {
        name: LayerStats(modules[name].in_features, keep_hessian, max_samples)
        for name in layer_names
    }
    run_with_hooks(model, calibration, {name: _make_hook(s) for name, s in stats.items()})
    return stats


def _make_hook(layer_stats: LayerStats):
    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        layer_stats.update(inputs[0])

    return hook
