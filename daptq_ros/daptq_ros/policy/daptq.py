"""DA-PTQ on a VLA policy: profile, allocate bits, quantize, compensate the interface, fold.

The pipeline of METHOD.md §5 on a loaded model directory, in place (simulated quantization,
so the result saves as a quantized model directory and deploys to the real kernels later):

1. FP profiling over the calibration batches: the interface layers' output statistics
   (mu_FP, Sigma_FP) and the layer sensitivities phi_l = mean |dL_drift/dW_l| under the
   action-head loss weighted by the drift scores s_j.
2. Allocation: the paper's top-k (k = 30 % of the layers stay bf16, the rest W4A8) or the
   budgeted multiple-choice knapsack; the last action-head blocks are never quantized.
3. Quantize with the bit map; a second pass collects the quantized interface statistics.
4. CSRC: solve gain, shift and low-rank M per interface layer; fold them into the FP weights,
   re-quantize the folded weights, then refit the shift on the result (METHOD.md §3 [open]).
   Or (`csrc_layers="action-path"`, ours) on the layers of <= 3 bits the actions depend on
   whose output covariance is the most distorted, kept only if it lowers the calibration
   action loss: where bench/csrc_study.py found the structured distortion on our families.
   `csrc_fold="scales"` (ours) folds only the per-channel gain and shift, into the quantized
   layers' scales and biases: exact at any bit width, where re-quantizing a folded 2-3 bit
   weight brings new error the fit never saw. Either way the report gives the action loss on
   the calibration batches before and after.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from daptq_ros.errors import ConfigError
from daptq_ros.policy.families import Batch, FamilyAdapter
from daptq_ros.policy.sensitivity import layer_sensitivities
from daptq_ros.quant import QuantConfig, quantize
from daptq_ros.quant.allocation import (
    allocate_budget,
    allocate_topk,
    average_bits,
    bit_map_config,
    weight_error_table,
)
from daptq_ros.quant.config import LayerSpec
from daptq_ros.quant.csrc import (
    Compensation,
    CSRCConfig,
    collect_output_stats,
    compensation_report,
    fold_into_linear,
    fold_into_quantized,
    parameter_signature,
    solve_compensation,
    solve_diagonal,
)
from daptq_ros.quant.kernel_fit import bit_map_fallbacks, layer_fallbacks

ALLOCATIONS = ("topk", "budget", "uniform")
CSRC_LAYERS = ("interface", "action-path")  # where CSRC compensates (see the module docstring)
CSRC_FOLDS = ("requantize", "scales")  # how: see compensate_layers and compensate_scales
SCORING_SEED_OFFSET = 10_000  # noise draws of the loss that decides whether CSRC is kept
ROUNDINGS = ("rtn", "gptq")  # how the low-bit layers of the bit map are rounded
BLOCK_INDEX = re.compile(r"\.(\d+)\.")
PROTECTED_SHARE = 6  # protect at most 1 of every 6 action-head blocks (2 of CogACT's 12)


@dataclass(frozen=True)
class DaptqOptions:
    """What DA-PTQ does; the defaults are the paper's (top-k 30 %, W4A8, 2 protected blocks)."""

    allocation: str = "topk"  # topk | budget | uniform (uniform: the "CSRC only" ablation)
    keep_fraction: float = 0.3
    average_bits: float = 4.5  # budgeted allocation: numel-weighted average weight bits
    low_bits: int = 4
    activation_bits: int | None = 8
    group_size: int = 128
    protected_blocks: int = 2  # last action-head blocks kept in bf16
    compensate: bool = True  # CSRC on the interface layers
    csrc_layers: str = "interface"  # interface (the paper) | action-path (ours)
    csrc_top: int = 4  # action-path: how many of the most distorted layers
    csrc_max_bits: int = 3  # action-path: only layers at this many weight bits or fewer
    csrc_fold: str = "requantize"  # requantize (the paper) | scales (ours, diagonal, exact)
    rounding: str = "rtn"  # rtn (the paper) | gptq (Hessian error feedback, ours)
    csrc: CSRCConfig = field(default_factory=CSRCConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(
                f"allocation {self.allocation!r} is unknown; use one of {', '.join(ALLOCATIONS)}"
            )
        if self.csrc_layers not in CSRC_LAYERS:
            raise ConfigError(
                f"CSRC layers {self.csrc_layers!r} are unknown; use one of {', '.join(CSRC_LAYERS)}"
            )
        if self.csrc_fold not in CSRC_FOLDS:
            raise ConfigError(
                f"CSRC fold {self.csrc_fold!r} is unknown; use one of {', '.join(CSRC_FOLDS)}"
            )
        if self.rounding not in ROUNDINGS:
            raise ConfigError(
                f"rounding {self.rounding!r} is unknown; use one of {', '.join(ROUNDINGS)}"
            )


@dataclass
class DaptqResult:
    """The bit config as applied, the profiling results and the calibration report."""

    config: QuantConfig
    sensitivities: dict[str, float]
    protected: list[str]
    compensation: dict[str, Any]
    timings: dict[str, float]
    fold_check: bool
    kernel_fallbacks: list[str]  # layers whose width the low-bit format did not fit (kernel_fit)


class LossCall:
    """A calibration item: run the family's training loss on one batch (no gradients)."""

    def __init__(self, adapter: FamilyAdapter, batch: Batch, seed: int) -> None:
        self.adapter, self.batch, self.seed = adapter, batch, seed

    def __call__(self, model: nn.Module) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            return self.adapter.loss(model, self.batch, generator=generator)


def calibration_calls(adapter: FamilyAdapter, batches: Sequence[Batch], seed: int) -> list:
    """The batches as calibration items for quant (hooks see the loss's forward pass)."""
    return [LossCall(adapter, batch, seed + i) for i, batch in enumerate(batches)]


def protected_layers(adapter: FamilyAdapter, model: nn.Module, blocks: int) -> list[str]:
    """The nn.Linear layers of the action head's last `blocks` numbered blocks.

    At most one block in PROTECTED_SHARE is protected: the paper keeps 2 of CogACT's 12 DiT
    blocks; keeping 2 of a 2-block head would leave the action head unquantized.
    """
    head = adapter.action_head_layers(model)
    indices = sorted({int(m.group(1)) for n in head if (m := BLOCK_INDEX.search(n))})
    blocks = min(blocks, len(indices) // PROTECTED_SHARE)
    last = set(indices[-blocks:]) if blocks else set()
    return [n for n in head if (m := BLOCK_INDEX.search(n)) and int(m.group(1)) in last]


def narrow_layers(model: nn.Module, group_size: int) -> list[str]:
    """Linears no int4 format fits (too few inputs or outputs): they stay in bf16."""
    spec = LayerSpec(4, None, False, "group", group_size)
    return [f.layer for f, changes in layer_fallbacks(model, lambda name: spec) if changes is None]


def linear_layer_names(model: nn.Module) -> list[str]:
    """Every nn.Linear of the model, in module order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def daptq_quantize(
    adapter: FamilyAdapter,
    model: nn.Module,
    batches: Sequence[Batch],
    dim_weights: torch.Tensor | None,
    options: DaptqOptions,
) -> tuple[nn.Module, DaptqResult]:
    """Run DA-PTQ on `model` (FP); returns the quantized model (simulated) and the report."""
    timings: dict[str, float] = {}
    calls = calibration_calls(adapter, batches, options.seed)
    interface = adapter.interface_layers(model)

    start = time.perf_counter()
    rows = options.csrc.max_samples
    fp_stats = collect_output_stats(model, interface, calls, max_samples=rows)
    phi = layer_sensitivities(adapter, model, batches, dim_weights, seed=options.seed)
    timings["profile_s"] = time.perf_counter() - start

    start = time.perf_counter()
    names = linear_layer_names(model)
    protected = protected_layers(adapter, model, options.protected_blocks)
    # Layers no low-bit kernel covers (4-D state/action projections) stay bf16 as well.
    fixed = [*protected, *narrow_layers(model, options.group_size)]
    costs = weight_error_table(model, names, group_size=options.group_size)
    if options.allocation == "topk":
        bit_map = allocate_topk(phi, costs, options.keep_fraction, options.low_bits, fixed)
    elif options.allocation == "budget":
        bit_map = allocate_budget(phi, costs, options.average_bits, never=fixed)
    else:
        bit_map = {n: 16 if n in fixed else options.low_bits for n in names}
    base = QuantConfig(
        method=options.rounding,
        weight_bits=options.low_bits,
        activation_bits=options.activation_bits,
        group_size=options.group_size,
        name="daptq",
    )
    config = bit_map_config(base, bit_map, f"daptq_{options.allocation}", model)
    # What the allocation's formats (quant.allocation.format_for_bits) did with widths the
    # group does not fit: listed for every layer left at low bits or kept for its width.
    low = LayerSpec(options.low_bits, options.activation_bits, False, "group", options.group_size)
    fallbacks = [f.describe() for f in bit_map_fallbacks(model, config, low)]
    timings["allocate_s"] = time.perf_counter() - start

    fp_model = copy.deepcopy(model) if options.compensate else None
    start = time.perf_counter()
    quantized = quantize(model, config, calls)
    timings["quantize_s"] = time.perf_counter() - start

    report: dict[str, Any] = {"average_bits": average_bits(bit_map, costs), "layers": {}}
    fold_ok = True
    if fp_model is not None:
        start = time.perf_counter()
        if options.csrc_layers == "interface":
            targets, target_stats = list(interface), fp_stats
        else:
            low_bit = [n for n, b in bit_map.items() if b <= options.csrc_max_bits and phi[n] > 0]
            targets, target_stats = _most_distorted(fp_model, quantized, low_bit, calls, options)
        quantized, compensation, fold_ok = _compensate(
            adapter, fp_model, quantized, config, targets, target_stats, calls, batches, options
        )
        report.update(compensation)
        timings["csrc_s"] = time.perf_counter() - start
    result = DaptqResult(config, phi, protected, report, timings, fold_ok, fallbacks)
    return quantized, result


def compensate_layers(
    fp_model: nn.Module,
    quantized: nn.Module,
    config: QuantConfig,
    interface: Sequence[str],
    calls: Sequence[Any],
    fp_stats: dict[str, Any],
    csrc: CSRCConfig,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """CSRC on the layers `interface` (fp_stats must hold theirs): fit on the quantized model,
    fold into the FP weights, re-quantize, refit the shifts. The compensated model, the
    mismatch report per layer (before / after), and whether the fold added no parameter."""
    rows = csrc.max_samples
    q_stats = collect_output_stats(quantized, interface, calls, max_samples=rows)
    signature = parameter_signature(quantized)
    modules = dict(fp_model.named_modules())
    compensations: dict[str, Compensation] = {}
    for name in interface:
        layer = modules[name]
        comp = solve_compensation(fp_stats[name], q_stats[name], csrc)
        if layer.bias is None:
            # A bias-free layer (e.g. Gemma's k/v_proj) cannot take the shift without a new
            # parameter; the fold check demands none, so only M is folded there.
            comp = Compensation(comp.gain, torch.zeros_like(comp.shift), comp.U, comp.V)
        fold_into_linear(layer, comp)
        compensations[name] = comp
    folded = quantize(fp_model, config, calls)
    after = collect_output_stats(folded, interface, calls, max_samples=rows)
    folded_modules = dict(folded.named_modules())
    for name in interface:
        bias = getattr(folded_modules[name], "bias", None)
        if bias is not None:
            # Refit d on the re-quantized result: the bias stays float, so this is exact.
            with torch.no_grad():
                bias += (fp_stats[name].mean - after[name].mean).to(bias)
    final = collect_output_stats(folded, interface, calls, max_samples=rows)
    report = compensation_report(fp_stats, q_stats, final)
    return folded, report, parameter_signature(folded) == signature


def compensate_scales(
    quantized: nn.Module,
    layers: Sequence[str],
    calls: Sequence[Any],
    fp_stats: dict[str, Any],
    csrc: CSRCConfig,
) -> tuple[nn.Module, dict[str, Any]]:
    """CSRC's per-channel gain and shift folded into each quantized layer's scales and bias, in
    module order (each fit on the output of the layers compensated before it): exact at any
    bit width, nothing re-quantized, no cross-channel M. The model, and the mismatch report."""
    rows = csrc.max_samples
    before = collect_output_stats(quantized, layers, calls, max_samples=rows)
    modules = dict(quantized.named_modules())
    for name in layers:
        layer = modules[name]
        q_stats = collect_output_stats(quantized, [name], calls, max_samples=rows)[name]
        comp = solve_diagonal(fp_stats[name], q_stats, csrc)
        if layer.bias is None:
            comp = Compensation(comp.gain, torch.zeros_like(comp.shift), comp.U, comp.V)
        fold_into_quantized(layer, comp)
    after = collect_output_stats(quantized, layers, calls, max_samples=rows)
    return quantized, compensation_report(fp_stats, before, after)


def _most_distorted(
    fp_model: nn.Module,
    quantized: nn.Module,
    candidates: Sequence[str],
    calls: Sequence[Any],
    options: DaptqOptions,
) -> tuple[list[str], dict[str, Any]]:
    """The `csrc_top` candidates with the largest output covariance error against FP, in
    module order, and their FP output statistics."""
    rows = options.csrc.max_samples
    fp_stats = collect_output_stats(fp_model, candidates, calls, max_samples=rows)
    q_stats = collect_output_stats(quantized, candidates, calls, max_samples=rows)
    mismatch = compensation_report(fp_stats, q_stats, q_stats)
    ranked = sorted(candidates, key=lambda n: -mismatch[n]["before"]["cov_rel_error"])
    chosen = set(ranked[: options.csrc_top])
    targets = [n for n in candidates if n in chosen]
    return targets, {n: fp_stats[n] for n in targets}


def _compensate(
    adapter: FamilyAdapter,
    fp_model: nn.Module,
    quantized: nn.Module,
    config: QuantConfig,
    targets: Sequence[str],
    fp_stats: dict[str, Any],
    calls: Sequence[Any],
    batches: Sequence[Batch],
    options: DaptqOptions,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """CSRC on `targets`, folded as `options.csrc_fold` says, with its effect on the action
    loss over the calibration batches (other noise draws than the fit's). On the interface (the
    paper) it is always applied; on the action path only if that loss falls. The model, the
    report (placement, fold, mismatch per layer, the FP loss and the quantized one without and
    with CSRC, kept) and the fold check."""
    report: dict[str, Any] = {
        "placement": options.csrc_layers,
        "fold": options.csrc_fold,
        "layers": {},
        "kept": False,
    }
    if not targets:
        return quantized, report, True
    scoring = calibration_calls(adapter, batches, options.seed + SCORING_SEED_OFFSET)
    report["loss_fp"] = mean_loss(scoring, fp_model)  # before any fold changes fp_model
    before = mean_loss(scoring, quantized)
    fold_ok = True
    if options.csrc_fold == "scales":
        compensated, layers = compensate_scales(
            copy.deepcopy(quantized), targets, calls, fp_stats, options.csrc
        )
    else:
        compensated, layers, fold_ok = compensate_layers(
            fp_model, quantized, config, targets, calls, fp_stats, options.csrc
        )
    after = mean_loss(scoring, compensated)
    kept = options.csrc_layers == "interface" or after < before
    report.update(layers=layers, loss_before=before, loss_after=after, kept=kept)
    return (compensated, report, fold_ok) if kept else (quantized, report, True)


def mean_loss(calls: Sequence[LossCall], model: nn.Module) -> float:
    """The action head's training loss averaged over the calibration calls."""
    return sum(float(call(model)) for call in calls) / len(calls)
