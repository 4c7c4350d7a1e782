"""The one adapter to torchao and PyTorch's packed low-bit CPU/GPU kernels.

torchao renames its CPU API in most releases, so nothing else in daptq_ros imports it. We never
write a matmul: the packed formats below are built from *our* codes and scales (so GPTQ/AWQ
rounding survives deployment) and run by these kernels:

- int4 (and 2/3-bit codes, which fit the int4 grid), group 32/64/128, bf16 activations:
  torchao `Int4OpaqueTensor` -> `aten._weight_int4pack_mm_for_cpu` (tinygemm layout).
- int8 weight-only, symmetric per channel: `aten._weight_int8pack_mm` (torchao 0.18's own
  int8 weight-only path dequantizes the whole matrix on every call, which is slower than bf16).
- int8 dynamic activations x int8 weights (W8A8): torchao `Int8Tensor` with per-token
  symmetric activation quantization (`int_scaled_matmul`).

Only the CPU kernels are wired up so far; deploying to CUDA is refused with a clear error.
"""

from __future__ import annotations

import torch

TINYGEMM_MID_CODE = 8  # tinygemm dequantizes a code q as (q - 8) * scale + zero


def _import_torchao():
    """torchao imports (and prints CUDA-extension notices) only when a model is deployed."""
    from torchao.prototype.quantization.int4.int4_opaque_tensor import Int4OpaqueTensor
    from torchao.quantization.granularity import PerRow
    from torchao.quantization.quant_primitives import MappingType
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import (
        Int8Tensor,
        QuantizeTensorToInt8Kwargs,
    )
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    return (
        Int4OpaqueTensor,
        Int8Tensor,
        QuantizeTensorToInt8Kwargs,
        PerRow,
        MappingType,
        (pack_tinygemm_scales_and_zeros),
    )


def int4_weight(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Pack [out, in] codes in [0, 15] with [out, G] scale/zero into torchao's CPU int4 tensor.

    Our dequantization (q - z) * s equals tinygemm's (q - 8) * s + zero_f with
    zero_f = (8 - z) * s, so any code grid up to 4 bits maps exactly (zero_f rounds to bf16).
    """
    int4_cls, *_, pack_scales_and_zeros = _import_torchao()
    scale_bf16 = scale.to(torch.bfloat16)
    zero_float = ((TINYGEMM_MID_CODE - zero) * scale).to(torch.bfloat16)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    return int4_cls(
        qdata=packed,
        scale_and_zero=pack_scales_and_zeros(scale_bf16, zero_float, torch.bfloat16),
        block_size=[1, group_size],
        shape=codes.shape,
    )


def int8_weight_only_matmul(
    x: torch.Tensor, weight_int8: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """y = x @ (W_int8 * scale)^T with PyTorch's packed int8 weight-only kernel (x 2-D)."""
    return torch.ops.aten._weight_int8pack_mm(x, weight_int8, scale.to(x.dtype))


def int8_dynamic_weight(
    weight_int8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """torchao int8 weight that quantizes its input per token at run time (W8A8)."""
    _, int8_cls, act_kwargs_cls, per_row, mapping_type, _ = _import_torchao()
    return int8_cls(
        weight_int8,
        scale.reshape(-1, 1).float(),
        block_size=[1, weight_int8.shape[1]],
        dtype=dtype,
        zero_point=torch.zeros(weight_int8.shape[0], 1, dtype=torch.int8),
        act_quant_kwargs=act_kwargs_cls(granularity=per_row(), mapping_type=mapping_type.SYMMETRIC),
    )


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor, looking inside torchao tensor subclasses."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
        names, _ = flatten()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    return t.numel() * t.element_size()
