"""Evidence for the drift guard: a low-bit config that drifts, run four ways on the sim (lockstep).

For the same (task, seed) episodes, through the policy node's logic (robot/lockstep.py, which
awaits the shadow, so runs are reproducible):

- fixed low: the low-bit config alone;
- ladder: the low-bit config with a shadow at full precision and the precision ladder;
- fixed top: the ladder's top rung alone;
- fp32: the full-precision model, whose hand path is the reference of each seed.

Per episode: success, the hand's mean distance from the FP32 path of the same seed (m), the
share of steps on each bit config, and the average weight bits over the steps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daptq_ros.bags.typestore import make_typestore
from daptq_ros.evidence.latency_sweep import Trace, hand_deviation
from daptq_ros.robot.lockstep import MessageSink, lockstep_node_params, run_lockstep
from daptq_ros.robot.policy_core import PolicyNodeCore
from daptq_ros.robot.sim_bridge_core import SimBridgeCore

WAYS = ("fixed low", "ladder", "fixed top", "fp32")
FULL_PRECISION = "fp32"


@dataclass
class GuardTrace(Trace):
    """A Trace plus the bit config serving at every step."""

    rungs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GuardSettings:
    """The low-bit config, the ladder above it and its thresholds, the shadow's bits."""

    ladder: tuple[str, ...]  # lowest first; ladder[0] is the low-bit config
    shadow: str = FULL_PRECISION
    up_m: float = 0.002
    down_m: float = 0.0005
    up_count: int = 2
    down_count: int = 10
    shadow_every: int = 1

    def params(self, way: str) -> dict[str, Any]:
        """The policy node's parameters for one way of running."""
        if way == "fixed low":
            return {"bit_config": self.ladder[0]}
        if way == "fixed top":
            return {"bit_config": self.ladder[-1]}
        if way == FULL_PRECISION:
            return {"bit_config": FULL_PRECISION}
        return {
            "bit_config": self.ladder[0],
            "shadow_bit_config": self.shadow,
            "shadow_every": self.shadow_every,
            "precision_ladder": self.ladder,
            "ladder_up_m": self.up_m,
            "ladder_down_m": self.down_m,
            "ladder_up_count": self.up_count,
            "ladder_down_count": self.down_count,
        }


def cached_builder(load: Callable[[str], Any]) -> Callable[[str], Any]:
    """`load(bits)` once per bit config (thread-safe: the ladder builds rungs on threads)."""
    built: dict[str, Any] = {}
    lock = threading.Lock()

    def build(bits: str) -> Any:
        with lock:
            if bits not in built:
                built[bits] = load(bits)
            return built[bits]

    return build


def run_episode(
    build: Callable[[str], Any],
    params: dict[str, Any],
    task: str,
    seed: int,
    max_steps: int,
    sink: MessageSink | None = None,
) -> GuardTrace:
    """One lockstep episode with the node's `params` (a way of GuardSettings.params); every
    message of the graph also goes to `sink` when given."""
    types = make_typestore().types
    bridge = SimBridgeCore({"task": task, "seed": seed, "max_steps": max_steps}, types)
    node = PolicyNodeCore({**lockstep_node_params(bridge), **params}, types, build_policy=build)
    trace = GuardTrace()

    def on_step(step: int, now: float) -> None:
        trace.hand.append(bridge.observation.ee_position.copy())
        trace.rungs.append(node.bit_config)

    try:
        trace.success = run_lockstep(bridge, node, max_steps, sink, on_step=on_step).success
    finally:
        node.close()
        bridge.close()
    return trace


@dataclass(frozen=True)
class WayRow:
    """One way over the episodes (each list in episode order)."""

    way: str
    success: list[bool]
    deviation_m: list[float]
    average_bits: list[float]
    rung_share: dict[str, float]  # over every step of every episode


def compare(
    build: Callable[[str], Any],
    settings: GuardSettings,
    bits_of: Callable[[str], float],
    episodes: Iterable[tuple[str, int]],
    max_steps: int,
    progress: Callable[[str], None] | None = None,
) -> list[WayRow]:
    """Every way over the same episodes; FP32 first, as each seed's reference path."""
    episodes = list(episodes)
    order = [FULL_PRECISION, *(w for w in WAYS if w != FULL_PRECISION)]
    traces: dict[str, list[GuardTrace]] = {}
    for way in order:
        traces[way] = []
        for task, seed in episodes:
            traces[way].append(run_episode(build, settings.params(way), task, seed, max_steps))
            if progress is not None:
                progress(f"{way} {task}/{seed}: {traces[way][-1].success}")
    reference = traces[FULL_PRECISION]
    return [_row(way, traces[way], reference, bits_of) for way in WAYS]


def _row(
    way: str,
    traces: Sequence[GuardTrace],
    reference: Sequence[GuardTrace],
    bits_of: Callable[[str], float],
) -> WayRow:
    steps = [rung for t in traces for rung in t.rungs]
    share = {rung: steps.count(rung) / len(steps) for rung in dict.fromkeys(steps)}
    return WayRow(
        way,
        [t.success for t in traces],
        [hand_deviation(t, r) for t, r in zip(traces, reference, strict=True)],
        [float(np.mean([bits_of(rung) for rung in t.rungs])) for t in traces],
        share,
    )
