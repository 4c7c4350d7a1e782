"""RTN: round-to-nearest with min/max scales per tensor, channel or group (the plain baseline)."""

from __future__ import annotations

from torch import nn

from daptq_ros.quant.calibration import LayerStats
from daptq_ros.quant.config import LayerSpec, QuantConfig
from daptq_ros.quant.formats import quantize_weight
from daptq_ros.quant.layers import QuantLinear

NEEDS_CALIBRATION = False


def quantize_linear(
    linear: nn.Linear, spec: LayerSpec, stats: LayerStats | None, config: QuantConfig
) -> QuantLinear:
    """W_q = clamp(round(W / s) + z) with s, z from each group's min and max."""
    qweight = quantize_weight(linear.weight, spec.weight_format())
    return QuantLinear(qweight, linear.bias, spec.activation_bits)
