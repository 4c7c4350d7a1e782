"""Real-time chunking (RTC) for flow-matching policies: inpaint a new chunk onto the old one.

Black, Galliker and Levine 2025, "Real-Time Execution of Action Chunking Flow Policies"
(arXiv:2506.07339). While a chunk is computed, the robot keeps executing the previous one. The
first `delay` rows of the new chunk are therefore already decided (they execute before it
arrives): they are frozen to the old chunk's rows. The following rows the old chunk still
covers are guided toward it with weights that decay to 0, and the rest is free. Each Euler step
adds a pseudo-inverse guidance term (PiGDM) to the model's velocity:

    v' = v - min(beta, (1 - tau) / (tau * r^2)) * J^T (W * (Y - A_hat))

with A_hat = x - t * v the chunk the current noisy sample predicts, J = dA_hat/dx (a
vector-Jacobian product through the model), Y the old chunk's rows, W the weights, tau = 1 - t
(pi0 runs t from 1 = noise to 0 = actions) and r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2).

Two ways to get J^T e: "vjp", the paper's backward pass through the model (twice an Euler
step's cost), or "identity", J = I (no backward pass, so it runs on any runtime). Measured on the
embedded pi0 with chunks from other noise as the old chunk (docs/robot.md), the identity pulls
the frozen rows 5x closer to the old chunk than no guidance and 4x closer than the VJP, whose
J is small where the model's prediction barely depends on its noisy input. A model that refuses
a backward pass (integer kernels) runs "identity", and the method that ran is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from daptq_ros.errors import PolicyError

GUIDANCE_CLIP = 5.0  # beta: the paper's clip on the guidance weight
JACOBIANS = ("identity", "vjp")

Velocity = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RtcGuide:
    """The old chunk's rows a new chunk must continue, normalised, on the new chunk's time grid.

    `target` is [P, D] (P <= horizon): row i is the action the robot executes at the new
    chunk's row i. Rows below `delay` are frozen (they run before the chunk can arrive).
    """

    target: torch.Tensor
    delay: int
    jacobian: str = "identity"
    beta: float = GUIDANCE_CLIP

    def __post_init__(self) -> None:
        rows = int(self.target.shape[0])
        if self.target.ndim != 2 or rows < 1:
            shape = tuple(self.target.shape)
            raise PolicyError(f"RTC target must be [P, D] with P >= 1, got {shape}")
        if not 0 <= self.delay <= rows:
            raise PolicyError(f"RTC delay {self.delay} must lie in [0, {rows}] (the prefix rows)")
        if self.jacobian not in JACOBIANS:
            raise PolicyError(f"RTC jacobian {self.jacobian!r}: use one of {', '.join(JACOBIANS)}")

    def weights(self, horizon: int) -> torch.Tensor:
        """W [horizon]: 1 on the frozen rows, decaying exponentially to 0 where the prefix ends."""
        return prefix_weights(horizon, self.delay, int(self.target.shape[0]))


def prefix_weights(horizon: int, delay: int, prefix: int) -> torch.Tensor:
    """RTC's soft mask: 1 for i < delay, c_i (e^c_i - 1) / (e - 1) until `prefix`, then 0.

    c_i = (prefix - i) / (prefix - delay + 1) falls linearly from ~1 to ~0 over the rows the old
    chunk still covers after the frozen ones.
    """
    index = torch.arange(horizon, dtype=torch.float32)
    weights = torch.zeros(horizon)
    weights[: min(delay, horizon)] = 1.0
    middle = (index >= delay) & (index < min(prefix, horizon))
    c = (prefix - index[middle]) / (prefix - delay + 1)
    weights[middle] = c * torch.expm1(c) / (math.e - 1)
    return weights


def guidance_scale(t: float, beta: float) -> float:
    """min(beta, (1 - tau) / (tau r^2)) at flow time t (tau = 1 - t); beta at pure noise."""
    tau = 1.0 - t
    if tau <= 0 or tau >= 1:
        return beta if tau <= 0 else 0.0
    return min(beta, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau)))


def guided_velocity(
    velocity: Velocity, x: torch.Tensor, t: float, guide: RtcGuide, jacobian: str
) -> tuple[torch.Tensor, str]:
    """The guided velocity at (x, t) and the Jacobian used ("vjp" falls back to "identity").

    x is [B, H, D_model]; the guide covers the first D dims of the first P rows (at most H).
    """
    horizon, dim = x.shape[1], guide.target.shape[1]
    rows = min(guide.target.shape[0], horizon)
    weights = guide.weights(horizon).to(x)
    target = torch.zeros_like(x)
    target[:, :rows, :dim] = guide.target[:rows].to(x)
    mask = torch.zeros_like(x)
    mask[:, :, :dim] = weights[None, :, None]
    scale = guidance_scale(t, guide.beta)
    if jacobian == "vjp":
        try:
            with torch.enable_grad():
                point = x.detach().requires_grad_(True)
                v = velocity(point)
                predicted = point - t * v
                error = (target - predicted) * mask
                (pull,) = torch.autograd.grad(predicted, point, grad_outputs=error)
            return v.detach() - scale * pull, "vjp"
        except RuntimeError:  # a kernel without a backward: fall back to J = I below
            pass
    v = velocity(x)
    return v - scale * (target - (x - t * v)) * mask, "identity"


def rtc_guide(
    prefix_actions: np.ndarray,
    delay: int,
    normalize: Callable[[np.ndarray], np.ndarray],
    jacobian: str = "identity",
) -> RtcGuide:
    """The guide for actions in data units (the robot's), normalised as the model sees them."""
    target = torch.from_numpy(np.asarray(normalize(np.asarray(prefix_actions)), np.float32))
    return RtcGuide(target, int(delay), jacobian)


def euler_flow(
    velocity_at: Callable[[torch.Tensor, float], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    guide: RtcGuide | None = None,
) -> tuple[torch.Tensor, str]:
    """pi0's Euler integration from t = 1 (noise) to 0, RTC-guided when `guide` is given.

    Returns the actions and the method that ran: "" unguided, else "rtc (<jacobian>)", where the
    Jacobian is "identity" if a "vjp" guide met a model without a backward pass.
    """
    step = -1.0 / steps
    x, jacobian = noise, "" if guide is None else guide.jacobian
    for k in range(steps):
        t = 1.0 + k * step
        if guide is None:
            v = velocity_at(x, t)
        else:  # after one refused backward pass, the remaining steps run J = I at once
            v, jacobian = guided_velocity(
                lambda point, t=t: velocity_at(point, t), x, t, guide, jacobian
            )
        x = x + step * v
    return x, "" if guide is None else f"rtc ({jacobian})"
