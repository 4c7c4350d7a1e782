"""Mixed-precision allocation: error table, top-k rule, exact knapsack, QVLA baseline, configs."""

import itertools
import random

import pytest
import torch
import yaml
from torch import nn

from daptq_ros.errors import ConfigError
from daptq_ros.quant import load_config
from daptq_ros.quant.allocation import (
    LayerCost,
    allocate_budget,
    allocate_topk,
    average_bits,
    bit_map_config,
    format_for_bits,
    input_second_moments,
    qvla_allocate,
    weight_error_table,
)
from daptq_ros.quant.api import layer_plan
from daptq_ros.quant.calibration import collect_layer_stats
from daptq_ros.quant.config import QuantConfig
from daptq_ros.quant.formats import fake_quantize_weight


def _model(widths=(256, 128, 256, 96, 64)) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Linear(a, b) for a, b in itertools.pairwise(widths)))


def _names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _random_instance(seed: int, n_layers: int = 6) -> tuple[dict[str, float], list[LayerCost]]:
    rng = random.Random(seed)
    layers, phi = [], {}
    for i in range(n_layers):
        err4 = rng.uniform(0.1, 1.0)
        errors = {2: err4 * rng.uniform(10, 30), 3: err4 * rng.uniform(3, 6), 4: err4}
        errors |= {8: err4 * rng.uniform(0.001, 0.01), 16: 0.0}
        layers.append(LayerCost(f"l{i}", rng.randint(1, 40) * 16, errors))
        phi[f"l{i}"] = rng.uniform(0.0, 2.0)
    return phi, layers


def _objective(phi, layers, bit_map) -> float:
    return sum(phi[layer.name] * layer.errors[bit_map[layer.name]] for layer in layers)


def _brute_force(phi, layers, budget, choices=(2, 3, 4, 8, 16)) -> float:
    total = sum(layer.numel for layer in layers)
    best = float("inf")
    for bits in itertools.product(choices, repeat=len(layers)):
        if sum(layer.numel * b for layer, b in zip(layers, bits, strict=True)) <= budget * total:
            best = min(
                best,
                _objective(phi, layers, dict(zip([x.name for x in layers], bits, strict=True))),
            )
    return best


def test_format_for_bits_uses_asymmetric_groups_when_the_group_divides():
    fmt = format_for_bits(4, in_features=256, group_size=128)
    assert (fmt.bits, fmt.symmetric, fmt.granularity, fmt.group_size) == (4, False, "group", 128)


def test_format_for_bits_takes_the_int4_group_that_divides_else_per_channel():
    fitted = format_for_bits(3, in_features=96, group_size=128)
    assert (fitted.granularity, fitted.group_size) == ("group", 32)
    assert format_for_bits(3, in_features=4304, group_size=128).granularity == "channel"


def test_format_for_bits_puts_8_bits_symmetric_per_channel():
    fmt = format_for_bits(8, in_features=256)
    assert (fmt.symmetric, fmt.granularity) == (True, "channel")


def test_error_table_is_the_mean_squared_rtn_error():
    model = _model()
    [cost] = weight_error_table(model, ["0"], bits=(4,))
    w = model[0].weight.detach()
    expected = (w - fake_quantize_weight(w, format_for_bits(4, 256))).pow(2).mean()
    assert cost.numel == w.numel()
    assert cost.errors[4] == pytest.approx(float(expected), rel=1e-6)


def test_error_table_falls_with_bits_and_is_zero_at_16():
    for cost in weight_error_table(_model(), ["0", "3"]):
        errors = [cost.errors[b] for b in (2, 3, 4, 8)]
        assert errors == sorted(errors, reverse=True)
        assert cost.errors[16] == 0.0


def test_error_table_weights_by_input_second_moments():
    model = _model()
    x_sq = torch.zeros(256)
    x_sq[:128] = 2.0  # the second group's inputs never fire
    [weighted] = weight_error_table(model, ["0"], bits=(4,), input_sq={"0": x_sq})
    w = model[0].weight.detach()
    dw_sq = (w - fake_quantize_weight(w, format_for_bits(4, 256))).pow(2)
    assert weighted.errors[4] == pytest.approx(float((dw_sq * x_sq).mean()), rel=1e-6)


def test_input_second_moments_are_mean_squared_inputs():
    model = _model()
    batches = [torch.randn(8, 256) for _ in range(3)]
    stats = collect_layer_stats(model, batches, ["0"], keep_hessian=True)
    expected = torch.cat(batches).pow(2).mean(dim=0)
    torch.testing.assert_close(input_second_moments(stats)["0"], expected)


def test_error_table_names_a_layer_that_is_not_linear():
    with pytest.raises(ConfigError, match=r"'7' is not an nn\.Linear"):
        weight_error_table(_model(), ["7"])


def test_topk_keeps_the_top_fraction_of_layers_in_bf16():
    layers = [LayerCost(f"l{i}", 16, {4: 1.0, 16: 0.0}) for i in range(10)]
    phi = {f"l{i}": float(i) for i in range(10)}
    bit_map = allocate_topk(phi, layers, keep_fraction=0.3)
    assert {n for n, b in bit_map.items() if b == 16} == {"l9", "l8", "l7"}
    assert {b for n, b in bit_map.items() if b != 16} == {4}


def test_topk_never_layers_stay_16_and_are_not_ranked():
    layers = [LayerCost(f"l{i}", 16, {4: 1.0, 16: 0.0}) for i in range(6)]
    phi = {f"l{i}": float(i) for i in range(6)}
    bit_map = allocate_topk(phi, layers, keep_fraction=0.25, never=["l0"])
    assert [n for n, b in bit_map.items() if b == 16] == ["l0", "l5"]


def test_topk_rejects_a_fraction_outside_0_1():
    with pytest.raises(ConfigError, match="keep_fraction"):
        allocate_topk({"a": 1.0}, [LayerCost("a", 16, {})], keep_fraction=30)


def test_budget_matches_brute_force_enumeration():
    for seed in range(8):
        phi, layers = _random_instance(seed)
        for budget in (2.5, 3.7, 6.0, 11.0):
            bit_map = allocate_budget(phi, layers, budget)
            assert _objective(phi, layers, bit_map) == pytest.approx(
                _brute_force(phi, layers, budget), rel=1e-12, abs=1e-12
            )


def test_budget_more_bits_never_worsen_the_objective():
    phi, layers = _random_instance(1, n_layers=12)
    objectives = [
        _objective(phi, layers, allocate_budget(phi, layers, budget / 4)) for budget in range(8, 65)
    ]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(objectives))


def test_budget_result_stays_within_the_average_bits():
    phi, layers = _random_instance(2, n_layers=12)
    for budget in (2.0, 3.3, 4.5, 7.9, 16.0):
        assert average_bits(allocate_budget(phi, layers, budget), layers) <= budget


def test_budget_never_layers_stay_16_and_count_in_the_budget():
    phi, layers = _random_instance(3)
    phi |= {"l0": 0.0, "l1": 0.0}  # left free, both would drop to 2 bits
    never = ["l0", "l1"]
    bit_map = allocate_budget(phi, layers, 10.0, never=never)
    assert bit_map["l0"] == bit_map["l1"] == 16
    assert average_bits(bit_map, layers) <= 10.0


def test_budget_below_the_cheapest_map_names_the_minimum_average():
    layers = [LayerCost("a", 16, {2: 1.0, 16: 0.0}), LayerCost("b", 16, {2: 1.0, 16: 0.0})]
    with pytest.raises(ConfigError, match=r"smallest feasible average 9\.0 "):
        allocate_budget({"a": 1.0, "b": 1.0}, layers, 4.0, never=["a"])


def test_budget_names_a_layer_without_sensitivity():
    _, layers = _random_instance(4)
    with pytest.raises(ConfigError, match="no phi for layer 'l0'"):
        allocate_budget({}, layers, 4.0)


def test_budget_scales_to_a_transformer_sized_table():
    rng = random.Random(5)
    shapes = [1024 * 1024, 1024 * 4096, 4096 * 1024] * 100  # 300 layers, ~0.9 G weights
    layers = [
        LayerCost(f"l{i}", n, {b: rng.uniform(0.5, 1.5) * 4.0 ** (4 - b) for b in (2, 3, 4, 8)})
        for i, n in enumerate(shapes)
    ]
    layers = [LayerCost(x.name, x.numel, {**x.errors, 16: 0.0}) for x in layers]
    phi = {x.name: rng.uniform(0.0, 1.0) for x in layers}
    assert average_bits(allocate_budget(phi, layers, 4.25), layers) <= 4.25


def test_qvla_reaches_the_budget_and_demotes_low_saliency_layers_first():
    model = nn.Sequential(nn.Linear(128, 128), nn.Linear(128, 128))
    torch.manual_seed(0)
    layers = weight_error_table(model, ["0", "1"], bits=(4, 8, 16))
    h_diag = {"0": torch.full((128,), 100.0), "1": torch.full((128,), 0.01)}
    bit_map = qvla_allocate(h_diag, model, layers, average_bits=10.0)
    assert bit_map == {"0": 16, "1": 4}


def test_qvla_never_layers_stay_16():
    model = _model()
    names = _names(model)
    layers = weight_error_table(model, names, bits=(4, 8, 16))
    h_diag = {n: torch.ones(model[int(n)].in_features) for n in names}
    bit_map = qvla_allocate(h_diag, model, layers, average_bits=6.0, never=["3"])
    assert bit_map["3"] == 16
    assert average_bits(bit_map, layers) <= 6.0


def test_bit_map_config_round_trips_through_yaml(tmp_path):
    model = _model()
    names = _names(model)
    bit_map = dict(zip(names, (2, 16, 8, 4), strict=True))
    config = bit_map_config(load_config("w4a8"), bit_map, "mixed", model)
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    loaded = load_config(path)
    for name in names:
        assert loaded.spec_for(name) == config.spec_for(name)
        assert loaded.spec_for(name).weight_bits == bit_map[name]
    assert loaded.spec_for("0").activation_bits == 8  # from the w4a8 base
    layer_plan(model, loaded)  # every group size fits its layer


def test_bit_map_config_matches_names_with_fnmatch_characters_exactly():
    model = nn.ModuleDict({n: nn.Linear(128, 32) for n in ("head[0]", "head0", "a*b", "axb")})
    config = bit_map_config(QuantConfig(), {"head[0]": 16, "a*b": 8}, "escaped", model)
    assert config.spec_for("head[0]").weight_bits == 16
    assert config.spec_for("a*b").weight_bits == 8
    assert config.spec_for("head0").weight_bits == config.spec_for("axb").weight_bits == 4


def test_bit_map_config_rejects_a_base_keep_pattern_over_a_quantized_layer():
    base = QuantConfig(keep=("*",), name="keep_all")
    with pytest.raises(ConfigError, match="keep pattern"):
        bit_map_config(base, {"0": 4}, "clash", _model())


def test_average_bits_weights_layers_by_size():
    layers = [LayerCost("a", 30, {}), LayerCost("b", 10, {})]
    assert average_bits({"a": 4, "b": 16}, layers) == 7.0


def test_weighted_bits_is_the_average_of_every_report_and_names_an_unmapped_layer():
    from daptq_ros.errors import ConfigError
    from daptq_ros.quant.allocation import weighted_bits

    assert weighted_bits({"a": 4, "b": 16, "c": 2}, {"a": 100, "b": 50}) == 8.0
    with pytest.raises(ConfigError, match="layer 'b' has no bits"):
        weighted_bits({"a": 4}, {"a": 100, "b": 50})
