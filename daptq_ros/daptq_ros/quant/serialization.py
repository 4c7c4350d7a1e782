"""Save and load quantized models as safetensors: packed codes, scales, zero points, bit map.

One file holds every tensor of the model. Quantized layers store `<name>.codes` (codes of <= 4
bits packed two per byte), `.scale`, `.zero`, and `.input_scale` when scaled; the file's
metadata holds the bit map (per-layer format) and the config, so loading needs the model's
architecture and nothing else: no calibration data, no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from daptq_ros.errors import ModelError
from daptq_ros.quant.config import QuantConfig, config_from_dict
from daptq_ros.quant.deploy import set_submodule
from daptq_ros.quant.formats import QuantizedWeight, WeightFormat
from daptq_ros.quant.layers import QuantLinear

FORMAT_VERSION = "1"
_QUANT_TENSORS = ("codes", "scale", "zero", "input_scale", "bias")


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack uint8 codes in [0, 15] two per byte along the last dim (low nibble first)."""
    if codes.shape[-1] % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()


def unpack_nibbles(packed: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of pack_nibbles for a last dimension of `width` codes."""
    codes = torch.stack((packed & 0x0F, packed >> 4), dim=-1).reshape(*packed.shape[:-1], -1)
    return codes[..., :width].contiguous()


def bit_map(model: nn.Module) -> dict[str, dict]:
    """Per-layer format of every QuantLinear in the model."""
    return {
        name: {
            "bits": m.fmt.bits,
            "symmetric": m.fmt.symmetric,
            "granularity": m.fmt.granularity,
            "group_size": m.fmt.group_size,
            "activation_bits": m.activation_bits,
            "in_features": m.in_features,
        }
        for name, m in model.named_modules()
        if isinstance(m, QuantLinear)
    }


def save_quantized(model: nn.Module, path: str | Path, config: QuantConfig) -> Path:
    """Write the (simulated-mode) quantized model to one safetensors file."""
    path = Path(path)
    layers = bit_map(model)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        layer, _, leaf = key.rpartition(".")
        if layer in layers and leaf == "codes" and layers[layer]["bits"] <= 4:
            value = pack_nibbles(value)
        tensors[key] = value.detach().contiguous()
    metadata = {
        "daptq_format": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "bit_map": json.dumps(layers),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> tuple[QuantConfig, dict[str, dict]]:
    """The config and bit map stored in a quantized safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"quantized model file '{path}' does not exist; write it with save_quantized"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ModelError(
            f"'{path}' is not a readable safetensors file ({error}); re-save the model"
        ) from None
    if metadata.get("daptq_format") != FORMAT_VERSION:
        raise ModelError(
            f"'{path}' is not a daptq quantized model (format {metadata.get('daptq_format')!r}, "
            f"expected {FORMAT_VERSION!r}); quantize and save it with daptq_ros"
        )
    return config_from_dict(json.loads(metadata["config"])), json.loads(metadata["bit_map"])


def load_quantized(model: nn.Module, path: str | Path) -> tuple[nn.Module, QuantConfig]:
    """Rebuild a quantized model into `model` (the unquantized architecture) from `path`."""
    config, layers = read_metadata(path)
    tensors = load_file(str(path))
    for name, info in layers.items():
        fmt = WeightFormat(info["bits"], info["symmetric"], info["granularity"], info["group_size"])
        codes = tensors.pop(f"{name}.codes")
        if fmt.bits <= 4:
            codes = unpack_nibbles(codes, info["in_features"])
        qweight = QuantizedWeight(
            codes, tensors.pop(f"{name}.scale"), tensors.pop(f"{name}.zero"), fmt
        )
        layer = QuantLinear(
            qweight,
            tensors.pop(f"{name}.bias", None),
            info["activation_bits"],
            tensors.pop(f"{name}.input_scale", None),
        )
        try:
            set_submodule(model, name, layer)
        except AttributeError:
            raise ModelError(
                f"'{path}' has layer '{name}' that the given model lacks; "
                "pass the architecture the file was quantized from"
            ) from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    quantized_keys = {f"{n}.{t}" for n in layers for t in _QUANT_TENSORS}
    missing = [k for k in missing if k not in quantized_keys]
    if missing or unexpected:
        raise ModelError(
            f"'{path}' does not match the model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; "
            "pass the architecture the file was quantized from"
        )
    return model, config
