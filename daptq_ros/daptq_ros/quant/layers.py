"""The simulated quantized Linear: integer codes + scales, run as exact fake-quant arithmetic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daptq_ros.quant.formats import (
    QuantizedWeight,
    WeightFormat,
    dequantize,
    fake_quantize_activation_groups,
    fake_quantize_activation_per_token,
)


class QuantLinear(nn.Module):
    """y = Q_a(x / s_in) @ dequant(W_q)^T + b, with W_q stored as codes (equation 1 of formats).

    `input_scale` (s_in, per input channel) carries SmoothQuant/AWQ scaling: the weight was
    multiplied by s_in before quantization, so dividing the input keeps y unchanged in exact
    arithmetic. `activation_bits=8` adds dynamic per-token int8 activation quantization, or per
    (token, `activation_group` channels) as a runtime computes it (policy.runtime_openvino).
    """

    def __init__(
        self,
        qweight: QuantizedWeight,
        bias: torch.Tensor | None,
        activation_bits: int | None = None,
        input_scale: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.codes.shape
        self.fmt: WeightFormat = qweight.fmt
        self.activation_bits = activation_bits
        self.register_buffer("codes", qweight.codes.to(torch.uint8))
        self.register_buffer("scale", qweight.scale.float())
        self.register_buffer("zero", qweight.zero.float())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.float())
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        )
        self.activation_group: int | None = None
        self._weight_hat: torch.Tensor | None = None

    @property
    def qweight(self) -> QuantizedWeight:
        """The stored codes, scales and zero points."""
        return QuantizedWeight(self.codes, self.scale, self.zero, self.fmt)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the codes represent (cached; codes never change after creation)."""
        if self._weight_hat is None:
            self._weight_hat = dequantize(self.codes, self.scale, self.zero)
        return self._weight_hat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale.to(x.dtype)
        if self.activation_bits and self.activation_group:
            x = fake_quantize_activation_groups(x, self.activation_group, self.activation_bits)
        elif self.activation_bits:
            x = fake_quantize_activation_per_token(x, self.activation_bits)
        weight = self.dequantized_weight().to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        act = f", activation_bits={self.activation_bits}" if self.activation_bits else ""
        scaled = ", input_scale" if self.input_scale is not None else ""
        return f"{self.in_features}, {self.out_features}, {self.fmt.describe()}{act}{scaled}"
