"""Quantizing a policy: every layer gets a format its kernels run, and every change is listed.

Too narrow for any int4 group: bf16. Wider, but not a multiple of the group (the released
pi0's 4304-wide SigLIP MLP, a 96-wide projection): a group that divides it, or per-channel.
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from daptq_ros.errors import ConfigError, DaptqError
from daptq_ros.policy.quantize import needs_calibration, quantize_policy
from daptq_ros.quant import deploy, load_config, quantize
from daptq_ros.quant.deploy import DeployedLinear
from daptq_ros.quant.kernel_fit import check_deployable, fit_to_kernels


def _policy() -> SimpleNamespace:
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "state_in": nn.Linear(4, 128),
            "body": nn.Linear(128, 128),
            "action_out": nn.Linear(128, 4),
        }
    )
    return SimpleNamespace(model=model)


def test_narrow_input_and_output_layers_are_kept_and_listed():
    applied, fallbacks = fit_to_kernels(_policy().model, load_config("w4a16"))
    assert set(applied.keep) == {"state_in", "action_out"}
    assert {f.layer: f.change for f in fallbacks} == {
        "state_in": "kept in bf16",
        "action_out": "kept in bf16",
    }
    assert "4 inputs" in fallbacks[0].why and "tiles of 16" in fallbacks[1].why
    assert fit_to_kernels(_policy().model, load_config("w8a8")) == (load_config("w8a8"), [])


def wide_model() -> nn.ModuleDict:
    """Widths no test model of ours has: 4304 (pi0's SigLIP MLP), 96, and one that fits."""
    torch.manual_seed(1)
    return nn.ModuleDict(
        {
            "siglip_fc2": nn.Linear(4304, 48),
            "proj96": nn.Linear(96, 32),
            "fits": nn.Linear(256, 64),
        }
    )


def test_a_layer_the_group_does_not_divide_is_quantized_with_a_fitting_format():
    model = wide_model()
    applied, fallbacks = fit_to_kernels(model, load_config("w4a16"))  # groups of 128
    assert {f.layer: f.change for f in fallbacks} == {
        "siglip_fc2": "per-channel scales",
        "proj96": "group 128 -> 32",
    }
    assert applied.spec_for("siglip_fc2").granularity == "channel"
    assert applied.spec_for("proj96").group_size == 32
    assert applied.spec_for("fits").group_size == 128 and applied.keep == ()
    x = torch.randn(3, 4304)
    reference = model["siglip_fc2"](x)
    deployed = quantize(model, applied, deployed=True)
    kernels = {name: layer.kernel for name, layer in deployed.items()}
    assert kernels == {"siglip_fc2": "bf16", "proj96": "int4", "fits": "int4"}
    error = (deployed["siglip_fc2"](x) - reference).norm() / reference.norm()
    assert 0 < error < 0.2  # quantized (not left in full precision), and still the layer


def test_default_quantization_of_a_policy_lists_every_fallback():
    policy = SimpleNamespace(model=wide_model())
    quantize_policy(policy, load_config("w4a8"))
    assert [f.layer for f in policy.kernel_fallbacks] == ["siglip_fc2", "proj96"]
    assert sum(1 for m in policy.model.values() if type(m) is nn.Linear) == 0


@pytest.mark.parametrize(
    ("yaml", "words"),
    [
        ("weight_bits: 4\ngroup_size: 8\n", "group_size 8"),
        ("weight_bits: 6\n", "6-bit weights have no kernel"),
        ("weight_bits: 3\ngranularity: tensor\n", "granularity tensor"),
        ("weight_bits: 8\nsymmetric: false\ngranularity: channel\n", "symmetric: true"),
        ("weight_bits: 4\noverrides:\n  - {pattern: 'a*', group_size: 16}\n", "overrides['a*']"),
    ],
)
def test_a_config_no_deployed_kernel_runs_is_refused_with_the_fix(tmp_path, yaml, words):
    path = tmp_path / "bits.yaml"
    path.write_text("method: rtn\n" + yaml)
    with pytest.raises(ConfigError, match="no deployed kernel") as error:
        check_deployable(load_config(path))
    assert words in str(error.value)
    with pytest.raises(ConfigError):
        quantize_policy(SimpleNamespace(model=wide_model()), load_config(path))


def test_deployed_policy_quantizes_what_fits_and_runs():
    policy = _policy()
    applied = quantize_policy(policy, load_config("w4a16"))
    policy.model = deploy(policy.model)
    kernels = {name: m.kernel for name, m in policy.model.items() if isinstance(m, DeployedLinear)}
    assert kernels == {"state_in": "bf16", "body": "int4", "action_out": "bf16"}
    assert applied.name == "w4a16"
    x = torch.randn(2, 4)
    y = policy.model["action_out"](policy.model["body"](policy.model["state_in"](x)))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_calibrated_methods_are_flagged():
    assert needs_calibration(load_config("gptq_w4")) and not needs_calibration(load_config("w4a16"))


def test_int8_weight_only_keeps_inputs_narrower_than_its_kernel_in_bf16():
    # PyTorch's int8 weight-only kernel crashed the process for 4 input columns at batch > 1.
    model = nn.Sequential(nn.Linear(4, 64), nn.Linear(64, 64))
    config, fallbacks = fit_to_kernels(model, load_config("w8a16"))
    assert config.keep == ("0",) and "blocks of 16" in fallbacks[0].why
    deployed = quantize(model, config, deployed=True)
    assert [m.kernel for m in deployed] == ["bf16", "int8_weight_only"]
    assert torch.isfinite(deployed(torch.randn(8, 4))).all()
    with pytest.raises(DaptqError, match="divisible by 16"):
        DeployedLinear(quantize(nn.Sequential(nn.Linear(4, 64)), load_config("w8a16"))[0])


def test_whole_model_bf16_policy_runs_every_parameter_in_bf16_and_predicts():
    import numpy as np

    from daptq_ros.policy.model_dir import default_model_dir
    from daptq_ros.policy.quantize import load_policy_with_bits

    policy, label = load_policy_with_bits(
        default_model_dir("pi0"), "w4a16", whole_model_bf16=True, kernel_choice="packed"
    )
    assert label == "w4a16"
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    image = np.zeros((*policy.loaded.meta.image_size, 3), dtype=np.uint8)
    chunk = policy.predict(image, "push the puck to the goal", np.zeros(policy.state_dim))
    assert np.isfinite(chunk.actions).all() and chunk.actions.dtype.kind == "f"
