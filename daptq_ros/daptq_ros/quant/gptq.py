"""GPTQ (Frantar et al., ICLR 2023): column-by-column quantization with Hessian error feedback.

For a layer with calibration inputs X, GPTQ minimises ||W X - W_q X||^2 using H = 2 X X^T
(Algorithm 1 of the paper). Columns are quantized left to right; the error of column i,
err = (w_i - q_i) / [H^-1]_ii, is spread onto the not-yet-quantized columns through row i of
the upper Cholesky factor of H^-1 (eq. 3 with the Cholesky reformulation, §4 "Step 3").
Updates inside a block of B columns are immediate; the rest of the matrix is updated once per
block ("lazy batch updates", §4 "Step 2"). Group scales are chosen when the first column of a
group is reached, from the weights as updated so far. Dampening: H += percdamp * mean(diag H) I.
Statistics come from the full-precision model in one pass (no sequential re-calibration);
act-order is not applied.
"""

from __future__ import annotations

import torch
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.quant.calibration import LayerStats
from daptq_ros.quant.config import LayerSpec, QuantConfig
from daptq_ros.quant.formats import (
    QuantizedWeight,
    WeightFormat,
    choose_qparams,
    round_to_codes,
)
from daptq_ros.quant.layers import QuantLinear

NEEDS_CALIBRATION = True


def inverse_hessian_cholesky(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + lambda I)^-1, lambda = percdamp * mean(diag H)."""
    h = hessian.double().clone()
    h += percdamp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    try:
        lower = torch.linalg.cholesky(h)
    except torch.linalg.LinAlgError:
        raise DaptqError(
            "GPTQ: the calibration Hessian is not positive definite even after dampening; "
            "raise method_args.percdamp or add calibration data"
        ) from None
    h_inv = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(h_inv, upper=True).float()


def gptq_quantize(
    weight: torch.Tensor, hessian: torch.Tensor, fmt: WeightFormat, percdamp: float, block_size: int
) -> QuantizedWeight:
    """Algorithm 1: quantize W [out, in] given H [in, in]; returns codes and group parameters."""
    w = weight.detach().float().clone()
    out_features, in_features = w.shape
    h = hessian.clone()
    dead = torch.diag(h) == 0  # inputs that never fire: their weights cannot matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h_inv = inverse_hessian_cholesky(h, percdamp)

    grouped = fmt.granularity == "group"
    if grouped and block_size % fmt.group_size:
        block_size = fmt.group_size * max(1, block_size // fmt.group_size)
    n_groups = fmt.n_groups(in_features)
    scale = torch.empty(out_features, n_groups)
    zero = torch.empty(out_features, n_groups)
    if not grouped:
        scale, zero = choose_qparams(w, fmt)
    codes = torch.empty(out_features, in_features)

    for i1 in range(0, in_features, block_size):
        i2 = min(i1 + block_size, in_features)
        w_block = w[:, i1:i2].clone()
        err_block = torch.zeros_like(w_block)
        h_inv_block = h_inv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            column = i1 + i
            g = column // fmt.group_size if grouped else 0
            if grouped and column % fmt.group_size == 0:
                group_w = w_block[:, i : i + fmt.group_size]
                s, z = choose_qparams(group_w, WeightFormat(fmt.bits, fmt.symmetric, "channel"))
                scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
            q = round_to_codes(w_block[:, i], scale[:, g], zero[:, g], fmt.qmax)
            codes[:, column] = q
            w_hat = (q - zero[:, g]) * scale[:, g]
            err = (w_block[:, i] - w_hat) / h_inv_block[i, i]
            w_block[:, i:] -= err.unsqueeze(1) * h_inv_block[i, i:].unsqueeze(0)
            err_block[:, i] = err
        w[:, i2:] -= err_block @ h_inv[i1:i2, i2:]  # lazy batch update of the remaining columns
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, fmt)


def quantize_linear(
    linear: nn.Linear, spec: LayerSpec, stats: LayerStats | None, config: QuantConfig
) -> QuantLinear:
    """GPTQ-quantize one Linear from its calibration Hessian."""
    assert stats is not None
    qweight = gptq_quantize(
        linear.weight,
        stats.hessian(),
        spec.weight_format(),
        float(config.method_arg("percdamp")),
        int(config.method_arg("block_size")),
    )
    return QuantLinear(qweight, linear.bias, spec.activation_bits)
