"""The one adapter to torchao and PyTorch's packed low-bit CPU/GPU kernels.

torchao renames its CPU API in most releases, so nothing else in daptq_ros imports it. We never
write a matmul: the packed formats below are built from *our* codes and scales (so GPTQ/AWQ
rounding survives deployment) and run by these kernels:

- int4 (and 2/3-bit codes, which fit the int4 grid), group 32/64/128, bf16 activations:
  `aten._weight_int4pack_mm_for_cpu` on weights in the tinygemm layout of torchao's
  Int4OpaqueTensor (packed with torchao's scale/zero packing); on CUDA, tinygemm's
  `aten._weight_int4pack_mm`.
- int8 weight-only, symmetric per channel: `aten._weight_int8pack_mm` (torchao 0.18's own
  int8 weight-only path dequantizes the whole matrix on every call, which is slower than bf16).
- int8 dynamic activations x int8 weights (W8A8): per-token symmetric activation quantization
  (the simulated arithmetic of formats.py, in float32) and `torch._int_mm` (int32 accumulation).
  torchao's `Int8Tensor` ran the same arithmetic 1.8-4.4x slower on this CPU (its per-token
  quantization ops and tensor-subclass dispatch), so it is not used.

`KERNEL_OPS` lists the op behind each kernel per device. The CUDA path is written against
torch's documented ops but has not yet run on a GPU here (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch

TINYGEMM_MID_CODE = 8  # tinygemm dequantizes a code q as (q - 8) * scale + zero
ACTIVATION_HALF_RANGE = 127.5  # int8 per-token scale = max|x| / 127.5 (formats.py)


@functools.cache
def _torchao() -> SimpleNamespace:
    """torchao's pieces used here, imported once and lazily, with its import notices muted.

    The CPU wheel logs that its CUDA-only extensions cannot load and torch logs about enum
    registrations; neither concerns the CPU kernels used here.
    """
    with _muted_loggers("torchao", "torch.utils._pytree"):
        from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    return SimpleNamespace(pack_tinygemm_scales_and_zeros=pack_tinygemm_scales_and_zeros)


@contextlib.contextmanager
def _muted_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# The aten op behind each packed kernel, per device (tests check that each exists in torch).
KERNEL_OPS: dict[str, dict[str, str]] = {
    "cpu": {
        "int4": "_weight_int4pack_mm_for_cpu",
        "int8_weight_only": "_weight_int8pack_mm",
        "int8_dynamic": "_int_mm",
    },
    "cuda": {
        "int4": "_weight_int4pack_mm",  # tinygemm
        "int8_weight_only": "_weight_int8pack_mm",
        "int8_dynamic": "_int_mm",
    },
}
CUDA_INT_MM_MIN_ROWS = 17  # torch._int_mm on CUDA needs more than 16 rows: fewer are padded
INT4_CUDA_INNER_K_TILES = (8, 4, 2)  # tinygemm's K tiling, largest that divides in_features


def pack_int4(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack [out, in] codes in [0, 15] and [out, G] scale/zero for the int4 kernel of the
    device the codes are on (CPU, or tinygemm on CUDA).

    Our dequantization (q - z) * s equals tinygemm's (q - 8) * s + zero_f with
    zero_f = (8 - z) * s, so any code grid up to 4 bits maps exactly (zero_f rounds to bf16).
    Returns (packed weight, packed scales-and-zeros), the layouts of torchao's Int4OpaqueTensor
    (CPU) and tinygemm tensors (CUDA).
    """
    zero_float = ((TINYGEMM_MID_CODE - zero) * scale).to(torch.bfloat16)
    if codes.is_cuda:
        tiles = cuda_inner_k_tiles(codes.shape[1])
        packed = torch.ops.aten._convert_weight_to_int4pack(nibble_pack(codes), tiles)
    else:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    scale_and_zero = _torchao().pack_tinygemm_scales_and_zeros(
        scale.to(torch.bfloat16), zero_float, torch.bfloat16
    )
    return packed, scale_and_zero


def nibble_pack(codes: torch.Tensor) -> torch.Tensor:
    """[out, in] codes in [0, 15] as uint8 [out, in / 2], even columns in the high nibble
    (the input layout of aten._convert_weight_to_int4pack)."""
    codes = codes.to(torch.uint8)
    return ((codes[:, ::2] << 4) | codes[:, 1::2]).contiguous()


def cuda_inner_k_tiles(in_features: int) -> int:
    """tinygemm's inner K tiles for a layer: the largest of 8, 4, 2 whose 16-column tiles
    divide in_features (int4 groups of 32, 64 or 128 columns guarantee one does)."""
    for tiles in INT4_CUDA_INNER_K_TILES:
        if in_features % (tiles * 16) == 0:
            return tiles
    raise ValueError(f"the CUDA int4 kernel needs in_features divisible by 32, got {in_features}")


def int4_matmul(
    x: torch.Tensor, packed: torch.Tensor, group_size: int, scale_and_zero: torch.Tensor
) -> torch.Tensor:
    """y = x @ dequant(W)^T with the tinygemm int4 kernel of x's device (x 2-D, bfloat16).

    Called directly rather than through torchao's tensor subclass: the subclass dispatch cost
    about 30 us per layer at batch 1, 12 % of an 8-layer 2048-wide stack (measured here).
    """
    if x.is_cuda:
        return torch.ops.aten._weight_int4pack_mm(x, packed, group_size, scale_and_zero)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scale_and_zero)


def int8_weight_only_matmul(
    x: torch.Tensor, weight_int8: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """y = x @ (W_int8 * scale)^T with PyTorch's packed int8 weight-only kernel (x 2-D)."""
    if scale.dtype != x.dtype:
        scale = scale.to(x.dtype)
    return torch.ops.aten._weight_int8pack_mm(x, weight_int8, scale)


def int8_dynamic_matmul(
    x: torch.Tensor, weight_int8_t: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """W8A8: y = (s_x * s_w) * (q_x @ W_int8^T), float32 out (x 2-D float32).

    q_x is the simulated per-token quantization (formats.fake_quantize_activation_per_token:
    s_x = max|x| / 127.5, codes clamped to [-128, 127]); `weight_int8_t` is the [in, out]
    transposed view of the signed codes and `weight_scale` their float32 per-row scale.
    """
    scale = x.abs().amax(dim=-1, keepdim=True).div_(ACTIVATION_HALF_RANGE)
    scale.clamp_(min=torch.finfo(torch.float32).eps)
    codes = torch.round(x / scale).clamp_(-128, 127).to(torch.int8)
    rows = codes.shape[0]
    if codes.is_cuda and rows < CUDA_INT_MM_MIN_ROWS:
        codes = torch.nn.functional.pad(codes, (0, 0, 0, CUDA_INT_MM_MIN_ROWS - rows))
        return torch._int_mm(codes, weight_int8_t)[:rows] * (scale * weight_scale)
    return torch._int_mm(codes, weight_int8_t) * (scale * weight_scale)


@functools.cache
def fused_activation_quantizer() -> Callable[[torch.Tensor, int], torch.Tensor]:
    """formats.fake_quantize_activation_per_token compiled by inductor (dynamic shapes): one
    reduction and one elementwise pass. It compiles on first use (~9 s here, then cached on
    disk) and costs more per call than the eager ops below ~30 k activation values."""
    from daptq_ros.quant.formats import fake_quantize_activation_per_token

    return torch.compile(fake_quantize_activation_per_token, dynamic=True)


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor, looking inside torchao tensor subclasses."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
        names, _ = flatten()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    return t.numel() * t.element_size()
