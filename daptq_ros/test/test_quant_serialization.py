"""Save/load of quantized models: packed safetensors, exact round trip, clear errors."""

import copy

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn

from daptq_ros.errors import ModelError
from daptq_ros.quant import QuantLinear, load_config, load_quantized, quantize, save_quantized
from daptq_ros.quant.serialization import pack_nibbles, read_metadata, unpack_nibbles


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128), nn.LayerNorm(128))


@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 5), width=st.integers(1, 33), seed=st.integers(0, 1000))
def test_nibble_packing_round_trips(rows, width, seed):
    codes = torch.randint(0, 16, (rows, width), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )
    packed = pack_nibbles(codes)
    assert packed.shape == (rows, (width + 1) // 2)
    torch.testing.assert_close(unpack_nibbles(packed, width), codes, rtol=0, atol=0)


@pytest.mark.parametrize("preset", ["w4a8", "w8a8", "gptq_w3", "awq_w4"])
def test_round_trip_is_exact_and_needs_no_calibration(tmp_path, preset):
    calibration = [torch.randn(16, 128) for _ in range(4)]
    config = load_config(preset)
    quantized = quantize(_model(), config, calibration)
    path = save_quantized(quantized, tmp_path / "model.safetensors", config)
    loaded, loaded_config = load_quantized(_model(seed=123), path)
    assert loaded_config == config
    assert isinstance(loaded[0], QuantLinear) and loaded[0].fmt == quantized[0].fmt
    x = torch.randn(8, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), quantized(x), rtol=0, atol=0)


def test_low_bit_codes_are_stored_packed(tmp_path):
    config = load_config("w4a16")
    w4 = save_quantized(quantize(_model(), config), tmp_path / "w4.safetensors", config)
    w8_config = load_config("w8a16")
    w8 = save_quantized(quantize(_model(), w8_config), tmp_path / "w8.safetensors", w8_config)
    assert w4.stat().st_size < 0.6 * w8.stat().st_size
    _, bit_map = read_metadata(w4)
    assert bit_map["0"]["bits"] == 4 and bit_map["2"]["group_size"] == 128


def test_missing_and_corrupt_files_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_quantized(_model(), tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_quantized(_model(), corrupt)


def test_wrong_architecture_is_a_model_error(tmp_path):
    config = load_config("w4a16")
    path = save_quantized(quantize(_model(), config), tmp_path / "m.safetensors", config)
    other = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128))
    with pytest.raises(ModelError, match="does not match the model"):
        load_quantized(other, path)


def test_plain_safetensors_is_not_a_quantized_model(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file(
        {k: v.contiguous() for k, v in copy.deepcopy(_model()).state_dict().items()}, str(path)
    )
    with pytest.raises(ModelError, match="not a daptq quantized model"):
        load_quantized(_model(), path)
