"""Quantizing a policy: layers too narrow for their group format's kernel stay in bf16."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.policy.quantize import keep_narrow_layers, needs_calibration, quantize_policy
from daptq_ros.quant import deploy, load_config, quantize
from daptq_ros.quant.deploy import DeployedLinear


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


def test_narrow_input_and_output_layers_are_kept():
    applied = keep_narrow_layers(_policy().model, load_config("w4a16"))
    assert set(applied.keep) == {"state_in", "action_out"}
    assert keep_narrow_layers(_policy().model, load_config("w8a8")).keep == ()


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
    config = keep_narrow_layers(model, load_config("w8a16"))
    assert config.keep == ("0",)
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
