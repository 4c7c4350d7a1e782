"""Bit configs: presets, validation errors that name the problem, layer resolution."""

import pytest
import yaml

from daptq_ros.errors import ConfigError
from daptq_ros.quant import list_presets, load_config
from daptq_ros.quant.config import check_layer, config_from_dict


def test_every_shipped_preset_loads():
    names = list_presets()
    assert {
        "fp32",
        "bf16",
        "w8a8",
        "w4a16",
        "w4a8",
        "smoothquant_w8a8",
        "awq_w4",
        "gptq_w4",
    } <= set(names)
    for name in names:
        assert load_config(name).name == name


def _error(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, name="bad")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_is_named_with_allowed_keys():
    message = _error({"method": "rtn", "wieght_bits": 4})
    assert "'wieght_bits'" in message and "weight_bits" in message.split("allowed keys:")[1]


def test_one_bit_is_rejected_with_allowed_values():
    message = _error({"weight_bits": 1})
    assert "weight_bits=1" in message and "2, 3, 4" in message


def test_unknown_method_and_method_arg():
    assert "allowed: rtn, smoothquant, awq, gptq" in _error({"method": "magic"})
    assert "'alpa'" in _error({"method": "smoothquant", "method_args": {"alpa": 0.5}})


def test_bad_override_key_and_bits():
    assert "'bitz'" in _error({"overrides": [{"pattern": "*", "bitz": 3}]})
    assert "overrides['*.q']" in _error({"overrides": [{"pattern": "*.q", "weight_bits": 32}]})


def test_bad_activation_bits_and_granularity():
    assert "activation_bits=6" in _error({"activation_bits": 6})
    assert load_config("w4a4").activation_bits == 4
    assert "granularity='row'" in _error({"granularity": "row"})


def test_group_size_must_divide_layer_width():
    config = config_from_dict({"weight_bits": 4, "group_size": 100}, name="g100")
    with pytest.raises(
        ConfigError, match=r"group_size=100 does not divide in_features=256 of layer 'fc'"
    ):
        check_layer(config.spec_for("fc"), "fc", 256, config.name)


def test_keep_and_overrides_resolve_by_pattern_last_match_wins():
    config = config_from_dict(
        {
            "weight_bits": 4,
            "keep": ["head.*"],
            "overrides": [
                {"pattern": "*.mlp.*", "weight_bits": 8, "symmetric": True},
                {"pattern": "*.mlp.down", "weight_bits": 3},
            ],
        }
    )
    assert config.spec_for("head.out").weight_bits == 16
    assert config.spec_for("block.mlp.up").weight_bits == 8
    assert config.spec_for("block.mlp.down").weight_bits == 3
    assert config.spec_for("block.mlp.down").symmetric is True
    assert config.spec_for("block.attn.q").weight_bits == 4


def test_yaml_round_trip(tmp_path):
    config = load_config("mixed_w4_bf16")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(path) == config


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no_such_preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("weight_bits: [4\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
