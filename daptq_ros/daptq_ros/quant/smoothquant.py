"""SmoothQuant (Xiao et al., ICML 2023): migrate activation outliers into the weights, then W8A8.

Eq. (4) of the paper: per input channel j,

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)

and Y = (X diag(s)^-1) (diag(s) W^T): the scaled activations have flatter channels and are
easier to quantize per token; the weights absorb the range and are quantized per channel.
We keep the division by s as the layer's `input_scale` (torchao's act_pre_scale) instead of
folding it into a preceding LayerNorm, so any Linear can be smoothed.
"""

from __future__ import annotations

import torch
from torch import nn

from daptq_ros.quant.calibration import LayerStats
from daptq_ros.quant.config import LayerSpec, QuantConfig
from daptq_ros.quant.formats import quantize_weight
from daptq_ros.quant.layers import QuantLinear

NEEDS_CALIBRATION = True
_EPS = 1e-5


def smoothing_scales(act_abs_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha) (eq. 4), clamped away from zero."""
    w_abs_max = weight.detach().float().abs().amax(dim=0).clamp(min=_EPS)
    s = act_abs_max.clamp(min=_EPS).pow(alpha) / w_abs_max.pow(1.0 - alpha)
    return s.clamp(min=_EPS)


def quantize_linear(
    linear: nn.Linear, spec: LayerSpec, stats: LayerStats | None, config: QuantConfig
) -> QuantLinear:
    """Smooth with s (eq. 4), quantize diag(s)-scaled weights; inputs are divided by s."""
    assert stats is not None and stats.abs_max is not None
    s = smoothing_scales(stats.abs_max, linear.weight, float(config.method_arg("alpha")))
    qweight = quantize_weight(linear.weight.detach().float() * s, spec.weight_format())
    return QuantLinear(qweight, linear.bias, spec.activation_bits, input_scale=s)
