"""Fit a bit config to the deployed kernels layer by layer, and list every change made.

A bit config names one group size for every layer, but layer widths vary (the released pi0's
SigLIP MLP is 4304 wide: no int4 group of 32, 64 or 128 divides it). Quantization never skips
such a layer silently. Each layer whose width does not fit gets the nearest format that its
kernels run, and the change is reported as a `Fallback`:

| layer (integer spec)                      | becomes                                      |
|-------------------------------------------|----------------------------------------------|
| 2-4 bit, out_features not a multiple of 16 | kept in bf16 (int4 packs rows in tiles of 16) |
| 2-4 bit, in_features < 32                 | kept in bf16 (narrower than any int4 group)   |
| 2-4 bit, group does not divide in_features | the largest int4 group that divides it        |
| 2-4 bit, no int4 group divides it         | per-channel scales, on a dense kernel         |
| 8 bit weight-only, in_features % 16       | kept in bf16 (the int8 kernel reads 16 columns) |

A config whose formats no kernel runs at all (5-7 bit weights, an int4 group of 8, 8-bit
asymmetric weights) is refused before any calibration by `check_deployable`, with the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from daptq_ros.errors import ConfigError
from daptq_ros.quant.config import LayerOverride, LayerSpec, QuantConfig, exact_pattern
from daptq_ros.quant.deploy import INT4_GROUP_SIZES, INT4_ROWS_MULTIPLE, INT8_COLUMNS_MULTIPLE

KEPT = "kept in bf16"  # the change of a layer no format of its bits fits


@dataclass(frozen=True)
class Fallback:
    """What one layer became instead of the config's format, and why."""

    layer: str
    change: str  # e.g. "group 128 -> 64", "per-channel scales", "kept in bf16"
    why: str

    def describe(self) -> str:
        """'layer: change (why)'."""
        return f"{self.layer}: {self.change} ({self.why})"


def kernel_group_size(in_features: int, wanted: int) -> int | None:
    """The int4 kernel's group size for a layer `in_features` wide: `wanted` when it divides,
    else the largest supported size that does; None when none does."""
    if wanted in INT4_GROUP_SIZES and in_features % wanted == 0:
        return wanted
    return next((g for g in sorted(INT4_GROUP_SIZES, reverse=True) if in_features % g == 0), None)


def format_problem(bits: int, symmetric: bool, granularity: str, group_size: int) -> str | None:
    """Why no deployed kernel runs integer weights of this format (None: one does), with the fix."""
    if bits <= 4:
        if granularity == "tensor":
            return "granularity tensor: no kernel runs per-tensor scales; use group"
        if granularity == "group" and group_size not in INT4_GROUP_SIZES:
            sizes = ", ".join(map(str, INT4_GROUP_SIZES))
            return f"group_size {group_size}: the int4 kernel takes groups of {sizes}; use one"
        return None
    if bits == 8:
        if not symmetric or granularity != "channel":
            return (
                "8-bit weights run symmetric per output channel only; set symmetric: true, "
                "granularity: channel"
            )
        return None
    return f"{bits}-bit weights have no kernel; use 2-4 or 8 bits"


def check_deployable(config: QuantConfig) -> None:
    """Refuse (ConfigError) a config with a format no deployed kernel runs, naming the fix."""
    specs = [("", config.default_spec())]
    specs += [
        (f"overrides['{o.pattern}']: ", replace(config.default_spec(), **o.changes))
        for o in config.overrides
    ]
    for where, spec in specs:
        if not spec.is_integer:
            continue
        problem = format_problem(
            spec.weight_bits, spec.symmetric, spec.granularity, spec.group_size
        )
        if problem:
            raise ConfigError(
                f"bit config '{config.name}': {where}{problem} (no deployed kernel runs "
                f"W{spec.weight_bits} {spec.granularity}, so the quantized model could not run)"
            )


def layer_fallback(
    name: str, layer: nn.Linear, spec: LayerSpec
) -> tuple[Fallback, dict[str, object] | None] | None:
    """How layer `name` at the integer `spec` must change for its kernels, or None.

    The dict is the spec override to apply; None with a Fallback means: keep it in bf16.
    """
    bits, granularity, group_size = spec.weight_bits, spec.granularity, spec.group_size
    width, rows = layer.in_features, layer.out_features
    if bits <= 4 and granularity == "group":
        if rows % INT4_ROWS_MULTIPLE:
            why = f"{rows} outputs; the int4 kernel packs rows in tiles of {INT4_ROWS_MULTIPLE}"
            return Fallback(name, KEPT, why), None
        smallest = min(INT4_GROUP_SIZES)
        if width < smallest:
            why = f"{width} inputs, narrower than the smallest int4 group ({smallest})"
            return Fallback(name, KEPT, why), None
        fitted = kernel_group_size(width, group_size)
        if fitted == group_size:
            return None
        if fitted is not None:
            why = f"{width} inputs are not a multiple of {group_size}"
            return Fallback(name, f"group {group_size} -> {fitted}", why), {"group_size": fitted}
        why = f"no int4 group divides {width} inputs; runs on a dense kernel"
        return Fallback(name, "per-channel scales", why), {"granularity": "channel"}
    if bits == 8 and spec.activation_bits is None and width % INT8_COLUMNS_MULTIPLE:
        why = f"{width} inputs; the int8 kernel reads columns in blocks of {INT8_COLUMNS_MULTIPLE}"
        return Fallback(name, KEPT, why), None
    return None


def layer_fallbacks(
    model: nn.Module, spec_for: Callable[[str], LayerSpec]
) -> list[tuple[Fallback, dict[str, object] | None]]:
    """Every Linear whose integer spec (`spec_for(name)`) must change for its kernels."""
    specs = {
        name: (module, spec)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and (spec := spec_for(name)).is_integer
    }
    found = [layer_fallback(name, module, spec) for name, (module, spec) in specs.items()]
    return [fallback for fallback in found if fallback is not None]


def fit_to_kernels(model: nn.Module, config: QuantConfig) -> tuple[QuantConfig, list[Fallback]]:
    """The config with each Linear's format fitted to its kernels, and what changed."""
    keep, overrides = list(config.keep), list(config.overrides)
    found = layer_fallbacks(model, config.spec_for)
    for fallback, changes in found:
        pattern = exact_pattern(fallback.layer)
        if changes is None:
            keep.append(pattern)
        else:
            overrides.append(LayerOverride(pattern, changes))
    fitted = replace(config, keep=tuple(keep), overrides=tuple(overrides))
    return fitted, [fallback for fallback, _ in found]


def bit_map_fallbacks(model: nn.Module, applied: QuantConfig, low: LayerSpec) -> list[Fallback]:
    """What fitting changed in a per-layer bit map (DA-PTQ, QVLA), whose formats were fitted
    while it was built (quant.allocation.format_for_bits): the layers kept for their width, and
    those at 2-4 bits whose group the `low` spec's width did not fit."""
    found = layer_fallbacks(model, lambda name: low)
    return [
        fallback
        for fallback, _ in found
        if fallback.change == KEPT or 0 < applied.spec_for(fallback.layer).weight_bits <= 4
    ]
