"""AWQ (Lin et al., MLSys 2024): activation-aware per-input-channel scaling, searched on data.

Salient weight channels are those that multiply large activations. AWQ scales them up before
quantization and divides the input by the same factor (eq. 4-5 of the paper):

    s = s_X^alpha,  s_X = mean|X| per input channel,
    alpha* = argmin_alpha || Q(W diag(s)) (diag(s)^-1 X) - W X ||^2     (grid over [0, 1))

s is normalised by sqrt(max(s) * min(s)) so it stays centred around 1. The output is the
quantized diag(s)-scaled weight with s kept as the layer's input scale. (The paper's optional
weight-clipping search is not applied.)
"""

from __future__ import annotations

import torch
from torch import nn

from daptq_ros.quant.calibration import LayerStats
from daptq_ros.quant.config import LayerSpec, QuantConfig
from daptq_ros.quant.formats import WeightFormat, fake_quantize_weight, quantize_weight
from daptq_ros.quant.layers import QuantLinear

NEEDS_CALIBRATION = True


def search_scales(
    weight: torch.Tensor,
    x: torch.Tensor,
    act_abs_mean: torch.Tensor,
    fmt: WeightFormat,
    n_grid: int,
) -> torch.Tensor:
    """Grid-search alpha in [0, 1) for s = s_X^alpha minimising the layer's output error."""
    w = weight.detach().float()
    reference = x @ w.T
    best_error, best_s = float("inf"), torch.ones_like(act_abs_mean)
    for step in range(n_grid):
        alpha = step / n_grid
        s = act_abs_mean.clamp(min=1e-4).pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        w_hat = fake_quantize_weight(w * s, fmt)
        error = (((x / s) @ w_hat.T) - reference).pow(2).mean().item()
        if error < best_error:
            best_error, best_s = error, s
    return best_s


def quantize_linear(
    linear: nn.Linear, spec: LayerSpec, stats: LayerStats | None, config: QuantConfig
) -> QuantLinear:
    """Search s (eq. 5), quantize W diag(s); inputs are divided by s at run time."""
    assert stats is not None
    fmt = spec.weight_format()
    s = search_scales(
        linear.weight, stats.sample(), stats.abs_mean, fmt, int(config.method_arg("n_grid"))
    )
    qweight = quantize_weight(linear.weight.detach().float() * s, fmt)
    return QuantLinear(qweight, linear.bias, spec.activation_bits, input_scale=s)
