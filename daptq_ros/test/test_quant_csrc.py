"""CSRC (METHOD.md §3): output statistics, the compensation solve, the fold and the report.

The interface layer's "quantized" output is either a fixed channel rescale/mix/shift of the FP
output or the output after real RTN 3-bit quantization of the layer feeding it. Improvements are
measured on held-out inputs, never on the calibration batches the compensation was fitted on.
"""

import copy
import json

import pytest
import torch
from torch import nn

from daptq_ros.errors import ConfigError, DaptqError
from daptq_ros.quant import config_from_dict, quantize
from daptq_ros.quant.csrc import (
    Compensation,
    CSRCConfig,
    OutputStats,
    collect_output_stats,
    compensation_report,
    fold_into_linear,
    fold_into_quantized,
    parameter_signature,
    solve_compensation,
    solve_diagonal,
)

D_IN, D = 24, 48


def _inputs(n: int, seed: int) -> torch.Tensor:
    """Correlated inputs with channels of very different scale, like hidden states."""
    mixing = torch.randn(D_IN, D_IN, generator=torch.Generator().manual_seed(5)) / 3
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=gen) @ mixing + 0.5


def _calibration() -> list[torch.Tensor]:
    return [_inputs(256, seed) for seed in range(8)]


def _interface(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, D))


def _fake_quantized(fp: nn.Sequential) -> nn.Sequential:
    """FP interface followed by a fixed rescale + rank-2 channel mix + shift of its output."""
    gen = torch.Generator().manual_seed(3)
    u, v = torch.randn(D, 2, generator=gen), torch.randn(D, 2, generator=gen)
    gain = 1 + 0.3 * torch.randn(D, generator=gen).clamp(-2, 2)
    distort = nn.Linear(D, D)
    with torch.no_grad():
        distort.weight.copy_(gain[:, None] * (torch.eye(D) + 0.3 * u @ v.T / D**0.5))
        distort.bias.copy_(0.4 * torch.randn(D, generator=gen))
    return nn.Sequential(copy.deepcopy(fp), distort)


def _random_stats(d: int, seed: int) -> OutputStats:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(4 * d, d, generator=gen, dtype=torch.float64) @ torch.randn(
        d, d, generator=gen, dtype=torch.float64
    )
    return OutputStats.from_rows(rows * torch.rand(d, generator=gen, dtype=torch.float64) + 1)


def test_collect_output_stats_streams_to_the_one_shot_mean_and_unbiased_covariance():
    model, calibration = _interface(), _calibration()
    stats = collect_output_stats(model, ["0"], calibration)["0"]
    with torch.no_grad():
        rows = model(torch.cat(calibration)).double()
    assert stats.count == rows.shape[0]
    torch.testing.assert_close(stats.mean, rows.mean(0))
    torch.testing.assert_close(stats.cov, torch.cov(rows.T))
    torch.testing.assert_close(stats.std, rows.std(0))


def test_collect_output_stats_flattens_leading_dims_and_applies_the_row_filter():
    tokens = [torch.randn(3, 5, D_IN, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    model = _interface()
    stats = collect_output_stats(model, ["0"], tokens, row_filter={"0": lambda z: z[:, :2]})["0"]
    with torch.no_grad():
        prefix = torch.cat([model(t)[:, :2] for t in tokens]).reshape(-1, D).double()
    assert stats.count == 2 * 3 * 2
    torch.testing.assert_close(stats.cov, torch.cov(prefix.T))


def test_collect_output_stats_keeps_only_the_first_max_samples_rows():
    model, calibration = _interface(), _calibration()
    stats = collect_output_stats(model, ["0"], calibration, max_samples=300)["0"]
    with torch.no_grad():
        rows = model(torch.cat(calibration)[:300]).double()
    assert stats.count == 300
    torch.testing.assert_close(stats.mean, rows.mean(0))


def test_collect_output_stats_rejects_an_unknown_layer_name():
    with pytest.raises(DaptqError, match="'decoder'"):
        collect_output_stats(_interface(), ["decoder"], _calibration())


def test_csrc_reduces_mean_and_covariance_mismatch_of_a_distorted_output_on_held_out_inputs():
    fp = _interface()
    q = _fake_quantized(fp)
    comp = solve_compensation(
        collect_output_stats(fp, ["0"], _calibration())["0"],
        collect_output_stats(q, ["1"], _calibration())["1"],
        CSRCConfig(),
    )
    held_out = [_inputs(1024, 100)]
    compensated = nn.Sequential(q, _Apply(comp))
    report = compensation_report(
        collect_output_stats(fp, ["0"], held_out),
        {"0": collect_output_stats(q, ["1"], held_out)["1"]},
        {"0": collect_output_stats(compensated, ["1"], held_out)["1"]},
    )["0"]
    before, after = report["before"], report["after"]
    assert after["mean_abs_error"] < 0.1 * before["mean_abs_error"], report
    assert after["cov_rel_error"] < 0.3 * before["cov_rel_error"], report


def test_csrc_folded_after_rtn_3bit_of_the_feeding_layer_reduces_mismatch_on_held_out_inputs():
    torch.manual_seed(1)
    fp = nn.Sequential(nn.Linear(D_IN, 64), nn.Tanh(), nn.Linear(64, D))
    rtn3 = {"method": "rtn", "weight_bits": 3, "granularity": "channel", "keep": ["2"]}
    q = quantize(copy.deepcopy(fp), config_from_dict(rtn3))
    comp = solve_compensation(
        collect_output_stats(fp, ["2"], _calibration())["2"],
        collect_output_stats(q, ["2"], _calibration())["2"],
        CSRCConfig(),
    )
    held_out = [_inputs(2048, 100)]
    before = collect_output_stats(q, ["2"], held_out)
    fold_into_linear(q[2], comp)
    report = compensation_report(
        collect_output_stats(fp, ["2"], held_out), before, collect_output_stats(q, ["2"], held_out)
    )["2"]
    assert report["after"]["cov_rel_error"] < 0.6 * report["before"]["cov_rel_error"], report
    assert report["after"]["mean_abs_error"] < 0.5 * report["before"]["mean_abs_error"], report


class _Apply(nn.Module):
    """A compensation as a module, to measure its output statistics."""

    def __init__(self, comp: Compensation) -> None:
        super().__init__()
        self.comp = comp

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.comp.apply(z)


def test_gains_are_clipped_to_the_configured_range():
    fp = _random_stats(32, 0)
    rescale = torch.logspace(-1, 1, 32, dtype=torch.float64)  # std ratios from 0.1 to 10
    q = OutputStats(fp.count, fp.mean, rescale[:, None] * fp.cov * rescale[None, :])
    config = CSRCConfig(gain_min=0.8, gain_max=1.25)
    gain = solve_compensation(fp, q, config).gain
    assert gain.min().item() == pytest.approx(0.8)
    assert gain.max().item() == pytest.approx(1.25)


@pytest.mark.parametrize("rank", [0, 2, 8])
def test_cross_channel_correction_has_rank_at_most_r(rank):
    comp = solve_compensation(_random_stats(32, 0), _random_stats(32, 1), CSRCConfig(rank=rank))
    correction = comp.U @ comp.V.T  # M - I, before the gains
    assert comp.U.shape == comp.V.shape == (32, rank)
    assert torch.linalg.matrix_rank(correction).item() == rank


def test_identity_stats_give_identity_matrix_and_zero_shift():
    stats = _random_stats(32, 0)
    comp = solve_compensation(stats, stats, CSRCConfig())
    assert torch.equal(comp.matrix(), torch.eye(32, dtype=torch.float64))
    assert torch.equal(comp.shift, torch.zeros(32, dtype=torch.float64))


def _fitted_compensation() -> Compensation:
    return solve_compensation(_random_stats(D, 0), _random_stats(D, 1), CSRCConfig())


def test_fold_into_linear_gives_the_compensated_output():
    layer = nn.Linear(D_IN, D)
    comp = _fitted_compensation()
    x = _inputs(64, 7)
    with torch.no_grad():
        expected = comp.apply(layer(x))
        fold_into_linear(layer, comp)
        torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=1e-4)


def test_fold_into_linear_keeps_the_parameter_signature():
    model = nn.Sequential(nn.Linear(D_IN, D), nn.Tanh())
    signature, weight = parameter_signature(model), model[0].weight
    fold_into_linear(model[0], _fitted_compensation())
    assert parameter_signature(model) == signature
    assert model[0].weight is weight


def test_fold_into_linear_refuses_a_layer_without_bias_unless_allowed():
    layer = nn.Linear(D_IN, D, bias=False)
    with pytest.raises(ConfigError, match="allow_new_bias"):
        fold_into_linear(layer, _fitted_compensation())
    fold_into_linear(layer, _fitted_compensation(), allow_new_bias=True)
    assert isinstance(layer.bias, nn.Parameter)


def test_solve_rejects_statistics_of_different_width():
    with pytest.raises(DaptqError, match="width"):
        solve_compensation(_random_stats(8, 0), _random_stats(9, 0), CSRCConfig())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gain_min", 0.0),
        ("gain_max", 0.4),
        ("rank", -1),
        ("rank", 2.5),
        ("lambda_fit", -1.0),
        ("lambda_identity", float("nan")),
        ("eps", 0.0),
        ("max_samples", 1),
        ("iterations", -1),
        ("gain_min", "0.5"),
    ],
)
def test_bad_config_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        CSRCConfig(**{field: value})


def test_compensation_report_is_json_ready():
    fp, q = {"z": _random_stats(8, 0)}, {"z": _random_stats(8, 1)}
    report = compensation_report(fp, q, fp)
    assert json.loads(json.dumps(report)) == report
    assert report["z"]["after"]["cov_rel_error"] == 0.0


MATMULS_PER_ITERATION = 4  # gradient, P B, P B M^T and P B P^T in _fit_cross_channel


def test_solve_at_width_1024_costs_a_fixed_number_of_matmuls_per_iteration():
    """Counted, not timed: each conjugate-gradient step is a handful of d x d matmuls
    (gradient, line search), and the rank-8 SVD is randomized, so the solve is
    O(iterations * d^3) with a small constant and never a dense d x d decomposition."""
    from torch.utils.flop_counter import FlopCounterMode

    d = 1024
    gen = torch.Generator().manual_seed(0)
    factor = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    sigma_fp = factor @ factor.T + 0.1 * torch.eye(d, dtype=torch.float64)
    mix = torch.eye(d, dtype=torch.float64) + 0.05 * factor
    fp = OutputStats(10_000, torch.zeros(d, dtype=torch.float64), sigma_fp)
    q = OutputStats(10_000, torch.ones(d, dtype=torch.float64), 1.2 * mix @ sigma_fp @ mix.T)
    config = CSRCConfig()
    with FlopCounterMode(display=False) as counter:
        comp = solve_compensation(fp, q, config)
    matmul = 2 * d**3
    assert counter.get_total_flops() <= (MATMULS_PER_ITERATION * config.iterations + 2) * matmul
    assert comp.U.shape == (d, 8)


def _rtn_quantized(bits: int) -> tuple[nn.Sequential, nn.Sequential]:
    """An FP two-layer model and its copy with the second layer RTN-quantized (per group)."""
    torch.manual_seed(1)
    fp = nn.Sequential(nn.Linear(D_IN, 64), nn.Tanh(), nn.Linear(64, D))
    config = {"method": "rtn", "weight_bits": bits, "group_size": 32, "keep": ["0"]}
    return fp, quantize(copy.deepcopy(fp), config_from_dict(config))


@pytest.mark.parametrize("bits", [2, 3])
def test_diagonal_csrc_folds_exactly_into_the_scales_and_keeps_the_codes(bits):
    fp, q = _rtn_quantized(bits)
    comp = solve_diagonal(
        collect_output_stats(fp, ["2"], _calibration())["2"],
        collect_output_stats(q, ["2"], _calibration())["2"],
        CSRCConfig(),
    )
    held_out = [_inputs(2048, 100)]
    before = collect_output_stats(q, ["2"], held_out)
    codes = q[2].codes.clone()
    x = _inputs(64, 7)
    with torch.no_grad():
        expected = comp.apply(q(x))
        fold_into_quantized(q[2], comp)
        # exact up to the scales' bfloat16 grid (a relative step of 2**-8)
        torch.testing.assert_close(q(x), expected, atol=1e-2 * expected.abs().max(), rtol=4e-3)
    assert torch.equal(q[2].codes, codes)  # nothing re-quantized
    report = compensation_report(
        collect_output_stats(fp, ["2"], held_out), before, collect_output_stats(q, ["2"], held_out)
    )["2"]
    assert report["after"]["mean_abs_error"] < 0.5 * report["before"]["mean_abs_error"], report

    def spread(stats: dict) -> float:  # the worst channel's std ratio, quantized / FP
        return max(abs(stats["std_ratio_min"] - 1), abs(stats["std_ratio_max"] - 1))

    assert spread(report["after"]) < spread(report["before"]), report


def test_fold_into_quantized_refuses_a_full_compensation_and_a_shift_without_bias():
    _, q = _rtn_quantized(3)
    with pytest.raises(ConfigError, match="only a diagonal compensation"):
        fold_into_quantized(q[2], _fitted_compensation())
    diagonal = solve_diagonal(_random_stats(D, 1), _random_stats(D, 2), CSRCConfig())
    layer = nn.Linear(D_IN, D, bias=False)
    with pytest.raises(ConfigError, match="no bias"):
        fold_into_quantized(layer, diagonal)
