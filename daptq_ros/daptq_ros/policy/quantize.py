"""Quantize a loaded VLA policy with a bit config (simulated or deployed), in place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from torch import nn

from daptq_ros.quant import QuantConfig, quantize
from daptq_ros.quant.api import METHOD_MODULES


def keep_ungroupable_layers(model: nn.Module, config: QuantConfig) -> QuantConfig:
    """The config plus keep entries for Linears whose input width no group size divides.

    A VLA has tiny input projections (a 4-D state or action, a timestep embedding) that no
    per-group format can cover; they hold a negligible share of the weights and stay in bf16.
    """
    narrow = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            spec = config.spec_for(name)
            if (
                spec.is_integer
                and spec.granularity == "group"
                and module.in_features % spec.group_size
            ):
                narrow.append(name)
    return replace(config, keep=(*config.keep, *narrow)) if narrow else config


def quantize_policy(
    policy: Any, config: QuantConfig, deployed: bool, calibration: Iterable[Any] | None = None
) -> QuantConfig:
    """Quantize `policy.model` in place; returns the config as applied (with kept layers)."""
    applied = keep_ungroupable_layers(policy.model, config)
    quantize(policy.model, applied, calibration, deployed=deployed)  # replaces layers in place
    return applied


def needs_calibration(config: QuantConfig) -> bool:
    """True when the config's method reads calibration data (SmoothQuant, AWQ, GPTQ)."""
    return bool(METHOD_MODULES[config.method].NEEDS_CALIBRATION)
