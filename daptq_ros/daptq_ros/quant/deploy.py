"""Deployed mode: every Linear runs on a real kernel, chosen per layer.

Each layer has a few kernels that compute its bit config's arithmetic (same codes, scales and
activation quantization; they differ only in how the matmul is done):

| simulated layer                 | packed kernels (weights stay at their bits) | dense |
|---------------------------------|---------------------------------------------|-------|
| QuantLinear 2-4 bit, group      | int4 tinygemm                               | bf16, fp32 |
| QuantLinear 2-4 bit, channel    | (none: no int4 group fits the layer)        | bf16, fp32 |
| QuantLinear 8 bit sym chan, A16 | int8 weight-only (_weight_int8pack_mm)      | bf16, fp32 |
| QuantLinear 8 bit sym chan, A8  | int8 dynamic (torch._int_mm), int8 w-only   | bf16, fp32 |
| nn.Linear (kept, 16-bit)        | bf16                                        | fp32 |

Dense kernels hold the weight dequantized once (bf16 or fp32); fp32 on a kept layer holds its
bf16-rounded weight. Activation quantization (A8) runs before every kernel except int8
dynamic, which quantizes its activations itself with the same arithmetic. A layer gets its
first (packed) candidate unless told otherwise; kernel_choice.py picks per layer by measurement.

A deployed Linear takes activations of any float dtype and returns that dtype, so the rest of
the model (convolutions, norms, embeddings, samplers) is left as it was: deployment changes
exactly the layers the bit config talks about. Other integer formats are valid for simulation
but have no kernel here; deploying them fails with an error naming the layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.quant import kernels
from daptq_ros.quant.formats import dequantize, fake_quantize_activation_per_token, to_bf16_grid
from daptq_ros.quant.layers import QuantLinear

INT4_GROUP_SIZES = (32, 64, 128)
INT4_ROWS_MULTIPLE = 16  # the int4 packing lays out output rows in tiles of 16
# aten._weight_int8pack_mm reads the input in blocks of 16 columns: with any other width it
# crashed the process (SIGSEGV) for batches above 1 (PyTorch 2.13 CPU, measured here).
INT8_COLUMNS_MULTIPLE = 16
DEPLOY_DTYPE = torch.bfloat16
DENSE_KERNELS = ("bf16", "fp32")
FUSED_SUFFIX = "+fused"  # see split_kernel
# bytes per weight each kernel keeps resident
KERNEL_WEIGHT_BYTES = {"int4": 0.5, "int8_weight_only": 1, "int8_dynamic": 1, "bf16": 2, "fp32": 4}
# the dtype each kernel computes in (its input is cast to it)
KERNEL_DTYPE = {
    "int4": torch.bfloat16,
    "int8_weight_only": torch.bfloat16,
    "int8_dynamic": torch.float32,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
}


class DeployedLinear(nn.Module):
    """A Linear on one real kernel: packed int4 / int8 weights, or a dense weight."""

    def __init__(self, layer: QuantLinear | nn.Linear, kernel: str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        allowed = kernel_candidates(layer)
        self.kernel = kernel or allowed[0]
        self.base_kernel, self.fused_activations = split_kernel(self.kernel)
        quantized = isinstance(layer, QuantLinear)
        quantizes_inputs = (
            quantized and layer.activation_bits and self.base_kernel != "int8_dynamic"
        )
        if self.base_kernel not in allowed or (self.fused_activations and not quantizes_inputs):
            raise DaptqError(
                f"kernel '{self.kernel}' cannot run {describe_layer(layer)}; "
                f"choose one of {', '.join(allowed)}"
            )
        self.compute_dtype = KERNEL_DTYPE[self.base_kernel]
        self.activation_bits = layer.activation_bits if quantized else None
        if self.base_kernel == "int8_dynamic":
            self.activation_bits = None  # the kernel quantizes its activations itself
        self.bias = None
        if layer.bias is not None:
            bias = layer.bias.detach().to(self.compute_dtype)
            self.bias = nn.Parameter(bias, requires_grad=False)
        self.register_buffer("inverse_input_scale", None)
        if quantized and layer.input_scale is not None:
            self.inverse_input_scale = 1.0 / layer.input_scale
        if self.base_kernel in DENSE_KERNELS:
            # not layer.dequantized_weight(): that caches a float32 copy on the source layer
            if quantized:
                weight = dequantize(layer.codes, layer.scale, layer.zero)
            else:
                weight = to_bf16_grid(layer.weight)
            self.weight = nn.Parameter(weight.detach().to(self.compute_dtype), requires_grad=False)
        else:
            self._pack(layer)

    def _pack(self, layer: QuantLinear) -> None:
        if self.base_kernel == "int4":
            self.group_size = layer.fmt.group_size
            packed, scale_and_zero = kernels.pack_int4(layer.codes, layer.scale, layer.zero)
            self.register_buffer("weight_int4", packed)
            self.register_buffer("weight_scale_and_zero", scale_and_zero)
            return
        # symmetric 8-bit: codes - 128 are the signed int8 values, the scale is per row
        signed = (layer.codes.to(torch.int16) - 128).to(torch.int8).contiguous()
        self.register_buffer("weight_int8", signed)
        self.register_buffer("weight_scale", layer.scale[:, 0].to(self.compute_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Lean on purpose: at batch 1 each extra torch call costs a few microseconds against a
        # ~200 us kernel, and an 8-layer stack paid ~0.25 ms for a general path (measured).
        dtype = x.dtype
        if self.inverse_input_scale is not None:
            x = x * self.inverse_input_scale.to(dtype)
        if self.activation_bits:
            if self.fused_activations:
                x = kernels.fused_activation_quantizer()(x, self.activation_bits)
            else:
                x = fake_quantize_activation_per_token(x, self.activation_bits)
        if dtype != self.compute_dtype:
            x = x.to(self.compute_dtype)
        if self.base_kernel in DENSE_KERNELS:
            y = F.linear(x, self.weight, self.bias)
            return y if dtype == self.compute_dtype else y.to(dtype)
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if not rows.is_contiguous():
            rows = rows.contiguous()
        if self.base_kernel == "int4":
            y = kernels.int4_matmul(
                rows, self.weight_int4, self.group_size, self.weight_scale_and_zero
            )
        elif self.base_kernel == "int8_dynamic":
            y = kernels.int8_dynamic_matmul(rows, self.weight_int8.t(), self.weight_scale)
        else:
            y = kernels.int8_weight_only_matmul(rows, self.weight_int8, self.weight_scale)
        if x.dim() != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y if dtype == self.compute_dtype else y.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, kernel={self.kernel}"


def split_kernel(kernel: str) -> tuple[str, bool]:
    """(base kernel, whether the activation quantization runs fused): 'int4+fused' ->
    ('int4', True). Fused: the per-token quantization as one torch.compile'd kernel, the same
    arithmetic (tested bit-exact) in a few passes over the activations instead of eight."""
    return kernel.removesuffix(FUSED_SUFFIX), kernel.endswith(FUSED_SUFFIX)


def describe_layer(layer: QuantLinear | nn.Linear) -> str:
    """'W4 asym g128 A8 2048x1024' style label of a layer's format and shape."""
    if not isinstance(layer, QuantLinear):
        return f"bf16 {layer.in_features}x{layer.out_features}"
    act = f" A{layer.activation_bits}" if layer.activation_bits else ""
    return f"{layer.fmt.describe()}{act} {layer.in_features}x{layer.out_features}"


def kernel_candidates(layer: QuantLinear | nn.Linear) -> tuple[str, ...]:
    """The kernels that run this layer's arithmetic, its default (packed) kernel first.

    Raises a DaptqError saying why when no packed kernel fits the layer's format.
    """
    if not isinstance(layer, QuantLinear):
        return ("bf16", "fp32")
    fmt = layer.fmt
    if fmt.bits <= 4 and fmt.granularity == "group" and fmt.group_size in INT4_GROUP_SIZES:
        if layer.out_features % INT4_ROWS_MULTIPLE:
            raise DaptqError(
                f"the int4 kernel needs out_features divisible by {INT4_ROWS_MULTIPLE}, this layer "
                f"has {layer.out_features}; keep it in high precision (keep: [...]) or use 8 bits"
            )
        return ("int4", *DENSE_KERNELS)
    if fmt.bits <= 4 and fmt.granularity == "channel":
        # A layer no int4 group divides (quant.kernel_fit): its codes run dequantized.
        return DENSE_KERNELS
    if fmt.bits == 8 and fmt.symmetric and fmt.granularity == "channel":
        weight_only = () if layer.in_features % INT8_COLUMNS_MULTIPLE else ("int8_weight_only",)
        if layer.activation_bits == 8:
            return ("int8_dynamic", *weight_only, *DENSE_KERNELS)
        if not weight_only:
            raise DaptqError(
                f"the int8 weight-only kernel needs in_features divisible by "
                f"{INT8_COLUMNS_MULTIPLE}, this layer has {layer.in_features}; keep it in high "
                "precision (keep: [...])"
            )
        return (*weight_only, *DENSE_KERNELS)
    raise DaptqError(
        f"no deployed kernel for {fmt.describe()}: 2-4 bit weights need granularity 'group' with "
        f"group_size in {INT4_GROUP_SIZES}, 8-bit weights need symmetric per-channel; "
        "change the bit config or use simulated mode"
    )


def packed_kernels(layer: QuantLinear | nn.Linear) -> tuple[str, ...]:
    """The candidates that keep the layer's weights at its stored width (no dequantized copy)."""
    candidates = kernel_candidates(layer)
    return tuple(
        k for k in candidates if KERNEL_WEIGHT_BYTES[k] <= KERNEL_WEIGHT_BYTES[candidates[0]]
    )


def deploy(
    model: nn.Module,
    device: str = "cpu",
    whole_model_bf16: bool = False,
    kernels_by_layer: dict[str, str] | None = None,
) -> nn.Module:
    """Replace every QuantLinear and nn.Linear with its DeployedLinear.

    `kernels_by_layer` names the kernel of each layer (kernel_choice.choose_kernels measures
    them); a layer it does not name gets its default packed kernel.

    By default the rest of the model is unchanged (float32 convolutions, norms, embeddings; each
    deployed Linear converts its input to bfloat16 and back). `whole_model_bf16` also casts
    every other floating parameter to bfloat16, so activations stay bfloat16 from end to end
    and the conversions disappear: at the ~450 M deployment scale it cut a BF16 action chunk
    from 555 to 502 ms on this CPU (a prototype of bench/deploy.py). Buffers (rotary
    frequencies, noise schedules) stay float32; family samplers cast their inputs with
    `compute_dtype`.
    """
    check_device(device)
    model.to(device)
    for name, module in list(model.named_modules()):
        if isinstance(module, (QuantLinear, nn.Linear)):
            try:
                replacement = DeployedLinear(module, (kernels_by_layer or {}).get(name))
            except DaptqError as error:
                raise DaptqError(f"layer '{name}': {error}") from None
            set_submodule(model, name, replacement)
    if whole_model_bf16:
        cast_float32_parameters(model)
    return model.eval()


def check_device(device: str) -> None:
    """A DaptqError naming the problem and the fix unless `device` can run deployed kernels."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = str(device)
    if kind == "cpu":
        return
    if kind != "cuda":
        raise DaptqError(f"deployed kernels run on 'cpu' or 'cuda', not '{device}'")
    if not torch.cuda.is_available():
        why = "has no CUDA support" if not torch.backends.cuda.is_built() else "finds no GPU"
        raise DaptqError(
            f"device '{device}': torch {torch.__version__} {why} on this machine; "
            "use device 'cpu' (policy node: device:=cpu), or install a CUDA build of torch "
            "on a machine with an NVIDIA GPU"
        )


def cast_float32_parameters(model: nn.Module, dtype: torch.dtype = DEPLOY_DTYPE) -> None:
    """Cast every plain float32 parameter to `dtype`: not buffers, not tensor subclasses, not
    deployed Linears (their kernel fixed their dtype)."""
    for module in model.modules():
        if isinstance(module, DeployedLinear):
            continue
        for key, param in module._parameters.items():
            if (
                param is not None
                and type(param.data) is torch.Tensor
                and param.dtype == torch.float32
            ):
                module._parameters[key] = nn.Parameter(param.data.to(dtype), requires_grad=False)


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (packed low-bit tensors counted by their storage)."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b is not None]
    return sum(kernels.tensor_bytes(t) for t in tensors)
