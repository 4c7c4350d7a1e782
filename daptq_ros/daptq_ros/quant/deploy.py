"""Deployed mode: turn simulated QuantLinear layers into packed weights run by real kernels.

Per layer format (see kernels.py for the kernels):

| weight                          | activations | deployed as                              |
|---------------------------------|-------------|------------------------------------------|
| 2-4 bit, group 32/64/128        | none / 8    | int4 tinygemm (8: per-token int8 q-dq first) |
| 8 bit, symmetric, per channel   | none        | int8 weight-only (_weight_int8pack_mm)   |
| 8 bit, symmetric, per channel   | 8           | torchao int8 dynamic (W8A8)              |

Everything else (kept layers, norms, embeddings) runs in bfloat16. Other formats are valid for
simulation but have no kernel here; deploying them fails with an error naming the layer.
This CPU's torchao build has no int8-activation x int4-weight kernel, so W4A8 quantizes the
activations exactly as simulated and then runs the int4 kernel in bfloat16.
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
DEPLOY_DTYPE = torch.bfloat16


class DeployedLinear(nn.Module):
    """A Linear whose weight is packed for a real low-bit kernel (one per format, see above)."""

    def __init__(self, layer: QuantLinear, dtype: torch.dtype = DEPLOY_DTYPE) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.kernel = kernel_name(layer)
        self.activation_bits = layer.activation_bits if self.kernel != "int8_dynamic" else None
        inverse = None if layer.input_scale is None else (1.0 / layer.input_scale).to(dtype)
        self.register_buffer("inverse_input_scale", inverse)
        self.bias = (
            None if layer.bias is None else nn.Parameter(layer.bias.to(dtype), requires_grad=False)
        )
        codes = layer.codes
        if self.kernel == "int4":
            self.group_size = layer.fmt.group_size
            packed, scale_and_zero = kernels.pack_int4(codes, layer.scale, layer.zero)
            self.register_buffer("weight_int4", packed)
            self.register_buffer("weight_scale_and_zero", scale_and_zero)
        else:
            # symmetric 8-bit: codes - 128 are the signed int8 values, scale is per row
            signed = (codes.to(torch.int16) - 128).to(torch.int8).contiguous()
            if self.kernel == "int8_dynamic":
                self.weight = nn.Parameter(
                    kernels.int8_dynamic_weight(signed, layer.scale[:, 0], dtype),
                    requires_grad=False,
                )
            else:
                self.register_buffer("weight_int8", signed)
                self.register_buffer("weight_scale", layer.scale[:, 0].to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverse_input_scale is not None:
            x = x * self.inverse_input_scale
        if self.activation_bits:
            x = fake_quantize_activation_per_token(x, self.activation_bits)
        if self.kernel == "int8_dynamic":
            return F.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, self.in_features).contiguous()
        if self.kernel == "int4":
            y = kernels.int4_matmul(
                rows, self.weight_int4, self.group_size, self.weight_scale_and_zero
            )
        else:
            y = kernels.int8_weight_only_matmul(rows, self.weight_int8, self.weight_scale)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, kernel={self.kernel}"


def kernel_name(layer: QuantLinear) -> str:
    """Which kernel a simulated layer deploys to, or a DaptqError saying why none fits."""
    fmt = layer.fmt
    if fmt.bits <= 4 and fmt.granularity == "group" and fmt.group_size in INT4_GROUP_SIZES:
        return "int4"
    if fmt.bits == 8 and fmt.symmetric and fmt.granularity == "channel":
        return "int8_dynamic" if layer.activation_bits == 8 else "int8_weight_only"
    raise DaptqError(
        f"no deployed kernel for {fmt.describe()}: 2-4 bit weights need granularity 'group' with "
        f"group_size in {INT4_GROUP_SIZES}, 8-bit weights need symmetric per-channel; "
        "change the bit config or use simulated mode"
    )


def deploy(model: nn.Module, device: str = "cpu") -> nn.Module:
    """Replace every QuantLinear with its packed kernel layer and cast the rest to bfloat16."""
    if device != "cpu":
        raise DaptqError(f"deploying to '{device}' is not supported yet; deploy on 'cpu'")
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            try:
                replacement = DeployedLinear(module)
            except DaptqError as error:
                raise DaptqError(f"layer '{name}': {error}") from None
            _set_submodule(model, name, replacement)
    for module in model.modules():
        if not isinstance(module, DeployedLinear):
            for key, param in module.named_parameters(recurse=False):
                if param.is_floating_point():
                    setattr(
                        module,
                        key,
                        nn.Parameter(param.detach().to(DEPLOY_DTYPE), requires_grad=False),
                    )
            for key, buf in module.named_buffers(recurse=False):
                if buf is not None and buf.is_floating_point():
                    module.register_buffer(
                        key,
                        buf.to(DEPLOY_DTYPE),
                        persistent=key not in module._non_persistent_buffers_set,
                    )
    return model.eval()


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (packed low-bit tensors counted by their storage)."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b is not None]
    return sum(kernels.tensor_bytes(t) for t in tensors)
