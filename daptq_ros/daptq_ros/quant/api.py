"""`quantize(model, config, calibration)`: the one entry point, in the style of torchao's quantize_.

Every nn.Linear of the model gets the spec its name resolves to in the config (keep patterns
and overrides), then the config's method turns it into a simulated QuantLinear. Layers at 16
bits keep a bfloat16-rounded weight; the fp32 preset leaves the model untouched. Pass
`deployed=True` (or call `deploy`) to pack the result for the real kernels.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from daptq_ros.errors import DaptqError
from daptq_ros.quant import awq, gptq, rtn, smoothquant
from daptq_ros.quant.calibration import collect_layer_stats
from daptq_ros.quant.config import (
    FULL_PRECISION_BITS,
    HIGH_PRECISION_BITS,
    LayerSpec,
    QuantConfig,
    check_layer,
)
from daptq_ros.quant.deploy import deploy, set_submodule
from daptq_ros.quant.formats import to_bf16_grid

METHOD_MODULES: dict[str, ModuleType] = {
    "rtn": rtn,
    "smoothquant": smoothquant,
    "awq": awq,
    "gptq": gptq,
}


def layer_plan(model: nn.Module, config: QuantConfig) -> dict[str, LayerSpec]:
    """The spec of every nn.Linear in the model, validated against its width."""
    plan = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            spec = config.spec_for(name)
            check_layer(spec, name, module.in_features, config.name)
            plan[name] = spec
    if not plan:
        raise DaptqError("the model has no nn.Linear layers to quantize")
    return plan


@torch.no_grad()
def quantize(
    model: nn.Module,
    config: QuantConfig,
    calibration: Iterable[Any] | None = None,
    deployed: bool = False,
) -> nn.Module:
    """Quantize `model` in place by `config`; calibration batches feed SmoothQuant/AWQ/GPTQ."""
    method = METHOD_MODULES[config.method]
    plan = layer_plan(model, config)
    integer_layers = [name for name, spec in plan.items() if spec.is_integer]
    stats: dict[str, Any] = {}
    if method.NEEDS_CALIBRATION and integer_layers:
        if calibration is None:
            raise DaptqError(
                f"method '{config.method}' needs calibration data: pass calibration batches "
                "(or choose method: rtn)"
            )
        stats = collect_layer_stats(
            model,
            calibration,
            integer_layers,
            keep_hessian=config.method == "gptq",
            max_samples=int(config.method_args.get("max_samples", 4096)),
        )
    modules = dict(model.named_modules())
    for name in tqdm(list(plan), desc=f"quantize ({config.method})", unit="layer", leave=False):
        spec, linear = plan[name], modules[name]
        if spec.is_integer:
            set_submodule(
                model, name, method.quantize_linear(linear, spec, stats.get(name), config)
            )
        elif spec.weight_bits == HIGH_PRECISION_BITS:
            linear.weight.copy_(to_bf16_grid(linear.weight))
        else:
            assert spec.weight_bits == FULL_PRECISION_BITS
    if config.weight_bits == HIGH_PRECISION_BITS:
        # a bf16 config rounds every float weight, not only Linear layers
        for param in model.parameters():
            param.copy_(to_bf16_grid(param))
    if deployed and config.weight_bits != FULL_PRECISION_BITS:
        return deploy(model)
    return model
