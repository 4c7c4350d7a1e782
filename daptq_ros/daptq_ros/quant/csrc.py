"""CSRC: make a quantized layer's output statistics match full precision, folded into its weights.

Cross-Space Representation Compensation (METHOD.md §3). For an interface layer with output z,
from FP statistics (mu_FP, Sigma_FP) and quantized ones (mu_Q, Sigma_Q) over the calibration set:

    g_c = clip(sigma_FP_c / max(sigma_Q_c, eps), g_min, g_max)                         (§3.1)
    Sigma_G = diag(g) Sigma_Q diag(g)                  (the gain-corrected covariance)
    M_dense = argmin_M  lam_f ||W o (Sigma_FP - M Sigma_G M^T)||_F^2 + lam_i ||M - I||_F^2   (§3.3)
    I + U V^T = rank-r truncated SVD of (M_dense - I), added to I                      (§3.4)
    M_final = (I + U V^T) diag(g),   d = mu_FP - M_final mu_Q       (§3 [open]: our combination)
    z~ = M_final z + d;  folded: W' = M_final W,  b' = M_final b + d                   (§3.5)

(§3.2's per-channel shift d_c = mu_FP_c - g_c mu_Q_c is the M = I case of d above.) eps floors
the gain's divisor instead of being added to it, so equal statistics give g = 1, M = I, d = 0
exactly, whatever the channel's scale (sigma_Q + eps would shrink small-scale channels).

W is W_ij = 1 / (s_i s_j) with s = sigma_FP (floored): covariance entries divided by the FP
standard deviations of their two channels, i.e. the mismatch is measured in correlation units.
Every channel then counts alike whatever its scale (outlier channels of transformer hidden
states would otherwise take the whole fit), and lam_f, lam_i become dimensionless.

Solver for M_dense: preconditioned nonlinear conjugate gradient (Polak-Ribiere+) started at
M = I, with an exact line search. Along a direction P the objective is a quartic polynomial in the
step t (E(t) = E - t (P B M^T + M B P^T) - t^2 P B P^T), so the best step is a root of a cubic:
no step size to tune, the objective never increases, and the result is deterministic. A
diagonal (Jacobi) preconditioner from the Gauss-Newton Hessian at M = I evens out channels of
different scale. Each iteration costs four d x d matrix products (about 0.15 s at d = 1024 on
two CPU cores); the default 8 iterations cut the objective about 1000-fold on test data.
Starting at I and stopping early favours the solution nearest I, as the lam_i term asks. The
whitening-colouring map Sigma_FP^{1/2} Sigma_G^{-1/2} was not used: it needs two
eigendecompositions (slower than the whole CG solve at d = 1024), breaks down on rank-deficient
activations, and does not minimise the stated objective once shrunk toward I.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from daptq_ros.errors import ConfigError, DaptqError
from daptq_ros.quant.calibration import run_model, run_with_hooks
from daptq_ros.quant.formats import to_bf16_grid
from daptq_ros.quant.layers import QuantLinear

# W's per-channel std is floored at this fraction of the mean FP std, so a dead FP channel
# (sigma_FP ~ 0) cannot dominate the fit with an unbounded weight.
_STD_FLOOR = 1e-3
# Extra columns of the randomized truncated SVD, and its power iterations (Halko et al. 2011):
# with both, the rank-r factors are as accurate as a full SVD's for the spectra seen here.
_SVD_OVERSAMPLE = 8
_SVD_POWER_ITERATIONS = 4


@dataclass(frozen=True)
class CSRCConfig:
    """CSRC settings (METHOD.md §3): gain clip, rank r, the two lambdas and solver limits.

    `iterations` bounds the conjugate-gradient solve for M; `max_samples` is the number of
    output rows per layer that `collect_output_stats(..., max_samples=...)` should read.
    """

    gain_min: float = 0.5
    gain_max: float = 2.0
    rank: int = 8
    lambda_fit: float = 1.0
    lambda_identity: float = 0.1
    eps: float = 1e-6
    max_samples: int = 8192
    iterations: int = 8

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    _bad_field(f.name, value, "must be an integer")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                _bad_field(f.name, value, "must be a number")
            elif not math.isfinite(value):
                _bad_field(f.name, value, "must be finite")
        if self.gain_min <= 0:
            _bad_field("gain_min", self.gain_min, "must be > 0 (a gain of 0 erases a channel)")
        if self.gain_max < self.gain_min:
            _bad_field("gain_max", self.gain_max, f"must be >= gain_min ({self.gain_min})")
        for name in ("rank", "iterations"):
            if getattr(self, name) < 0:
                _bad_field(name, getattr(self, name), "must be >= 0")
        for name in ("lambda_fit", "lambda_identity"):
            if getattr(self, name) < 0:
                _bad_field(name, getattr(self, name), "must be >= 0")
        if self.eps <= 0:
            _bad_field("eps", self.eps, "must be > 0 (it guards the gain's division)")
        if self.max_samples < 2:
            _bad_field("max_samples", self.max_samples, "must be >= 2 (a covariance needs 2 rows)")


def _bad_field(name: str, value: Any, problem: str) -> None:
    raise ConfigError(f"CSRC config field '{name}' = {value!r} {problem}: set a valid {name}")


@dataclass
class OutputStats:
    """Mean and unbiased (1 / (n - 1)) covariance of one layer's output rows, in float64."""

    count: int
    mean: torch.Tensor  # [d]
    cov: torch.Tensor  # [d, d]

    @property
    def dim(self) -> int:
        """The output width d."""
        return self.mean.shape[0]

    @property
    def std(self) -> torch.Tensor:
        """Per-channel standard deviation sigma_c = sqrt(Sigma_cc)."""
        return self.cov.diagonal().clamp_min(0).sqrt()

    @classmethod
    def from_rows(cls, rows: torch.Tensor) -> OutputStats:
        """Statistics of a [..., d] tensor, its leading dims flattened to rows."""
        accumulator = _Accumulator()
        accumulator.update(rows)
        return accumulator.result("the rows")


class _Accumulator:
    """Streaming mean and scatter matrix, merged batch by batch (Chan et al.'s parallel update).

    Merging centred per-batch scatters avoids the cancellation of sum(x x^T) - n mu mu^T when
    the mean is large against the std, as it is in many hidden-state channels.
    """

    def __init__(self, max_rows: int | None = None) -> None:
        self.max_rows = max_rows
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None

    def update(self, z: torch.Tensor) -> None:
        rows = z.detach().reshape(-1, z.shape[-1]).double()
        if self.max_rows is not None:
            rows = rows[: self.max_rows - self.count]
        if rows.shape[0] == 0:
            return
        if self.mean is not None and rows.shape[1] != self.mean.shape[0]:
            raise DaptqError(
                f"output width changed from {self.mean.shape[0]} to {rows.shape[1]} between "
                "calibration items: name a layer whose output has a fixed last dimension"
            )
        n_b = rows.shape[0]
        mean_b = rows.mean(dim=0)
        centred = rows - mean_b
        scatter_b = centred.T @ centred
        if self.mean is None or self.scatter is None:
            self.count, self.mean, self.scatter = n_b, mean_b, scatter_b
            return
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self.mean
        self.scatter = self.scatter + scatter_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.mean = self.mean + delta * (n_b / n)
        self.count = n

    def result(self, source: str) -> OutputStats:
        if self.mean is None or self.scatter is None or self.count < 2:
            raise DaptqError(
                f"{source} gave {self.count} output rows: a covariance needs at least 2; check "
                "that the model calls the layer on the calibration items and that its row "
                "filter keeps rows"
            )
        return OutputStats(self.count, self.mean, self.scatter / (self.count - 1))


@torch.no_grad()
def collect_output_stats(
    model: nn.Module,
    layer_names: Sequence[str],
    calibration: Iterable[Any],
    run: Callable[[nn.Module, Any], Any] | None = None,
    row_filter: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    max_samples: int | None = None,
) -> dict[str, OutputStats]:
    """One pass over `calibration`, recording the output statistics of the named modules.

    `run(model, item)` drives the model (default: `run_model`). `row_filter[name]` maps the
    module's output [..., d] to the part whose rows count (e.g. the prefix tokens only).
    `max_samples` (pass `CSRCConfig.max_samples`) keeps the first that many rows per layer.
    """
    modules = dict(model.named_modules())
    filters = dict(row_filter or {})
    for name in [*layer_names, *filters]:
        if name not in modules:
            raise DaptqError(
                f"layer '{name}' is not a module of the model: use a name from "
                "model.named_modules()"
            )
    unknown_filters = sorted(set(filters) - set(layer_names))
    if unknown_filters:
        raise DaptqError(
            f"row_filter names '{unknown_filters[0]}', which is not in layer_names: "
            "add it to layer_names or drop its filter"
        )
    accumulators = {name: _Accumulator(max_samples) for name in layer_names}
    hooks = {
        name: _output_hook(name, accumulators[name], filters.get(name)) for name in layer_names
    }
    run_with_hooks(model, calibration, hooks, run or run_model)
    return {name: acc.result(f"layer '{name}'") for name, acc in accumulators.items()}


def _output_hook(
    name: str,
    accumulator: _Accumulator,
    keep_rows: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Callable[[nn.Module, Any, Any], None]:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise DaptqError(
                f"layer '{name}' returns {type(output).__name__}, not a tensor [..., d]: "
                "name a module whose output is a single tensor"
            )
        accumulator.update(keep_rows(output) if keep_rows is not None else output)

    return hook


@dataclass(frozen=True)
class Compensation:
    """z~ = M_final z + d with M_final = (I + U V^T) diag(g) (METHOD.md §3, our combination)."""

    gain: torch.Tensor  # g [d]
    shift: torch.Tensor  # d [d]
    U: torch.Tensor  # [d, r]
    V: torch.Tensor  # [d, r]

    def matrix(self) -> torch.Tensor:
        """The dense M_final = (I + U V^T) diag(g), [d, d]."""
        eye = torch.eye(self.gain.shape[0], dtype=self.U.dtype, device=self.U.device)
        return (eye + self.U @ self.V.T) * self.gain

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """M_final z + d on the last dim of z, in O(d r) per row (never forms M_final)."""
        gain, shift, u, v = (t.to(z.dtype) for t in (self.gain, self.shift, self.U, self.V))
        z_g = z * gain
        return z_g + (z_g @ v) @ u.T + shift


def solve_compensation(fp: OutputStats, q: OutputStats, config: CSRCConfig) -> Compensation:
    """Gains, low-rank cross-channel M and shift that map the Q statistics onto the FP ones."""
    if fp.dim != q.dim:
        raise DaptqError(
            f"FP statistics have width {fp.dim} but quantized ones {q.dim}: collect both from "
            "the same layer of the FP and the quantized model"
        )
    mu_fp, sigma_fp_cov = fp.mean.double(), fp.cov.double()
    mu_q = q.mean.double().to(mu_fp.device)
    sigma_q_cov = q.cov.double().to(mu_fp.device)
    d = fp.dim
    eye = torch.eye(d, dtype=torch.float64, device=mu_fp.device)
    # §3.1: per-channel gain
    sigma_q = q.std.double().to(mu_fp.device).clamp_min(config.eps)
    g = (fp.std.double() / sigma_q).clamp(config.gain_min, config.gain_max)
    # §3.3 on the gain-corrected covariance, so M only fixes what g cannot
    sigma_g = g[:, None] * sigma_q_cov * g[None, :]
    s = fp.std.double()
    s = s.clamp_min(_STD_FLOOR * s.mean().item() + config.eps)
    m_dense = _fit_cross_channel(sigma_fp_cov, sigma_g, 1.0 / s, config)
    # §3.4: M = I + U V^T
    u, v = _truncated_svd(m_dense - eye, min(config.rank, d))
    m_final = (eye + u @ v.T) * g
    return Compensation(gain=g, shift=mu_fp - m_final @ mu_q, U=u, V=v)


def solve_diagonal(fp: OutputStats, q: OutputStats, config: CSRCConfig) -> Compensation:
    """CSRC's per-channel part alone (§3.1-3.2, M = I): g = clip(sigma_FP / sigma_Q), d = mu_FP
    - g mu_Q. It folds exactly into a quantized layer (`fold_into_quantized`)."""
    if fp.dim != q.dim:
        raise DaptqError(
            f"FP statistics have width {fp.dim} but quantized ones {q.dim}: collect both from "
            "the same layer of the FP and the quantized model"
        )
    sigma_q = q.std.double().clamp_min(config.eps)
    gain = (fp.std.double() / sigma_q).clamp(config.gain_min, config.gain_max)
    shift = fp.mean.double() - gain * q.mean.double()
    empty = torch.zeros(fp.dim, 0, dtype=torch.float64)
    return Compensation(gain=gain, shift=shift, U=empty, V=empty)


@torch.no_grad()
def fold_into_quantized(layer: nn.Module, comp: Compensation) -> None:
    """In place and exact at any bit width: output row c scaled by g_c, b' = g b + d.

    On a QuantLinear only the row's scales change (kept on the bfloat16 grid the kernels hold),
    so the integer codes stay and nothing is re-quantized; an nn.Linear (a kept layer) scales
    its weight rows. Only a diagonal compensation (M = I) folds this way, and only into a layer
    with a bias when d is not zero (a new bias would be a new parameter).
    """
    if comp.U.numel() and bool(comp.U.any()):
        raise ConfigError(
            "only a diagonal compensation (M = I) folds into a quantized layer's scales; fold a "
            "full one into the full-precision layer and re-quantize (fold_into_linear)"
        )
    gain = comp.gain.float()
    if isinstance(layer, QuantLinear):
        layer.scale.copy_(to_bf16_grid(layer.scale * gain[:, None]))
        layer._weight_hat = None  # the cached dequantized weight is stale
    elif isinstance(layer, nn.Linear):
        layer.weight.mul_(gain[:, None].to(layer.weight.dtype))
    else:
        raise ConfigError(f"CSRC folds into a Linear or QuantLinear, got {type(layer).__name__}")
    if layer.bias is not None:
        layer.bias.copy_((gain * layer.bias.float() + comp.shift.float()).to(layer.bias.dtype))
    elif bool(comp.shift.any()):
        raise ConfigError(
            "the layer has no bias, so folding the shift d would add a parameter: zero the "
            "shift or fold into a layer with a bias"
        )


def _fit_cross_channel(
    sigma_fp: torch.Tensor, sigma_g: torch.Tensor, w: torch.Tensor, config: CSRCConfig
) -> torch.Tensor:
    """argmin_M lam_f ||W o (Sigma_FP - M Sigma_G M^T)||^2 + lam_i ||M - I||^2, W = w w^T.

    Preconditioned Polak-Ribiere+ conjugate gradient from M = I with an exact line search.
    """
    lam_f, lam_i = config.lambda_fit, config.lambda_identity
    # float32 is ample for a fit judged at ~1e-4 relative accuracy, and twice as fast on CPU
    a, b, w2 = sigma_fp.float(), sigma_g.float(), (w * w).float()
    w2_outer = w2[:, None] * w2[None, :]  # W o W
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    m, mb = eye.clone(), b.clone()
    e = a - b  # E = Sigma_FP - M Sigma_G M^T at M = I
    # Jacobi preconditioner: the Gauss-Newton Hessian diagonal at M = I,
    # d2f/dM_ij^2 ~ 4 lam_f w_i^2 sum_k w_k^2 B_kj^2 + 2 lam_i
    precond = 1.0 / (4 * lam_f * w2[:, None] * (w2 @ (b * b))[None, :] + 2 * lam_i + 1e-30)
    direction = z_old = None
    grad_dot_z_old = 0.0
    for _ in range(config.iterations):
        we = w2_outer * e
        grad = -4 * lam_f * we @ mb + 2 * lam_i * (m - eye)
        z = precond * grad
        grad_dot_z = _dot(grad, z)
        if grad_dot_z <= 0:
            break  # zero gradient: M is already optimal
        if direction is None or z_old is None:
            direction = -z
        else:
            beta = max(0.0, (grad_dot_z - _dot(grad, z_old)) / grad_dot_z_old)
            direction = -z + beta * direction
            if _dot(grad, direction) >= 0:
                direction = -z  # not a descent direction: restart
        z_old, grad_dot_z_old = z, grad_dot_z
        pb = direction @ b
        c1_half = pb @ m.T
        c1 = c1_half + c1_half.T  # first-order change of M B M^T along the direction
        c2 = pb @ direction.T  # second-order change
        # phi(t) = f(M + t P) = phi0 + a1 t + a2 t^2 + a3 t^3 + a4 t^4
        wc1 = w2_outer * c1
        r = m - eye
        a1 = -2 * lam_f * _dot(we, c1) + 2 * lam_i * _dot(r, direction)
        a2 = lam_f * (_dot(wc1, c1) - 2 * _dot(we, c2)) + lam_i * _dot(direction, direction)
        a3 = 2 * lam_f * _dot(wc1, c2)
        a4 = lam_f * _dot(w2_outer * c2, c2)
        t = _quartic_argmin(a1, a2, a3, a4)
        if t == 0.0:
            break
        m = m + t * direction
        mb = mb + t * pb
        e = e - t * c1 - (t * t) * c2
    return m.double()


def _dot(x: torch.Tensor, y: torch.Tensor) -> float:
    """Frobenius inner product <x, y>."""
    return float(torch.vdot(x.reshape(-1), y.reshape(-1)))


def _quartic_argmin(a1: float, a2: float, a3: float, a4: float) -> float:
    """The t >= 0 minimising a1 t + a2 t^2 + a3 t^3 + a4 t^4 (a root of its cubic derivative)."""
    roots = np.roots([4 * a4, 3 * a3, 2 * a2, a1]) if any((a1, a2, a3, a4)) else []
    candidates = [0.0] + [
        float(x.real) for x in roots if abs(x.imag) <= 1e-9 * (1 + abs(x)) and x.real > 0
    ]
    return min(candidates, key=lambda t: a1 * t + a2 * t**2 + a3 * t**3 + a4 * t**4)


def _truncated_svd(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """U, V with U V^T the best rank-`rank` approximation of x (randomized, fixed seed)."""
    d = x.shape[0]
    if rank == 0:
        empty = x.new_zeros(d, 0)
        return empty, empty.clone()
    k = min(d, rank + _SVD_OVERSAMPLE)
    generator = torch.Generator(device=x.device).manual_seed(0)
    y = x @ torch.randn(d, k, generator=generator, dtype=x.dtype, device=x.device)
    for _ in range(_SVD_POWER_ITERATIONS):
        y = x @ (x.T @ torch.linalg.qr(y).Q)
    basis = torch.linalg.qr(y).Q
    u_small, singular, vh = torch.linalg.svd(basis.T @ x, full_matrices=False)
    return (basis @ u_small[:, :rank]) * singular[:rank], vh[:rank].T.contiguous()


@torch.no_grad()
def fold_into_linear(layer: nn.Linear, comp: Compensation, allow_new_bias: bool = False) -> None:
    """In place: W' = M_final W, b' = M_final b + d, reusing the layer's parameter tensors.

    A layer without bias needs a new bias Parameter for a non-zero d, which changes the
    parameter count and `parameter_signature`: that is refused (ConfigError) unless
    `allow_new_bias=True`. With d = 0 only the weight changes.
    """
    if not isinstance(layer, nn.Linear):
        raise ConfigError(
            f"CSRC folds into nn.Linear, got {type(layer).__name__}: fold into the "
            "full-precision layer, then quantize it (METHOD.md §3)"
        )
    if layer.out_features != comp.gain.shape[0]:
        raise ConfigError(
            f"the compensation has width {comp.gain.shape[0]} but the layer has "
            f"{layer.out_features} outputs: fold it into the layer its statistics came from"
        )
    needs_bias = layer.bias is None and bool(comp.shift.any())
    if needs_bias and not allow_new_bias:
        raise ConfigError(
            "the layer has no bias, so folding the shift d would add a parameter: pass "
            "allow_new_bias=True to accept the new bias, or fold into a layer with a bias"
        )
    weight = layer.weight
    m = comp.matrix().to(device=weight.device, dtype=torch.float64)
    shift = comp.shift.to(device=weight.device, dtype=torch.float64)
    weight.copy_((m @ weight.double()).to(weight.dtype))
    if needs_bias:
        layer.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=weight.requires_grad)
    elif layer.bias is not None:
        layer.bias.copy_((m @ layer.bias.double() + shift).to(layer.bias.dtype))


def compensation_report(
    fp: Mapping[str, OutputStats],
    q_before: Mapping[str, OutputStats],
    q_after: Mapping[str, OutputStats],
    eps: float = 1e-6,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per layer, before and after CSRC: mean mismatch, std ratios, covariance mismatch.

    mean_abs_error = mean_c |mu_c - mu_FP_c|; std_ratio_* = sigma_c / max(sigma_FP_c, eps) over
    channels; cov_rel_error = ||Sigma_FP - Sigma||_F / ||Sigma_FP||_F. All plain floats (JSON).
    """
    report = {}
    for name, reference in fp.items():
        missing = [
            label for label, s in (("q_before", q_before), ("q_after", q_after)) if name not in s
        ]
        if missing:
            raise DaptqError(
                f"layer '{name}' has FP statistics but none in {missing[0]}: collect every "
                "layer of the report in all three passes"
            )
        report[name] = {
            "before": _mismatch(reference, q_before[name], eps),
            "after": _mismatch(reference, q_after[name], eps),
        }
    return report


def _mismatch(fp: OutputStats, other: OutputStats, eps: float) -> dict[str, float]:
    ratio = other.std.to(fp.std.device) / fp.std.clamp_min(eps)
    # relative to ||Sigma_FP||, floored at eps so an all-dead layer cannot divide by zero
    cov_error = torch.linalg.matrix_norm(fp.cov - other.cov.to(fp.cov.device))
    return {
        "mean_abs_error": float((fp.mean - other.mean.to(fp.mean.device)).abs().mean()),
        "std_ratio_mean": float(ratio.mean()),
        "std_ratio_min": float(ratio.min()),
        "std_ratio_max": float(ratio.max()),
        "cov_rel_error": float(cov_error / torch.linalg.matrix_norm(fp.cov).clamp_min(eps)),
    }


def parameter_signature(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of all parameters and buffers: equal before and after a fold."""
    return [
        (name, tuple(tensor.shape))
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    ]
