"""Shadow reference: a higher-precision copy of the policy watches the deployed one's drift.

On every k-th chunk the node accepts, the observation that chunk was computed from (image,
instruction, state, RTC prefix) is given to a second policy built at `shadow_bit_config`
(e.g. bf16 or w8a8). It runs on its own worker thread at the lowest CPU priority (nice 19) and
only when that worker is idle, so it never delays a command: an offer that finds it busy is
skipped and counted. Both policies draw the same flow-matching noise (each seeds its sampler
the same way on every call), so what differs between the two chunks is quantization's alone.

When the shadow's chunk arrives it is compared with the deployed chunk of the same observation:

- chunk RMSE: sqrt(mean((a_deployed - a_shadow)^2)) over every row and action dimension, in the
  action space's own units;
- hand divergence (m): the largest and the last distance between the two chunks' hand paths.
  End-effector deltas are summed into a path (times action_scale); joint positions (or joint
  deltas added to the joints measured when the chunk was accepted) go through the arm's forward
  kinematics. Without kinematics a joint-space chunk has no hand divergence.

Nothing here publishes: the node's command timer collects `poll()`'s results.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import sec_to_ns
from daptq_ros.bags.robot_msgs import shadow_divergence_msg
from daptq_ros.control.runtime import ChunkPolicy, InferenceWorker, Observation

SHADOW = "~/shadow"  # the node's output key (topic) for ShadowDivergence messages
SHADOW_NICE = 19  # the lowest CPU priority: the shadow runs on what the control path leaves
KEPT = 8  # observations and deployed chunks remembered, newest first dropped last


@dataclass(frozen=True)
class Divergence:
    """The deployed chunk against the shadow's, for the observation stamped `stamp`."""

    stamp: float
    chunk_rmse: float
    hand_max_m: float | None
    hand_final_m: float | None
    rows: int
    shadow_latency_s: float


@dataclass(frozen=True)
class _Offered:
    actions: NDArray[np.float64]
    space: str
    joints: NDArray[np.float64] | None


class ShadowReference:
    """The shadow policy's worker, the chunks offered to it, and their divergences."""

    def __init__(
        self,
        policy: ChunkPolicy,
        label: str,
        every: int,
        action_scale: float,
        joint_count: int,
        hand_position: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None = None,
    ) -> None:
        self.label = label
        self.every = max(1, int(every))
        self.action_scale = float(action_scale)
        self.joint_count = int(joint_count)
        self.hand_position = hand_position
        self.counters = {"offered": 0, "compared": 0, "skipped_busy": 0, "failed": 0}
        self.last: Divergence | None = None
        self.last_error = ""
        self._accepted = 0
        self._observations: OrderedDict[float, Observation] = OrderedDict()
        self._offered: OrderedDict[float, _Offered] = OrderedDict()
        self.worker = InferenceWorker(policy, label, on_start=_lowest_priority)

    def note(self, observation: Observation) -> None:
        """Remember an observation submitted to the deployed policy (by its stamp)."""
        self._observations[observation.stamp] = observation
        while len(self._observations) > KEPT:
            self._observations.popitem(last=False)

    def offer(
        self,
        stamp: float,
        actions: NDArray[np.float64],
        space: str,
        joints: NDArray[np.float64] | None = None,
    ) -> bool:
        """A deployed chunk was accepted: on every k-th, run the shadow on its observation.

        True when the shadow took it; False when it was not the k-th, the observation is not
        known, or the shadow is still busy (skipped, counted).
        """
        self._accepted += 1
        if (self._accepted - 1) % self.every or stamp not in self._observations:
            return False
        if self.worker.busy or self.worker.has_results:
            self.counters["skipped_busy"] += 1
            return False
        self.counters["offered"] += 1
        self._offered[stamp] = _Offered(np.array(actions, np.float64), space, joints)
        while len(self._offered) > KEPT:
            self._offered.popitem(last=False)
        self.worker.submit(self._observations[stamp])
        return True

    def poll(self) -> list[Divergence]:
        """Divergences of the shadow chunks finished since the last call."""
        found = []
        for result in self.worker.take_results():
            offered = self._offered.pop(result.stamp, None)
            if result.error or result.actions is None or offered is None:
                self.counters["failed"] += 1
                self.last_error = result.error or "the shadow's chunk has no deployed chunk"
                continue
            found.append(self._compare(result.stamp, offered, result.actions, result.latency))
            self.counters["compared"] += 1
        if found:
            self.last = found[-1]
        return found

    def messages(
        self, types: Any, bit_config: str, found: list[Divergence]
    ) -> list[tuple[str, Any]]:
        """Divergences (from poll()) as (SHADOW, ShadowDivergence message) outputs."""
        return [
            (
                SHADOW,
                shadow_divergence_msg(
                    types,
                    sec_to_ns(d.stamp),
                    divergence_message_fields(d, bit_config, self.label),
                ),
            )
            for d in found
        ]

    def close(self) -> None:
        self.worker.close()

    def _compare(
        self,
        stamp: float,
        offered: _Offered,
        shadow: NDArray[np.float64],
        latency: float,
    ) -> Divergence:
        deployed = offered.actions
        rows = min(len(deployed), len(shadow))
        deployed, shadow = deployed[:rows], shadow[:rows, : deployed.shape[1]]
        rmse = float(np.sqrt(np.mean((deployed - shadow) ** 2)))
        paths = [self._hand_path(a, offered) for a in (deployed, shadow)]
        if paths[0] is None or paths[1] is None:
            return Divergence(stamp, rmse, None, None, rows, latency)
        gap = np.linalg.norm(paths[0] - paths[1], axis=1)
        return Divergence(stamp, rmse, float(gap.max()), float(gap[-1]), rows, latency)

    def _hand_path(
        self, actions: NDArray[np.float64], offered: _Offered
    ) -> NDArray[np.float64] | None:
        """The hand positions [rows, 3] a chunk leads to (relative for end-effector deltas)."""
        if offered.space == "ee_delta":
            return np.cumsum(actions[:, :3], axis=0) * self.action_scale
        if self.hand_position is None:
            return None
        arm = actions[:, : self.joint_count]
        if offered.space == "joint_position":
            joints = arm
        elif offered.space == "joint_delta" and offered.joints is not None:
            joints = offered.joints[None, : self.joint_count] + np.cumsum(arm, axis=0)
        else:
            return None
        return np.stack([self.hand_position(q) for q in joints])


def _lowest_priority() -> None:
    """Give the calling thread (and the OpenMP threads it starts) the lowest CPU priority."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: it runs unniced
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SHADOW_NICE)


def divergence_fields(shadow: ShadowReference | None) -> dict[str, Any]:
    """The shadow's /diagnostics values (none when no shadow runs)."""
    if shadow is None:
        return {}
    values: dict[str, Any] = {"shadow_bit_config": shadow.label}
    values.update({f"shadow_{name}": count for name, count in shadow.counters.items()})
    if (last := shadow.last) is not None:
        values["shadow_chunk_rmse"] = round(last.chunk_rmse, 6)
        values["shadow_latency_s"] = round(last.shadow_latency_s, 4)
        if last.hand_max_m is not None:
            values["shadow_hand_divergence_m"] = round(last.hand_max_m, 6)
    if shadow.last_error:
        values["shadow_error"] = shadow.last_error
    return values


def divergence_message_fields(
    divergence: Divergence, bit_config: str, shadow_bit_config: str
) -> dict[str, Any]:
    """The fields of a ShadowDivergence message (without its header)."""
    has_hand = divergence.hand_max_m is not None
    return {
        "bit_config": bit_config,
        "shadow_bit_config": shadow_bit_config,
        "rows": divergence.rows,
        "chunk_rmse": divergence.chunk_rmse,
        "has_hand_divergence": has_hand,
        "hand_max_divergence": divergence.hand_max_m if has_hand else 0.0,
        "hand_final_divergence": divergence.hand_final_m if has_hand else 0.0,
        "shadow_latency": divergence.shadow_latency_s,
    }


def build_shadow(
    params: Mapping[str, Any],
    build: Callable[[str], ChunkPolicy],
    arm: Any,
    joint_count: int,
) -> ShadowReference | None:
    """The node's shadow from its parameters (None when shadow_bit_config is empty).

    `build` is the node's own policy builder, so the shadow is the same model at other bits;
    `arm` (an ArmModel or None) gives joint-space chunks a hand path.
    """
    label = str(params["shadow_bit_config"])
    if not label:
        return None
    return ShadowReference(
        build(label),
        label,
        int(params["shadow_every"]),
        float(params["action_scale"]),
        joint_count,
        None if arm is None else arm.position,
    )
