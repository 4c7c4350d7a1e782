"""Inference latency as a test axis: sim episodes through the policy node's logic (lockstep).

Each episode runs the sim bridge and the policy node core together (robot/lockstep.py), with
the node's injected latency set to a fraction of the model's chunk duration, so the latency is
exact sim time and the runs are reproducible. For each chunk method (RTC, crossfade) and delay,
per episode:

- success;
- active share: steps the safety filter passes the policy's commands (ACTIVE) over the steps
  after the arm first reached ACTIVE (the blend from the measured state after ~/enable excluded);
- stopped share: steps, from the first chunk on, at which the timeline stood still (the arm
  waiting at a chunk's end for the next one, still ACTIVE);
- boundary jerk: mean |jerk| of the commanded position over the steps whose jerk stencil spans
  a chunk switch, over the mean |jerk| elsewhere (1 = switches are as smooth as chunks);
- EE deviation: mean distance between the hand's path and the zero-delay path of the same seed
  and method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.typestore import make_typestore
from daptq_ros.control.safety import Status
from daptq_ros.robot.lockstep import lockstep_node_params, run_lockstep
from daptq_ros.robot.policy_core import PolicyNodeCore
from daptq_ros.robot.sim_bridge_core import SimBridgeCore

DELAYS = (0.0, 0.25, 0.5, 0.75, 1.25)  # x the chunk duration
METHODS = ("rtc:identity", "rtc:vjp", "crossfade")  # chunk_method[:rtc_jacobian]
# Jerk at step k is the third difference of commands k-2..k+1: the ones whose stencil holds both
# the old chunk's last command (s - 1) and the new one's first (s) are k = s - 1, s, s + 1.
_AT_SWITCH = (-1, 0, 1)
STOPPED_RATE = 0.01  # a timeline rate below this stands still


@dataclass
class Trace:
    """What one episode did, step by step."""

    success: bool = False
    statuses: list[str] = field(default_factory=list)
    commands: list[NDArray[np.float64]] = field(default_factory=list)
    hand: list[NDArray[np.float64]] = field(default_factory=list)
    switches: list[int] = field(default_factory=list)  # steps whose command came from a new chunk
    method: str = ""
    rates: list[float] = field(default_factory=list)
    step_limit: NDArray[np.float64] | None = None  # the safety filter's most per command, per axis


def run_episode(
    policy: Any,
    task: str,
    seed: int,
    method: str,
    delay_s: float,
    max_steps: int,
    overrun: str = "slow",
    threads: int = 1,
) -> Trace:
    """One lockstep episode of `policy` (built once, shared) with `delay_s` injected.

    `method` is a chunk_method, with ":identity" or ":vjp" for RTC's Jacobian.
    """
    method, _, jacobian = method.partition(":")
    types = make_typestore().types
    bridge = SimBridgeCore({"task": task, "seed": seed, "max_steps": max_steps}, types)
    params = {
        **lockstep_node_params(bridge, threads),
        "chunk_method": method,
        "rtc_jacobian": jacobian or "identity",
        "overrun": overrun,
        "inject_latency_s": float(delay_s),
    }
    node = PolicyNodeCore(params, types, build_policy=lambda bits: policy)
    trace = Trace(step_limit=node.safety.limits.velocity * bridge.period)
    added = [0]

    def on_step(step: int, now: float) -> None:
        trace.statuses.append(node.safety.status.value)
        command = node.safety.last_command
        trace.commands.append(np.full(3, np.nan) if command is None else command[:3].copy())
        trace.hand.append(bridge.observation.ee_position.copy())
        trace.rates.append(node.replanner.timeline.rate)
        if node.scheduler.counters["added"] > added[0]:
            added[0] = node.scheduler.counters["added"]
            trace.switches.append(step)
            trace.method = node.last_guidance or trace.method

    try:
        result = run_lockstep(bridge, node, max_steps, on_step=on_step)
        trace.success = result.success
        # The RTC method of a guided chunk; an episode whose chunks were all unguided (e.g. it
        # ended on its first) keeps the chunk method.
        trace.method = trace.method or node.chunk_method
    finally:
        node.close()
        bridge.close()
    return trace


def method_label(traces: list[Trace], method: str) -> str:
    """The method that ran: the RTC method of any guided episode, else the chunk method."""
    plain = method.partition(":")[0]
    return next((t.method for t in traces if t.method != plain), plain)


def active_share(trace: Trace) -> float:
    """ACTIVE steps over the steps from the first ACTIVE one on (NaN if never active)."""
    statuses = np.array(trace.statuses)
    active = np.flatnonzero(statuses == Status.ACTIVE.value)
    if active.size == 0:
        return float("nan")
    return float(np.mean(statuses[active[0] :] == Status.ACTIVE.value))


def boundary_jerk_ratio(trace: Trace) -> float:
    """Mean |jerk| at chunk switches over mean |jerk| inside chunks (NaN when undefined)."""
    commands = np.array(trace.commands)
    statuses = np.array(trace.statuses)
    steps = len(commands)
    jerk = np.full(steps, np.nan)
    if steps >= 4:
        third = commands[3:] - 3 * commands[2:-1] + 3 * commands[1:-2] - commands[:-3]
        jerk[2:-1] = np.linalg.norm(third, axis=1)
    active = np.flatnonzero(statuses == Status.ACTIVE.value)
    if active.size == 0:
        return float("nan")
    moving = np.zeros(steps, bool)
    moving[active[0] :] = True
    boundary = np.zeros(steps, bool)
    for switch in trace.switches:
        for offset in _AT_SWITCH:
            if 0 <= switch + offset < steps:
                boundary[switch + offset] = True
    valid = moving & np.isfinite(jerk)
    at_switch, inside = jerk[valid & boundary], jerk[valid & ~boundary]
    if at_switch.size == 0 or inside.size == 0 or inside.mean() == 0:
        return float("nan")
    return float(at_switch.mean() / inside.mean())


def mean_rate(trace: Trace) -> float:
    """The timeline's mean rate from the first chunk on (1 = never slowed; NaN if none came)."""
    if not trace.switches:
        return float("nan")
    return float(np.mean(trace.rates[trace.switches[0] :]))


def stopped_share(trace: Trace) -> float:
    """Steps from the first chunk on at which the timeline stood still (NaN if none came)."""
    if not trace.switches:
        return float("nan")
    return float(np.mean(np.array(trace.rates[trace.switches[0] + 1 :]) < STOPPED_RATE))


def hand_deviation(trace: Trace, reference: Trace) -> float:
    """Mean distance (m) between the two hand paths over their common steps."""
    steps = min(len(trace.hand), len(reference.hand))
    if steps == 0:
        return float("nan")
    gap = np.array(trace.hand[:steps]) - np.array(reference.hand[:steps])
    return float(np.linalg.norm(gap, axis=1).mean())


@dataclass(frozen=True)
class SweepRow:
    """One (method, delay) cell over its episodes."""

    method: str
    delay_fraction: float
    delay_s: float
    success: list[bool]
    active: list[float]
    stopped: list[float]
    jerk_ratio: list[float]
    deviation: list[float]
    mean_rate: list[float]  # timeline rate averaged over the steps after the first chunk


def sweep(
    policy: Any,
    span_s: float,
    episodes: Iterable[tuple[str, int]],
    max_steps: int,
    delays: Iterable[float] = DELAYS,
    methods: Iterable[str] = METHODS,
    overrun: str = "slow",
    progress: Callable[[str], None] | None = None,
) -> list[SweepRow]:
    """Every (method, delay) over the same (task, seed) episodes; delays x `span_s`."""
    episodes, delays = list(episodes), sorted(set(delays) | {0.0})
    rows = []
    for method in methods:
        zero: dict[tuple[str, int], Trace] = {}
        for fraction in delays:
            traces = []
            for task, seed in episodes:
                trace = run_episode(
                    policy, task, seed, method, fraction * span_s, max_steps, overrun
                )
                traces.append(trace)
                if fraction == 0.0:
                    zero[(task, seed)] = trace
                if progress is not None:
                    progress(f"{method} delay {fraction:g}x {task}/{seed}: {trace.success}")
            rows.append(
                SweepRow(
                    method_label(traces, method),
                    fraction,
                    fraction * span_s,
                    [t.success for t in traces],
                    [active_share(t) for t in traces],
                    [stopped_share(t) for t in traces],
                    [boundary_jerk_ratio(t) for t in traces],
                    [hand_deviation(t, zero[key]) for t, key in zip(traces, episodes, strict=True)],
                    [mean_rate(t) for t in traces],
                )
            )
    return rows
