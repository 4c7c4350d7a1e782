"""SmoothQuant, AWQ and GPTQ against RTN at equal bits, on layers built to show their effect.

Each comparison is the output MSE on held-out inputs drawn from the calibration distribution.
"""

import copy

import pytest
import torch
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.quant import QuantLinear, quantize
from daptq_ros.quant.config import config_from_dict

WIDTH = 256


def _layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(WIDTH, WIDTH))


def _outlier_inputs(n: int, seed: int) -> torch.Tensor:
    """Activations with a few large-magnitude channels, as in LLM/VLA hidden states."""
    gen = torch.Generator().manual_seed(seed)
    gain = torch.ones(WIDTH)
    gain[torch.randperm(WIDTH, generator=torch.Generator().manual_seed(7))[:6]] = 40.0
    return torch.randn(n, WIDTH, generator=gen) * gain


def _correlated_inputs(n: int, seed: int) -> torch.Tensor:
    """Inputs living near a low-dimensional subspace: strongly correlated channels."""
    mixing = torch.randn(32, WIDTH, generator=torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 32, generator=gen) @ mixing / 4 + 0.05 * torch.randn(
        n, WIDTH, generator=gen
    )


def _output_mse(method: str, spec: dict, inputs, seed_layer: int = 0) -> float:
    fp = _layer(seed_layer)
    calibration = [inputs(128, seed) for seed in range(8)]
    held_out = inputs(512, 100)
    quantized = quantize(
        copy.deepcopy(fp), config_from_dict({"method": method, **spec}), calibration
    )
    assert isinstance(quantized[0], QuantLinear)
    with torch.no_grad():
        return (quantized(held_out) - fp(held_out)).pow(2).mean().item()


W8A8 = {"weight_bits": 8, "activation_bits": 8, "symmetric": True, "granularity": "channel"}
W4G128 = {"weight_bits": 4, "granularity": "group", "group_size": 128}


def test_smoothquant_w8a8_beats_rtn_w8a8_on_activation_outliers():
    rtn = _output_mse("rtn", W8A8, _outlier_inputs)
    smooth = _output_mse("smoothquant", W8A8, _outlier_inputs)
    assert smooth < 0.5 * rtn, (smooth, rtn)


def test_awq_w4_beats_rtn_w4_on_salient_channels():
    rtn = _output_mse("rtn", W4G128, _outlier_inputs)
    awq = _output_mse("awq", W4G128, _outlier_inputs)
    assert awq < 0.8 * rtn, (awq, rtn)


def test_gptq_w4_beats_rtn_w4_on_correlated_inputs():
    rtn = _output_mse("rtn", W4G128, _correlated_inputs)
    gptq = _output_mse("gptq", W4G128, _correlated_inputs)
    assert gptq < 0.8 * rtn, (gptq, rtn)


def test_gptq_w3_beats_rtn_w3_on_correlated_inputs():
    spec = {**W4G128, "weight_bits": 3}
    assert _output_mse("gptq", spec, _correlated_inputs) < _output_mse(
        "rtn", spec, _correlated_inputs
    )


@pytest.mark.parametrize("method", ["smoothquant", "awq", "gptq"])
def test_calibrated_methods_require_calibration_data(method):
    with pytest.raises(DaptqError, match="needs calibration data"):
        quantize(_layer(), config_from_dict({"method": method, **W4G128}))


def test_empty_calibration_set_is_an_error():
    with pytest.raises(DaptqError, match="calibration set is empty"):
        quantize(_layer(), config_from_dict({"method": "gptq", **W4G128}), calibration=[])


def test_keep_patterns_leave_layers_in_bf16_and_fp32_preset_is_untouched():
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH))
    original = copy.deepcopy(model)
    quantize(model, config_from_dict({"weight_bits": 4, "keep": ["2"]}))
    assert isinstance(model[0], QuantLinear) and isinstance(model[2], nn.Linear)
    torch.testing.assert_close(
        model[2].weight, original[2].weight.bfloat16().float(), rtol=0, atol=0
    )
    untouched = quantize(copy.deepcopy(original), config_from_dict({"weight_bits": 32}))
    torch.testing.assert_close(untouched[0].weight, original[0].weight, rtol=0, atol=0)


def test_calibration_items_may_be_tuples_and_mappings():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(WIDTH, WIDTH)

        def forward(self, a, b):
            return self.proj(a + b)

    x = _correlated_inputs(64, 0)
    for calibration in ([(x, x)], [{"a": x, "b": x}]):
        model = quantize(TwoInputs(), config_from_dict({"method": "gptq", **W4G128}), calibration)
        assert isinstance(model.proj, QuantLinear)
