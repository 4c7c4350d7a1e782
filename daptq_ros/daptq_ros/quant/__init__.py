"""Quantization core: formats, bit configs, RTN/SmoothQuant/AWQ/GPTQ, deployment, save/load.

torch only; nothing here knows about robots.
"""

from daptq_ros.quant.api import layer_plan, quantize
from daptq_ros.quant.config import QuantConfig, config_from_dict, list_presets, load_config
from daptq_ros.quant.deploy import deploy, weight_bytes
from daptq_ros.quant.layers import QuantLinear
from daptq_ros.quant.serialization import load_quantized, save_quantized

__all__ = [
    "QuantConfig",
    "QuantLinear",
    "config_from_dict",
    "deploy",
    "layer_plan",
    "list_presets",
    "load_config",
    "load_quantized",
    "quantize",
    "save_quantized",
    "weight_bytes",
]
