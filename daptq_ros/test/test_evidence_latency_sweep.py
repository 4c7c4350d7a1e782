"""The latency sweep's measures, and one lockstep episode with inference longer than a chunk."""

from __future__ import annotations

import numpy as np
import pytest

from daptq_ros.evidence.latency_sweep import (
    Trace,
    active_share,
    boundary_jerk_ratio,
    hand_deviation,
    mean_rate,
    method_label,
    run_episode,
)


def trace_of(commands: np.ndarray, switches: list[int], statuses: list[str] | None = None):
    steps = len(commands)
    return Trace(
        statuses=statuses or ["active"] * steps,
        commands=list(commands),
        hand=list(commands),
        switches=switches,
        rates=[1.0] * steps,
    )


def test_a_velocity_step_at_each_switch_shows_as_boundary_jerk() -> None:
    # Constant acceleration inside chunks (zero jerk) plus a velocity kick at every switch.
    steps, switches = 60, list(range(5, 60, 10))
    velocity = np.cumsum(np.full(steps, 1e-4))
    for switch in switches:
        velocity[switch:] += 2e-3
    smooth = np.cumsum(np.cumsum(np.full(steps, 1e-4)))[:, None] * np.ones((1, 3))
    kicked = np.cumsum(velocity)[:, None] * np.ones((1, 3))
    rough = boundary_jerk_ratio(
        trace_of(kicked + 1e-9 * np.random.default_rng(0).normal(size=(steps, 3)), switches)
    )
    assert rough > 100
    noise = 1e-6 * np.random.default_rng(1).normal(size=(steps, 3))
    assert boundary_jerk_ratio(trace_of(smooth + noise, switches)) < 3


def test_active_share_counts_from_the_first_active_step() -> None:
    statuses = ["blending"] * 10 + ["active"] * 30 + ["hold"] * 10
    trace = trace_of(np.zeros((50, 3)), [0], statuses)
    assert active_share(trace) == pytest.approx(0.75)
    assert np.isnan(active_share(trace_of(np.zeros((5, 3)), [], ["hold"] * 5)))


def test_hand_deviation_and_mean_rate() -> None:
    a = trace_of(np.zeros((10, 3)), [2])
    b = trace_of(np.ones((12, 3)) * [0.003, 0.004, 0.0], [2])
    assert hand_deviation(a, b) == pytest.approx(0.005)
    a.rates = [0.0, 0.0, 1.0, 0.5] + [0.5] * 6
    assert mean_rate(a) == pytest.approx(np.mean(a.rates[2:]))


def test_a_cell_is_labelled_by_the_rtc_method_of_any_guided_episode() -> None:
    # An episode that ended on its first (unguided) chunk keeps the plain chunk method.
    first_chunk_only, guided = Trace(method="rtc"), Trace(method="rtc (identity)")
    assert method_label([first_chunk_only, guided], "rtc:identity") == "rtc (identity)"
    assert method_label([first_chunk_only], "rtc:vjp") == "rtc"
    assert method_label([Trace(method="crossfade")], "crossfade") == "crossfade"


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("overrun", ["slow", "hold"])
def test_inference_longer_than_a_chunk_moves_the_sim_arm_within_the_limits(overrun) -> None:
    """The embedded model at 1.25x its chunk's duration of latency, through the node's logic."""
    import torch

    from daptq_ros.robot.params import defaults
    from daptq_ros.robot.policy_builder import default_policy_builder

    torch.set_num_threads(1)
    policy = default_policy_builder({**defaults("policy_node"), "num_threads": 1})("fp32")
    trace = run_episode(policy, "reach", 100000, "rtc", 1.25 * 8 * 0.0125, 90, overrun)
    commands = np.array([c for c in trace.commands if np.isfinite(c).all()])
    assert len(trace.switches) >= 4 and np.linalg.norm(commands[-1] - commands[0]) > 0.01
    # The safety filter's velocity limit bounds every step of the command, on every axis.
    assert np.all(np.abs(np.diff(commands, axis=0)) <= trace.step_limit[:3] + 1e-9)
    assert trace.method == "rtc (identity)"
    if overrun == "slow":
        assert 0.2 <= mean_rate(trace) < 1.0
