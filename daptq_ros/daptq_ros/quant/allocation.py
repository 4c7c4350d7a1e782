"""Mixed-precision bit allocation: how many weight bits each Linear layer gets (METHOD.md §4.4).

Every allocator returns a bit map {layer name: bits}, 16 meaning bfloat16 (kept):

- `allocate_topk`, the paper's rule: rank layers by the drift sensitivity phi_l, the top
  fraction of layers stays bfloat16, the rest get `low_bits` (W4A8 with 8-bit activations).
- `allocate_budget` [beyond the paper]: per-layer bits b_l from {2, 3, 4, 8, 16} that

      minimise  sum_l phi_l * err_l(b_l)   s.t.   sum_l n_l * b_l <= B * sum_l n_l        (2)

  for n_l weights per layer and an average of B bits, solved exactly (multiple-choice knapsack).
- `qvla_allocate`, the QVLA-style baseline (METHOD.md §7): Hessian-diagonal saliency summed
  over output channels, greedy demotion to the same average bits.

The weight error of layer l at b bits, with Q_b the round-to-nearest fake quantization in the
format `format_for_bits` picks (the one `bit_map_config` writes and the kernels run), is

      err_l(b) = mean_{c,k} E[x_k^2] * (W_ck - Q_b(W)_ck)^2                                 (1)

with E[x_k^2] = 1 when no input statistics are given, and err_l(16) = 0.
"""

from __future__ import annotations

import fnmatch
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from daptq_ros.errors import ConfigError
from daptq_ros.quant.calibration import LayerStats
from daptq_ros.quant.config import HIGH_PRECISION_BITS, LayerOverride, QuantConfig, exact_pattern
from daptq_ros.quant.formats import WEIGHT_INT_BITS, WeightFormat, fake_quantize_weight
from daptq_ros.quant.kernel_fit import kernel_group_size

CANDIDATE_BITS: tuple[int, ...] = (2, 3, 4, 8, 16)  # 16 = bfloat16 (kept)
_ALLOWED_BITS: tuple[int, ...] = (*WEIGHT_INT_BITS, HIGH_PRECISION_BITS)


@dataclass(frozen=True)
class LayerCost:
    """One Linear layer's options: its weight count and err_l(b) of eq. (1) per bit width."""

    name: str
    numel: int
    errors: dict[int, float]


def format_for_bits(
    bits: int, in_features: int, group_size: int = 128, symmetric: bool = False
) -> WeightFormat:
    """The integer weight format a layer at `bits` gets: the one its deployed kernel runs.

    8 bits: symmetric per output channel (the int8 weight-only and W8A8 kernels).
    2-7 bits: groups of `group_size` inputs (the int4 kernel runs 2-4 bit codes; asymmetric
    unless `symmetric`) when the group size divides in_features; at 2-4 bits else the largest
    int4 group that does (quant.kernel_fit), else one scale per output channel (a dense kernel).
    """
    if bits not in WEIGHT_INT_BITS:
        raise ConfigError(
            f"format_for_bits: bits={bits!r} is not an integer weight width; allowed: "
            f"{', '.join(map(str, WEIGHT_INT_BITS))} (16 = bfloat16 has no integer format)"
        )
    if bits == 8:
        return WeightFormat(8, symmetric=True, granularity="channel", group_size=group_size)
    fitted = kernel_group_size(in_features, group_size) if bits <= 4 else None
    if fitted is None and in_features % group_size == 0:
        fitted = group_size  # 5-7 bits: simulated only, any dividing group
    if fitted is None:
        return WeightFormat(bits, symmetric, "channel", group_size)
    return WeightFormat(bits, symmetric, "group", fitted)


def input_second_moments(stats: Mapping[str, LayerStats]) -> dict[str, torch.Tensor]:
    """E[x_k^2] per input channel of each layer: diag(X^T X) / n if kept, else the row sample."""
    return {
        name: s.xtx.diagonal() / s.n_rows if s.xtx is not None else s.sample().pow(2).mean(dim=0)
        for name, s in stats.items()
    }


@torch.no_grad()
def weight_error_table(
    model: nn.Module,
    layer_names: Sequence[str],
    bits: Sequence[int] = CANDIDATE_BITS,
    group_size: int = 128,
    symmetric: bool = False,
    input_sq: Mapping[str, torch.Tensor] | None = None,
) -> list[LayerCost]:
    """err_l(b) of eq. (1) for each named Linear layer and bit width (input-weighted if given)."""
    bits = _check_choices(bits, "weight_error_table bits")
    linears = _linears(model, layer_names)
    table = []
    for name in layer_names:
        weight = linears[name].weight
        x_sq = None if input_sq is None else _channel_vector(input_sq, name, weight, "input_sq")
        errors = {
            b: float(_row_sq_error(weight, b, group_size, symmetric, x_sq).sum()) / weight.numel()
            for b in bits
        }
        table.append(LayerCost(name, weight.numel(), errors))
    return table


def allocate_topk(
    sensitivity: Mapping[str, float],
    layers: Sequence[LayerCost],
    keep_fraction: float = 0.3,
    low_bits: int = 4,
    never: Sequence[str] = (),
) -> dict[str, int]:
    """The paper's rule: the top `keep_fraction` of layers by phi_l stay 16 bits, the rest low.

    The fraction counts layers, as in the paper, not parameters: of the layers outside `never`,
    round(keep_fraction * count) (halves up) are kept, highest phi first (ties: layer order).
    Layers in `never` (e.g. the last two action-head blocks) are always 16 and not ranked.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ConfigError(
            f"allocate_topk: keep_fraction={keep_fraction!r} is outside [0, 1]; pass the "
            "fraction of layers kept in bfloat16 (the paper uses 0.3)"
        )
    if low_bits not in WEIGHT_INT_BITS:
        raise ConfigError(
            f"allocate_topk: low_bits={low_bits!r} is not an integer weight width; allowed: "
            f"{', '.join(map(str, WEIGHT_INT_BITS))}"
        )
    phi = _check_sensitivity(sensitivity, layers)
    fixed = _check_never(never, layers)
    ranked = sorted(
        (layer.name for layer in layers if layer.name not in fixed), key=lambda n: -phi[n]
    )
    n_keep = math.floor(keep_fraction * len(ranked) + 0.5)
    kept = fixed | set(ranked[:n_keep])
    return {layer.name: HIGH_PRECISION_BITS if layer.name in kept else low_bits for layer in layers}


def allocate_budget(
    sensitivity: Mapping[str, float],
    layers: Sequence[LayerCost],
    average_bits: float,
    choices: Sequence[int] = CANDIDATE_BITS,
    never: Sequence[str] = (),
) -> dict[str, int]:
    """The exact optimum of eq. (2): per-layer bits minimising sum phi_l err_l(b_l) in budget.

    Eq. (2) is a multiple-choice knapsack (one option per layer; Kellerer, Pferschy & Pisinger,
    "Knapsack Problems", 2004, ch. 11) with integer costs n_l * b_l and the integer capacity
    floor(B * sum n_l) (exact: B is read as the fraction its float is). It is solved by dynamic
    programming over layers that keeps only the Pareto frontier of (cost, objective) partial
    solutions (Nemhauser & Ullmann 1969): a partial solution costing no less and scoring no
    better than another can never complete to a better solution, so dropping it keeps the
    optimum; partial solutions that cannot fit even with the cheapest remaining options are
    dropped as well. No cost is rounded, so the result is exact (up to float addition of the
    objective), and the frontier never holds more states than the dense DP table has cells in
    one row (distinct costs <= capacity / gcd of the costs) -- usually far fewer, so no
    resolution needs choosing and no fallback is needed. Layers in `never` are fixed at 16 bits
    and their bits count in the budget; equal objectives resolve to the cheaper solution.
    """
    choices = _check_choices(choices, "allocate_budget choices")
    phi = _check_sensitivity(sensitivity, layers)
    fixed = _check_never(never, layers)
    capacity = _capacity(average_bits, layers, fixed, choices[0], "allocate_budget")
    free = [layer for layer in layers if layer.name not in fixed]
    for layer in free:
        _check_errors(layer, choices)
    capacity -= sum(layer.numel * HIGH_PRECISION_BITS for layer in layers if layer.name in fixed)
    pick = _solve_mckp(
        [[layer.numel * b for b in choices] for layer in free],
        [[phi[layer.name] * layer.errors[b] for b in choices] for layer in free],
        capacity,
    )
    bit_map = {layer.name: choices[i] for layer, i in zip(free, pick, strict=True)}
    return {layer.name: bit_map.get(layer.name, HIGH_PRECISION_BITS) for layer in layers}


def _solve_mckp(costs: list[list[int]], values: list[list[float]], capacity: int) -> list[int]:
    """Option index per item minimising the summed value with summed cost <= capacity."""
    rest_min = np.cumsum([0] + [min(c) for c in reversed(costs)])[::-1]  # cheapest completion
    cost, value = np.zeros(1, dtype=np.int64), np.zeros(1)
    parents, options = [], []
    for item, (item_cost, item_value) in enumerate(zip(costs, values, strict=True)):
        n_options = len(item_cost)
        all_cost = (cost[:, None] + np.asarray(item_cost, dtype=np.int64)).ravel()
        all_value = (value[:, None] + np.asarray(item_value)).ravel()
        fits = np.flatnonzero(all_cost + rest_min[item + 1] <= capacity)
        order = fits[np.lexsort((all_value[fits], all_cost[fits]))]  # by cost, then value
        # Pareto frontier: keep a state only if it beats every cheaper (or equal-cost) state.
        best_cheaper = np.minimum.accumulate(np.concatenate(([np.inf], all_value[order][:-1])))
        frontier = order[all_value[order] < best_cheaper]
        cost, value = all_cost[frontier], all_value[frontier]
        parents.append(frontier // n_options)
        options.append(frontier % n_options)
    pick = [0] * len(costs)
    state = int(np.argmin(value))
    for item in reversed(range(len(costs))):
        pick[item] = int(options[item][state])
        state = int(parents[item][state])
    return pick


@torch.no_grad()
def qvla_allocate(
    hessian_diag: Mapping[str, torch.Tensor],
    model: nn.Module,
    layers: Sequence[LayerCost],
    average_bits: float,
    choices: Sequence[int] = (4, 8, 16),
    never: Sequence[str] = (),
    group_size: int = 128,
    symmetric: bool = False,
) -> dict[str, int]:
    """QVLA-style baseline: greedy Hessian-saliency bit demotion down to the average-bits budget.

    After QVLA (arXiv 2025, channel-wise action-sensitivity bit allocation for VLA models), the
    OBS-style saliency of quantizing output channel c at b bits is

        s_c(b) = sum_k H_kk * (W_ck - Q_b(W)_ck)^2,   H_kk = E[x_k^2] (diag of X^T X / n)    (3)

    QVLA mixes bits per channel; the deployed kernels take one format per layer, so a layer's
    saliency is the sum over its channels, S_l(b) = sum_c s_c(b). Every layer starts at
    max(choices); a min-heap repeatedly applies the one-step demotion b -> b' (the next lower
    choice) with the smallest saliency increase per byte saved,

        (S_l(b') - S_l(b)) / (n_l * (b - b') / 8),                                          (4)

    until the average bits reach the budget. Layers in `never` stay 16 and count in the budget.
    """
    choices = _check_choices(choices, "qvla_allocate choices")
    fixed = _check_never(never, layers)
    capacity = _capacity(average_bits, layers, fixed, choices[0], "qvla_allocate")
    free = [layer for layer in layers if layer.name not in fixed]
    linears = _linears(model, [layer.name for layer in free])
    saliency = {}
    for layer in free:
        weight = linears[layer.name].weight
        h_diag = _channel_vector(hessian_diag, layer.name, weight, "hessian_diag")
        saliency[layer.name] = [
            float(_row_sq_error(weight, b, group_size, symmetric, h_diag).sum()) for b in choices
        ]
    level = {layer.name: len(choices) - 1 for layer in free}
    numel = {layer.name: layer.numel for layer in layers}

    def demotion(index: int, name: str) -> tuple[float, int, str]:
        """Heap entry of eq. (4) for demoting `name` one step from its current level."""
        i = level[name]
        bytes_saved = numel[name] * (choices[i] - choices[i - 1]) / 8
        return (saliency[name][i - 1] - saliency[name][i]) / bytes_saved, index, name

    heap = [demotion(index, layer.name) for index, layer in enumerate(free) if len(choices) > 1]
    heapq.heapify(heap)
    total = sum(numel[name] * choices[level[name]] for name in level)
    total += sum(layer.numel * HIGH_PRECISION_BITS for layer in layers if layer.name in fixed)
    # _capacity guaranteed that all layers at min(choices) fit, so the heap cannot run dry.
    while total > capacity:
        _, index, name = heapq.heappop(heap)
        i = level[name]
        total -= numel[name] * (choices[i] - choices[i - 1])
        level[name] = i - 1
        if i - 1 > 0:
            heapq.heappush(heap, demotion(index, name))
    return {
        layer.name: choices[level[layer.name]] if layer.name in level else HIGH_PRECISION_BITS
        for layer in layers
    }


def bit_map_config(
    base: QuantConfig, bit_map: Mapping[str, int], name: str, model: nn.Module
) -> QuantConfig:
    """An ordinary QuantConfig giving each mapped layer its bits (16: keep, else an override).

    Names are matched exactly (fnmatch characters escaped). Formats come from `format_for_bits`
    with the base's group size and symmetry, activation bits and the method from the base;
    layers outside the map keep the base's spec. The model gives each layer's in_features.
    """
    linears = _linears(model, list(bit_map))
    keep, overrides = list(base.keep), list(base.overrides)
    for layer_name, bits in bit_map.items():
        if bits not in _ALLOWED_BITS:
            raise ConfigError(
                f"bit map '{name}': layer '{layer_name}' has bits={bits!r}; allowed: "
                f"{', '.join(map(str, _ALLOWED_BITS))}"
            )
        pattern = exact_pattern(layer_name)
        if bits == HIGH_PRECISION_BITS:
            keep.append(pattern)
            continue
        clash = next((p for p in base.keep if fnmatch.fnmatchcase(layer_name, p)), None)
        if clash is not None:
            raise ConfigError(
                f"bit map '{name}': layer '{layer_name}' is mapped to {bits} bits but the base "
                f"config '{base.name}' keeps it in bfloat16 (keep pattern '{clash}'); remove "
                "the pattern from the base or map the layer to 16"
            )
        fmt = format_for_bits(
            bits, linears[layer_name].in_features, base.group_size, base.symmetric
        )
        changes = {
            "weight_bits": fmt.bits,
            "symmetric": fmt.symmetric,
            "granularity": fmt.granularity,
            "group_size": fmt.group_size,
        }
        overrides.append(LayerOverride(pattern, changes))
    return replace(base, keep=tuple(keep), overrides=tuple(overrides), name=name)


def average_bits(bit_map: Mapping[str, int], layers: Sequence[LayerCost]) -> float:
    """Weight-count-weighted average bits of a bit map over `layers`."""
    return weighted_bits(bit_map, {layer.name: layer.numel for layer in layers})


def weighted_bits(bit_map: Mapping[str, int], counts: Mapping[str, int]) -> float:
    """The average weight bits of every report: the bits of each layer of `counts` (name ->
    weight count) weighted by its weights (16 for kept layers, 32 for FP32)."""
    missing = [name for name in counts if name not in bit_map]
    if missing:
        raise ConfigError(
            f"average bits: layer '{missing[0]}' has no bits in the bit map; map every layer "
            "(16 for kept layers)"
        )
    return sum(n * bit_map[name] for name, n in counts.items()) / sum(counts.values())


def _row_sq_error(
    weight: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool,
    x_sq: torch.Tensor | None,
) -> torch.Tensor:
    """Per output channel, sum_k x_sq_k (W_ck - Q_b(W)_ck)^2 (x_sq = 1 when None); 16 bits: 0."""
    w = weight.detach().float()
    if bits == HIGH_PRECISION_BITS:
        return torch.zeros(w.shape[0])
    fmt = format_for_bits(bits, w.shape[1], group_size, symmetric)
    dw_sq = (w - fake_quantize_weight(w, fmt)).pow(2)
    if x_sq is not None:
        dw_sq = dw_sq * x_sq.float()
    return dw_sq.sum(dim=1)


def _linears(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Linear]:
    """The named nn.Linear modules, or a ConfigError naming the first name that is not one."""
    modules = dict(model.named_modules())
    for name in names:
        if not isinstance(modules.get(name), nn.Linear):
            example = next((n for n, m in modules.items() if isinstance(m, nn.Linear)), "none")
            raise ConfigError(
                f"layer '{name}' is not an nn.Linear of the model; pass names as "
                f"model.named_modules() spells them (e.g. '{example}')"
            )
    return {name: modules[name] for name in names}


def _channel_vector(
    vectors: Mapping[str, torch.Tensor], name: str, weight: torch.Tensor, what: str
) -> torch.Tensor:
    """The per-input-channel statistic of one layer, checked against its in_features."""
    if name not in vectors:
        raise ConfigError(
            f"{what} has no entry for layer '{name}'; calibrate every allocated layer "
            "(input_second_moments(collect_layer_stats(...)))"
        )
    vector = vectors[name]
    if vector.shape != (weight.shape[1],):
        raise ConfigError(
            f"{what}['{name}'] has shape {tuple(vector.shape)}, the layer has in_features="
            f"{weight.shape[1]}; pass one value per input channel"
        )
    return vector


def _check_choices(choices: Sequence[int], what: str) -> tuple[int, ...]:
    """Sorted distinct bit widths, each an integer width or 16."""
    bad = [b for b in choices if b not in _ALLOWED_BITS]
    if bad or not choices:
        raise ConfigError(
            f"{what}={tuple(choices)!r} is not allowed; choose from "
            f"{', '.join(map(str, _ALLOWED_BITS))} (at least one)"
        )
    return tuple(sorted(set(choices)))


def _check_sensitivity(
    sensitivity: Mapping[str, float], layers: Sequence[LayerCost]
) -> dict[str, float]:
    """phi_l for every layer, each finite and >= 0 (a mean absolute gradient)."""
    phi = {}
    for layer in layers:
        if layer.name not in sensitivity:
            raise ConfigError(
                f"sensitivity has no phi for layer '{layer.name}'; compute the sensitivity "
                "over the same layers as the error table"
            )
        value = float(sensitivity[layer.name])
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"sensitivity['{layer.name}']={value!r} is not a finite value >= 0; phi is a "
                "mean absolute gradient: check the calibration loss for NaN/inf"
            )
        phi[layer.name] = value
    return phi


def _check_never(never: Sequence[str], layers: Sequence[LayerCost]) -> set[str]:
    """The never-quantized names, each one a layer of the table."""
    names = {layer.name for layer in layers}
    unknown = [n for n in never if n not in names]
    if unknown:
        raise ConfigError(
            f"never: '{unknown[0]}' is not a layer of the table; list exact layer names "
            "from the error table"
        )
    return set(never)


def _check_errors(layer: LayerCost, choices: tuple[int, ...]) -> None:
    """Every choice has a finite error in the layer's table."""
    for b in choices:
        if b not in layer.errors or not math.isfinite(layer.errors[b]):
            raise ConfigError(
                f"layer '{layer.name}' has no finite error at {b} bits; build the table with "
                f"weight_error_table(..., bits={choices})"
            )


def _capacity(
    average_bits: float, layers: Sequence[LayerCost], fixed: set[str], min_bits: int, who: str
) -> int:
    """The integer budget floor(B * sum n_l); a ConfigError if even the cheapest map exceeds it."""
    if not isinstance(average_bits, (int, float)) or not math.isfinite(average_bits):
        raise ConfigError(f"{who}: average_bits={average_bits!r} must be a finite number of bits")
    total = sum(layer.numel for layer in layers)
    capacity = math.floor(Fraction(average_bits) * total)
    cheapest = sum(
        layer.numel * (HIGH_PRECISION_BITS if layer.name in fixed else min_bits) for layer in layers
    )
    if cheapest > capacity:
        minimum = math.ceil(Fraction(cheapest, total) * 10_000) / 10_000
        raise ConfigError(
            f"{who}: average_bits={average_bits} is below the smallest feasible average "
            f"{minimum} ({min_bits} bits everywhere, {len(fixed)} never-quantized layers at 16); "
            f"raise average_bits to at least {minimum} or add lower bit choices"
        )
    return capacity
