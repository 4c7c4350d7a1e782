"""Uniform quantizers: code ranges, rounding error bounds, grouping, activation quantization."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from daptq_ros.quant.formats import (
    WeightFormat,
    choose_qparams,
    expand_groups,
    fake_quantize_activation_per_token,
    quantize_weight,
)

formats = st.builds(
    WeightFormat,
    bits=st.integers(2, 8),
    symmetric=st.booleans(),
    granularity=st.sampled_from(["tensor", "channel", "group"]),
    group_size=st.sampled_from([4, 8, 16]),
)


@settings(max_examples=60, deadline=None)
@given(fmt=formats, seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_codes_in_range_and_error_within_half_step(fmt, seed, scale):
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(seed)) * scale
    q = quantize_weight(w, fmt)
    assert q.codes.dtype == torch.uint8
    assert int(q.codes.max()) <= fmt.qmax
    assert q.scale.shape == (6, fmt.n_groups(32)) == q.zero.shape
    step = expand_groups(q.scale, 32)
    error = (q.dequantize() - w).abs()
    # symmetric grids lose the most negative code's mirror: values within the range are
    # reproduced to half a step; min/max parameters make every value lie in the range
    assert torch.all(error <= step * 0.5 + 1e-6 * scale + step * 1e-3)


def test_symmetric_zero_point_is_mid_code_and_zero_is_exact():
    w = torch.tensor([[0.0, 1.0, -1.0, 0.5]])
    q = quantize_weight(w, WeightFormat(4, symmetric=True, granularity="channel"))
    assert q.zero.item() == 8
    assert q.dequantize()[0, 0].item() == 0.0
    assert q.dequantize()[0, 1].item() == pytest.approx(1.0, rel=1e-2)


def test_asymmetric_uses_full_range_of_one_sided_group():
    w = torch.linspace(0.0, 15.0, 16).reshape(1, 16)
    q = quantize_weight(w, WeightFormat(4, symmetric=False, granularity="channel"))
    assert q.codes.min().item() == 0 and q.codes.max().item() == 15
    torch.testing.assert_close(q.dequantize(), w)


def test_group_parameters_follow_each_group():
    w = torch.cat([torch.full((1, 8), 0.01), torch.full((1, 8), 100.0)], dim=1)
    scale, _ = choose_qparams(w, WeightFormat(4, granularity="group", group_size=8))
    assert scale.shape == (1, 2)
    assert scale[0, 1] > 1000 * scale[0, 0]


def test_tensor_granularity_shares_one_scale():
    w = torch.randn(5, 16)
    scale, zero = choose_qparams(w, WeightFormat(8, granularity="tensor"))
    assert scale.shape == (5, 1) and torch.all(scale == scale[0, 0]) and torch.all(zero == zero[0])


def test_scales_are_bfloat16_values():
    scale, _ = choose_qparams(torch.randn(8, 64), WeightFormat(4, group_size=16))
    torch.testing.assert_close(scale, scale.bfloat16().float(), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), magnitude=st.floats(1e-2, 1e3), bits=st.sampled_from([8, 4]))
def test_activation_per_token_error_bound(seed, magnitude, bits):
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(seed)) * magnitude
    xq = fake_quantize_activation_per_token(x, bits)
    step = x.abs().amax(dim=-1, keepdim=True) / ((2**bits - 1) / 2)
    assert torch.all((xq - x).abs() <= step * (0.5 + 1e-4))
    assert torch.unique(xq[0, 0]).numel() <= 2**bits
    # per token: a token of tiny values keeps its own resolution
    x[0, 0] *= 1e-2
    xq = fake_quantize_activation_per_token(x, bits)
    assert (xq[0, 0] - x[0, 0]).abs().max() <= x[0, 0].abs().max() / (2**bits - 1) * 1.001
