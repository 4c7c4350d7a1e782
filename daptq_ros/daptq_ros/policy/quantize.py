"""Quantize a loaded VLA policy with a bit config (simulated or deployed), in place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from torch import nn

from daptq_ros.quant import QuantConfig, quantize
from daptq_ros.quant.api import METHOD_MODULES
from daptq_ros.quant.deploy import INT4_ROWS_MULTIPLE


def keep_narrow_layers(model: nn.Module, config: QuantConfig) -> QuantConfig:
    """The config plus keep entries for Linears too narrow for their group format's kernel.

    A VLA has tiny projections (a 4-D state or action in, a 4-D action out) that no per-group
    int4 format covers: the group must divide the input width and the int4 kernel packs output
    rows in tiles of 16. They hold a negligible share of the weights and stay in bf16.
    """
    narrow = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            spec = config.spec_for(name)
            grouped = spec.is_integer and spec.granularity == "group"
            too_narrow = (
                module.in_features % spec.group_size or module.out_features % INT4_ROWS_MULTIPLE
            )
            if grouped and too_narrow:
                narrow.append(name)
    return replace(config, keep=(*config.keep, *narrow)) if narrow else config


def quantize_policy(
    policy: Any, config: QuantConfig, deployed: bool, calibration: Iterable[Any] | None = None
) -> QuantConfig:
    """Quantize `policy.model` in place; returns the config as applied (with kept layers)."""
    applied = keep_narrow_layers(policy.model, config)
    quantize(policy.model, applied, calibration, deployed=deployed)  # replaces layers in place
    return applied


def needs_calibration(config: QuantConfig) -> bool:
    """True when the config's method reads calibration data (SmoothQuant, AWQ, GPTQ)."""
    return bool(METHOD_MODULES[config.method].NEEDS_CALIBRATION)
