"""Uniform integer quantization formats and the arithmetic that maps floats to codes and back.

A weight is stored as unsigned codes q in [0, 2^b - 1] with per-group scale s and zero point z:

    w_hat = (q - z) * s                                        (1)

symmetric:  s = max|w| / (2^(b-1) - 1),  z = 2^(b-1)            (zero is exact, range centred)
asymmetric: s = (max(w, 0) - min(w, 0)) / (2^b - 1),  z = round(-min(w, 0) / s)

Groups run along the input dimension: "tensor" (one group), "channel" (one per output row) or
"group" (rows split into blocks of `group_size` inputs). Scales are rounded up to bfloat16 because
the deployed kernels (tinygemm int4, int8pack) hold them in bfloat16: the simulated arithmetic is
then the deployed arithmetic.

Activations use dynamic symmetric per-token int8, with torchao's convention
s = max|x| / 127.5 and codes clamped to [-128, 127], so simulated and deployed W8A8 agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Granularity = Literal["tensor", "channel", "group"]
GRANULARITIES: tuple[str, ...] = ("tensor", "channel", "group")
WEIGHT_INT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
_EPS = 1e-8


@dataclass(frozen=True)
class WeightFormat:
    """How one weight matrix is quantized: bit width, symmetry and grouping."""

    bits: int
    symmetric: bool = False
    granularity: Granularity = "group"
    group_size: int = 128

    @property
    def qmax(self) -> int:
        """The largest code, 2^b - 1."""
        return (1 << self.bits) - 1

    def n_groups(self, in_features: int) -> int:
        """Number of scale groups along the input dimension of one row."""
        return in_features // self.group_size if self.granularity == "group" else 1

    def describe(self) -> str:
        """Short human label, e.g. 'W4 asym g128'."""
        grouping = f"g{self.group_size}" if self.granularity == "group" else self.granularity
        return f"W{self.bits} {'sym' if self.symmetric else 'asym'} {grouping}"


@dataclass
class QuantizedWeight:
    """Codes, scales and zero points of one [out, in] weight (equation 1)."""

    codes: torch.Tensor  # uint8 [out, in]
    scale: torch.Tensor  # float32 [out, groups]
    zero: torch.Tensor  # float32 [out, groups], integer valued
    fmt: WeightFormat

    def dequantize(self) -> torch.Tensor:
        """w_hat = (q - z) * s, as float32 [out, in]."""
        return dequantize(self.codes, self.scale, self.zero)


def _grouped(w: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """View an [out, in] weight as [out, groups, group_len] (tensor granularity: one group)."""
    out_features, in_features = w.shape
    if fmt.granularity == "tensor":
        return w.reshape(1, 1, -1)
    return w.reshape(out_features, fmt.n_groups(in_features), -1)


def expand_groups(per_group: torch.Tensor, in_features: int) -> torch.Tensor:
    """Repeat [out, groups] parameters to [out, in] so they broadcast against the weight."""
    return per_group.repeat_interleave(in_features // per_group.shape[1], dim=1)


def to_bf16_grid(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values to the nearest bfloat16 value, kept as float32."""
    return x.to(torch.bfloat16).to(torch.float32)


def bf16_ceil(x: torch.Tensor) -> torch.Tensor:
    """The smallest bfloat16 value >= x (x > 0), as float32.

    Scales are rounded up, never down, so the quantization grid still covers the group's
    range and no value is clipped by the rounding.
    """
    rounded = x.to(torch.bfloat16)
    next_up = (rounded.view(torch.int16) + 1).view(torch.bfloat16)
    return torch.where(rounded.float() < x, next_up, rounded).float()


def choose_qparams(w: torch.Tensor, fmt: WeightFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max scale and zero point per group of an [out, in] weight: ([out, G], [out, G])."""
    g = _grouped(w.detach().float(), fmt)
    lo = g.amin(dim=-1).clamp(max=0.0)
    hi = g.amax(dim=-1).clamp(min=0.0)
    return qparams_from_range(lo, hi, fmt, out_features=w.shape[0])


def qparams_from_range(
    lo: torch.Tensor, hi: torch.Tensor, fmt: WeightFormat, out_features: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range [lo, hi] (lo <= 0 <= hi) onto the codes."""
    if fmt.symmetric:
        half = 1 << (fmt.bits - 1)
        scale = torch.maximum(-lo, hi) / (half - 1)
        scale = bf16_ceil(scale.clamp(min=_EPS))
        zero = torch.full_like(scale, float(half))
    else:
        scale = bf16_ceil(((hi - lo) / fmt.qmax).clamp(min=_EPS))
        zero = torch.round(-lo / scale).clamp(0, fmt.qmax)
    if fmt.granularity == "tensor":
        scale, zero = scale.expand(out_features, 1), zero.expand(out_features, 1)
    return scale.contiguous(), zero.contiguous()


def round_to_codes(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmax: int
) -> torch.Tensor:
    """q = clamp(round(w / s) + z, 0, qmax); scale/zero broadcast against w."""
    return torch.clamp(torch.round(w / scale) + zero, 0, qmax)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """w_hat = (q - z) * s for [out, in] codes and [out, G] group parameters."""
    in_features = codes.shape[1]
    return (codes.float() - expand_groups(zero, in_features)) * expand_groups(scale, in_features)


def quantize_weight(
    w: torch.Tensor,
    fmt: WeightFormat,
    scale: torch.Tensor | None = None,
    zero: torch.Tensor | None = None,
) -> QuantizedWeight:
    """Round-to-nearest quantization of an [out, in] weight (min/max parameters unless given)."""
    if scale is None or zero is None:
        scale, zero = choose_qparams(w, fmt)
    in_features = w.shape[1]
    codes = round_to_codes(
        w.detach().float(),
        expand_groups(scale, in_features),
        expand_groups(zero, in_features),
        fmt.qmax,
    )
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, fmt)


def fake_quantize_weight(w: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """Quantize then dequantize (the float weight the format really represents)."""
    return quantize_weight(w, fmt).dequantize().to(w.dtype)


def fake_quantize_activation_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Dynamic symmetric per-token quantize-dequantize of activations along the last dim."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    absmax = x.detach().abs().amax(dim=-1, keepdim=True).float()
    scale = (absmax / ((qmax - qmin) / 2)).clamp(min=torch.finfo(torch.float32).eps)
    codes = torch.clamp(torch.round(x.float() / scale), qmin, qmax)
    return (codes * scale).to(x.dtype)


def fake_quantize_activation_groups(x: torch.Tensor, group: int, bits: int = 8) -> torch.Tensor:
    """Dynamic symmetric quantize-dequantize per (token, `group` consecutive channels), with
    s = max|x| / qmax and round-half-to-even: the arithmetic of OpenVINO's and ONNX Runtime's
    dynamic int8 activations (the per-token variant above is the torch int8 kernel's)."""
    qmax = (1 << (bits - 1)) - 1
    grouped = x.float().unflatten(-1, (-1, group))
    scale = grouped.detach().abs().amax(dim=-1, keepdim=True) / qmax
    scale = scale.clamp(min=torch.finfo(torch.float32).eps)
    codes = torch.clamp(torch.round(grouped / scale), -qmax, qmax)
    return (codes * scale).flatten(-2).to(x.dtype)
