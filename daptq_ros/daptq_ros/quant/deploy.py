"""Deployed mode: every Linear runs on a packed low-bit kernel or in bfloat16.

Per layer (see kernels.py for the kernels):

| simulated layer                       | activations | deployed kernel                        |
|---------------------------------------|-------------|----------------------------------------|
| QuantLinear 2-4 bit, group 32/64/128  | none / 8    | int4 tinygemm (8: int8 q-dq first)     |
| QuantLinear 8 bit, symmetric, channel | none        | int8 weight-only (_weight_int8pack_mm) |
| QuantLinear 8 bit, symmetric, channel | 8           | torchao int8 dynamic (W8A8)            |
| nn.Linear (kept / 16-bit layers)      | -           | bfloat16 matmul                        |

A deployed Linear takes activations of any float dtype and returns that dtype (its matmul runs
in bfloat16), so the rest of the model (convolutions, norms, embeddings, samplers) is left as it
was: deployment changes exactly the layers the bit config talks about. Other integer formats are
valid for simulation but have no kernel here; deploying them fails with an error naming the
layer. This CPU's torchao build has no int8-activation x int4-weight kernel, so W4A8 quantizes
the activations exactly as simulated and then runs the int4 kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.quant import kernels
from daptq_ros.quant.formats import fake_quantize_activation_per_token
from daptq_ros.quant.layers import QuantLinear

INT4_GROUP_SIZES = (32, 64, 128)
INT4_ROWS_MULTIPLE = 16  # the int4 packing lays out output rows in tiles of 16
# aten._weight_int8pack_mm reads the input in blocks of 16 columns: with any other width it
# crashed the process (SIGSEGV) for batches above 1 (PyTorch 2.13 CPU, measured here).
INT8_COLUMNS_MULTIPLE = 16
DEPLOY_DTYPE = torch.bfloat16


class DeployedLinear(nn.Module):
    """A Linear on a real kernel: packed int4 / int8 weights, or a bfloat16 weight."""

    def __init__(self, layer: QuantLinear | nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.kernel = kernel_name(layer)
        self.activation_bits = None
        self.bias = None
        if layer.bias is not None:
            self.bias = nn.Parameter(layer.bias.detach().to(DEPLOY_DTYPE), requires_grad=False)
        self.register_buffer("inverse_input_scale", None)
        if isinstance(layer, QuantLinear):
            self._pack(layer)
        else:
            self.weight = nn.Parameter(layer.weight.detach().to(DEPLOY_DTYPE), requires_grad=False)

    def _pack(self, layer: QuantLinear) -> None:
        if self.kernel != "int8_dynamic":  # torchao quantizes W8A8 activations itself
            self.activation_bits = layer.activation_bits
        if layer.input_scale is not None:
            self.inverse_input_scale = (1.0 / layer.input_scale).to(DEPLOY_DTYPE)
        if self.kernel == "int4":
            self.group_size = layer.fmt.group_size
            packed, scale_and_zero = kernels.pack_int4(layer.codes, layer.scale, layer.zero)
            self.register_buffer("weight_int4", packed)
            self.register_buffer("weight_scale_and_zero", scale_and_zero)
            return
        # symmetric 8-bit: codes - 128 are the signed int8 values, the scale is per row
        signed = (layer.codes.to(torch.int16) - 128).to(torch.int8).contiguous()
        if self.kernel == "int8_dynamic":
            weight = kernels.int8_dynamic_weight(signed, layer.scale[:, 0], DEPLOY_DTYPE)
            self.weight = nn.Parameter(weight, requires_grad=False)
        else:
            self.register_buffer("weight_int8", signed)
            self.register_buffer("weight_scale", layer.scale[:, 0].to(DEPLOY_DTYPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Lean on purpose: at batch 1 each extra torch call costs a few microseconds against a
        # ~200 us kernel, and an 8-layer stack paid ~0.25 ms for a general path (measured).
        dtype = x.dtype
        if dtype != DEPLOY_DTYPE:
            x = x.to(DEPLOY_DTYPE)
        if self.inverse_input_scale is not None:
            x = x * self.inverse_input_scale
        if self.activation_bits:
            x = fake_quantize_activation_per_token(x, self.activation_bits)
        if self.kernel in ("int8_dynamic", "bf16"):
            y = F.linear(x, self.weight, self.bias)
            return y if dtype == DEPLOY_DTYPE else y.to(dtype)
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if not rows.is_contiguous():
            rows = rows.contiguous()
        if self.kernel == "int4":
            y = kernels.int4_matmul(
                rows, self.weight_int4, self.group_size, self.weight_scale_and_zero
            )
        else:
            y = kernels.int8_weight_only_matmul(rows, self.weight_int8, self.weight_scale)
        if x.dim() != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y if dtype == DEPLOY_DTYPE else y.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, kernel={self.kernel}"


def kernel_name(layer: QuantLinear | nn.Linear) -> str:
    """Which kernel a layer deploys to, or a DaptqError saying why none fits."""
    if not isinstance(layer, QuantLinear):
        return "bf16"
    fmt = layer.fmt
    if fmt.bits <= 4 and fmt.granularity == "group" and fmt.group_size in INT4_GROUP_SIZES:
        if layer.out_features % INT4_ROWS_MULTIPLE:
            raise DaptqError(
                f"the int4 kernel needs out_features divisible by {INT4_ROWS_MULTIPLE}, this layer "
                f"has {layer.out_features}; keep it in high precision (keep: [...]) or use 8 bits"
            )
        return "int4"
    if fmt.bits == 8 and fmt.symmetric and fmt.granularity == "channel":
        if layer.activation_bits == 8:
            return "int8_dynamic"
        if layer.in_features % INT8_COLUMNS_MULTIPLE:
            raise DaptqError(
                f"the int8 weight-only kernel needs in_features divisible by "
                f"{INT8_COLUMNS_MULTIPLE}, this layer has {layer.in_features}; keep it in high "
                "precision (keep: [...])"
            )
        return "int8_weight_only"
    raise DaptqError(
        f"no deployed kernel for {fmt.describe()}: 2-4 bit weights need granularity 'group' with "
        f"group_size in {INT4_GROUP_SIZES}, 8-bit weights need symmetric per-channel; "
        "change the bit config or use simulated mode"
    )


def deploy(model: nn.Module, device: str = "cpu", whole_model_bf16: bool = False) -> nn.Module:
    """Replace every QuantLinear and nn.Linear with its DeployedLinear.

    By default the rest of the model is unchanged (float32 convolutions, norms, embeddings; each
    deployed Linear converts its input to bfloat16 and back). `whole_model_bf16` also casts
    every other floating parameter to bfloat16, so activations stay bfloat16 from end to end
    and the conversions disappear: at the ~450 M deployment scale it cut a BF16 action chunk
    from 555 to 502 ms on this CPU (a prototype of bench/deploy.py). Buffers (rotary
    frequencies, noise schedules) stay float32; family samplers cast their inputs with
    `compute_dtype`.
    """
    if device != "cpu":
        raise DaptqError(f"deploying to '{device}' is not supported yet; deploy on 'cpu'")
    for name, module in list(model.named_modules()):
        if isinstance(module, (QuantLinear, nn.Linear)):
            try:
                replacement = DeployedLinear(module)
            except DaptqError as error:
                raise DaptqError(f"layer '{name}': {error}") from None
            _set_submodule(model, name, replacement)
    if whole_model_bf16:
        cast_float32_parameters(model)
    return model.eval()


def cast_float32_parameters(model: nn.Module, dtype: torch.dtype = DEPLOY_DTYPE) -> None:
    """Cast every plain float32 parameter (not tensor subclasses, not buffers) to `dtype`."""
    for module in model.modules():
        for key, param in module._parameters.items():
            if (
                param is not None
                and type(param.data) is torch.Tensor
                and param.dtype == torch.float32
            ):
                module._parameters[key] = nn.Parameter(param.data.to(dtype), requires_grad=False)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (packed low-bit tensors counted by their storage)."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b is not None]
    return sum(kernels.tensor_bytes(t) for t in tensors)
