"""Deployed mode: packed weights on real kernels agree with the simulated arithmetic.

Tolerance (documented in README): relative output error <= 3e-2 between deployed and
simulated layers. The deployed path computes in bfloat16 (8 significant bits) and rounds the
int4 zero offset to bfloat16; simulated mode computes the same codes in float32.
"""

import copy

import pytest
import torch
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.quant import deploy, load_config, quantize, weight_bytes
from daptq_ros.quant.config import config_from_dict
from daptq_ros.quant.deploy import DeployedLinear

TOLERANCE = 3e-2


def _model(width: int = 256) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize(
    ("preset", "kernel"),
    [
        ("w4a16", "int4"),
        ("w4a8", "int4"),
        ("w3a16", "int4"),
        ("w8a16", "int8_weight_only"),
        ("w8a8", "int8_dynamic"),
    ],
)
def test_deployed_matches_simulated(preset, kernel):
    simulated = quantize(_model(), load_config(preset))
    deployed = deploy(copy.deepcopy(simulated))
    assert deployed[0].kernel == kernel and isinstance(deployed[2], DeployedLinear)
    x = torch.randn(4, 10, 256)
    with torch.no_grad():
        expected = simulated(x.bfloat16().float())
        actual = deployed(x.bfloat16())
    assert actual.dtype == torch.bfloat16 and actual.shape == expected.shape
    with torch.no_grad():
        assert deployed(x).dtype == torch.float32  # any input dtype in, the same dtype out
    assert _relative_error(actual, expected) < TOLERANCE


def test_4_bit_activations_deploy_as_quantize_dequantize_before_the_int4_kernel():
    simulated = quantize(_model(), load_config("w4a4"))
    deployed = deploy(copy.deepcopy(simulated))
    assert deployed[0].kernel == "int4" and deployed[0].activation_bits == 4
    x = torch.randn(4, 10, 256).bfloat16()
    with torch.no_grad():
        expected, actual = simulated[0](x.float()), deployed[0](x)
    assert _relative_error(actual, expected) < TOLERANCE
    # Through the whole model, one 4-bit code step is 1/7.5 of a token's largest value, so the
    # bf16 rounding of the hidden activations flips some codes: a looser bound than A8's.
    with torch.no_grad():
        assert _relative_error(deployed(x), simulated(x.float())) < 2 * TOLERANCE


def test_smoothed_and_awq_layers_deploy_with_their_input_scale():
    calibration = [torch.randn(32, 256) * torch.linspace(0.1, 20, 256) for _ in range(4)]
    for preset in ("smoothquant_w8a8", "awq_w4"):
        simulated = quantize(_model(), load_config(preset), calibration)
        assert simulated[0].input_scale is not None
        deployed = deploy(copy.deepcopy(simulated))
        x = calibration[0]
        with torch.no_grad():
            assert (
                _relative_error(deployed(x.bfloat16()), simulated(x.bfloat16().float())) < TOLERANCE
            )


def test_mixed_map_deploys_each_layer_to_its_own_kernel():
    config = config_from_dict(
        {
            "weight_bits": 4,
            "keep": ["2"],
            "overrides": [
                {"pattern": "0", "weight_bits": 8, "symmetric": True, "granularity": "channel"}
            ],
        }
    )
    model = nn.Sequential(
        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256)
    )
    torch.manual_seed(0)
    simulated = quantize(model, config)
    deployed = deploy(copy.deepcopy(simulated))
    assert deployed[0].kernel == "int8_weight_only"
    assert deployed[2].kernel == "bf16" and deployed[2].weight.dtype == torch.bfloat16
    assert deployed[4].kernel == "int4"
    x = torch.randn(8, 256)
    with torch.no_grad():
        assert _relative_error(deployed(x.bfloat16()), simulated(x.bfloat16().float())) < TOLERANCE


def test_weight_bytes_shrink_with_bits():
    fp32 = weight_bytes(_model(1024))
    int8 = weight_bytes(quantize(_model(1024), load_config("w8a16"), deployed=True))
    int4 = weight_bytes(quantize(_model(1024), load_config("w4a16"), deployed=True))
    assert int8 <= 0.26 * fp32
    assert int4 <= 0.14 * fp32


def test_format_without_kernel_names_layer_and_fix():
    simulated = quantize(_model(), config_from_dict({"weight_bits": 5}))
    with pytest.raises(DaptqError, match=r"layer '0': no deployed kernel for W5 asym g128"):
        deploy(simulated)


def test_per_channel_low_bits_run_dequantized_on_a_dense_kernel():
    """The fallback of a layer no int4 group divides (quant.kernel_fit)."""
    simulated = quantize(_model(), config_from_dict({"weight_bits": 4, "granularity": "channel"}))
    x = torch.randn(3, simulated[0].in_features)
    expected = simulated(x)
    deployed = deploy(simulated)
    assert deployed[0].kernel == "bf16"
    torch.testing.assert_close(deployed(x), expected, rtol=2e-2, atol=2e-2)


def test_asymmetric_int8_has_no_kernel():
    simulated = quantize(_model(), config_from_dict({"weight_bits": 8, "granularity": "channel"}))
    with pytest.raises(DaptqError, match="8-bit weights need symmetric per-channel"):
        deploy(simulated)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cuda_deploy_without_cuda_is_refused_clearly():
    with pytest.raises(DaptqError, match=r"device 'cuda': torch .* on this machine; use device"):
        deploy(quantize(_model(), load_config("w4a16")), device="cuda")


def test_deploy_changes_only_linear_layers():
    model = nn.Sequential(
        nn.Conv1d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 256, 256), nn.LayerNorm(256)
    )
    simulated = quantize(model, load_config("w4a16"))
    deployed = deploy(copy.deepcopy(simulated))
    assert deployed[0].weight.dtype == torch.float32 and deployed[3].weight.dtype == torch.float32
    x = torch.randn(2, 4, 256)
    with torch.no_grad():
        assert _relative_error(deployed(x), simulated(x)) < TOLERANCE


def test_int4_layer_with_too_few_output_rows_names_the_fix():
    simulated = quantize(nn.Sequential(nn.Linear(256, 4)), load_config("w4a16"))
    with pytest.raises(DaptqError, match="out_features divisible by 16, this layer has 4"):
        deploy(simulated)


def test_whole_model_bf16_casts_every_parameter_but_keeps_buffers_and_packed_weights():
    model = nn.Sequential(nn.Conv1d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 256, 256))
    model.register_buffer("schedule", torch.linspace(0, 1, 5))
    simulated = quantize(model, load_config("w4a16"))
    deployed = deploy(copy.deepcopy(simulated), whole_model_bf16=True)
    assert {p.dtype for p in deployed.parameters()} == {torch.bfloat16}
    assert deployed.schedule.dtype == torch.float32
    assert deployed[2].weight_int4.dtype != torch.bfloat16  # packed codes are untouched
    x = torch.randn(2, 4, 256)
    with torch.no_grad():
        out = deployed(x.bfloat16())
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        assert _relative_error(out, simulated(x)) < TOLERANCE
