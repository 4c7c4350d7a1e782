"""The drift guard of the policy node: its shadow, and the precision ladder the shadow drives.

`DriftGuard` is what the node core talks to. It owns the ShadowReference (robot/shadow.py) and,
when `precision_ladder` is set, the Escalation: the ladder's rule (control/ladder.py) with the
neighbouring rungs built ahead in memory on a background thread, so that a switch is one
pointer change between two control steps (`InferenceWorker.use`), with no hold and no chunk
that mixes two rungs. A switch waits until its rung is built. Every switch is on ~/status (the
bit_config), on /diagnostics (the rung, the switches, the last one's reason) and so in the
recording.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from daptq_ros.control.ladder import PrecisionLadder, Switch
from daptq_ros.control.runtime import ChunkPolicy, InferenceWorker, Observation
from daptq_ros.errors import ControlError
from daptq_ros.robot.shadow import ShadowReference, build_shadow, divergence_fields


class Escalation:
    """The ladder applied to the node's inference worker, neighbour rungs built ahead."""

    def __init__(
        self,
        ladder: PrecisionLadder,
        build: Callable[[str], ChunkPolicy],
        worker: InferenceWorker,
        clock: Callable[[], float],
    ) -> None:
        self.ladder, self._build, self.worker, self._clock = ladder, build, worker, clock
        self.built: dict[str, ChunkPolicy] = {ladder.rung: worker.policy}
        self.errors: dict[str, str] = {}
        self.time_on: dict[str, float] = dict.fromkeys(ladder.rungs, 0.0)  # wall s per rung
        self._since = clock()
        self._lock = threading.Lock()
        self._building: set[str] = set()
        self._prebuild()

    def on_divergence(self, hand_m: float | None, stamp: float) -> Switch | None:
        """One shadow comparison; the switch it caused (already applied), else None."""
        if hand_m is None:
            return None
        direction = self.ladder.observe(hand_m)
        target = self.ladder.target(direction) if direction else None
        with self._lock:
            policy = self.built.get(target) if target else None
        if policy is None:
            return None  # not due, or its rung is still being built: the counts carry on
        now = self._clock()
        self.time_on[self.ladder.rung] += now - self._since
        self._since = now
        switch = self.ladder.move(direction, stamp)
        self.worker.use(policy, switch.rung_to)
        self._prebuild()
        return switch

    @property
    def building(self) -> bool:
        """Whether a rung is being built."""
        with self._lock:
            return bool(self._building)

    def fields(self) -> dict[str, Any]:
        """The ladder's /diagnostics values."""
        spent = dict(self.time_on)
        spent[self.ladder.rung] += self._clock() - self._since
        values: dict[str, Any] = {
            "ladder_rung": self.ladder.rung,
            "ladder_switches": len(self.ladder.switches),
            "ladder_time_s": ", ".join(f"{rung} {s:.1f}" for rung, s in spent.items()),
        }
        if self.ladder.switches:
            last = self.ladder.switches[-1]
            values["ladder_last_switch"] = f"{last.rung_from} -> {last.rung_to}: {last.reason}"
        if self.errors:
            values["ladder_error"] = "; ".join(f"{k}: {v}" for k, v in self.errors.items())
        return values

    def _prebuild(self) -> None:
        """Build the rungs next to the current one (each once) on background threads."""
        for direction in (+1, -1):
            rung = self.ladder.target(direction)
            with self._lock:
                if rung is None or rung in self.built or rung in self._building:
                    continue
                self._building.add(rung)
            threading.Thread(target=self._build_rung, args=(rung,), daemon=True).start()

    def _build_rung(self, rung: str) -> None:
        try:
            policy = self._build(rung)
        except Exception as error:  # a rung that cannot be built is never switched to
            with self._lock:
                self.errors[rung] = f"{type(error).__name__}: {error}"
                self._building.discard(rung)
            return
        with self._lock:
            self.built[rung] = policy
            self._building.discard(rung)


class DriftGuard:
    """The shadow and (optionally) the ladder, as the policy node core uses them."""

    def __init__(self, shadow: ShadowReference, escalation: Escalation | None) -> None:
        self.shadow, self.escalation = shadow, escalation

    @property
    def busy(self) -> bool:
        """Whether the shadow is computing or a rung is being built (lockstep waits for both)."""
        building = self.escalation is not None and self.escalation.building
        return self.shadow.worker.busy or building

    def note(self, observation: Observation) -> None:
        self.shadow.note(observation)

    def offer(self, stamp: float, actions: Any, space: str, joints: Any) -> None:
        self.shadow.offer(stamp, actions, space, joints)

    def tick(self, types: Any, bit_config: str) -> tuple[list[tuple[str, Any]], str]:
        """The shadow's reports as outputs, and the bit config serving after any switch."""
        found = self.shadow.poll()
        outputs = self.shadow.messages(types, bit_config, found)
        if self.escalation is not None:
            for divergence in found:
                switch = self.escalation.on_divergence(divergence.hand_max_m, divergence.stamp)
                if switch is not None:
                    bit_config = switch.rung_to
        return outputs, bit_config

    def fields(self) -> dict[str, Any]:
        values = divergence_fields(self.shadow)
        if self.escalation is not None:
            values.update(self.escalation.fields())
        return values

    def close(self) -> None:
        self.shadow.close()


def build_guard(
    params: Mapping[str, Any],
    build: Callable[[str], ChunkPolicy],
    bit_config: str,
    worker: InferenceWorker,
    arm: Any,
    joint_count: int,
    clock: Callable[[], float],
) -> DriftGuard | None:
    """The node's drift guard from its parameters (None without shadow_bit_config)."""
    rungs = [str(rung) for rung in params["precision_ladder"] if str(rung)]
    shadow = build_shadow(params, build, arm, joint_count)
    if shadow is None:
        if rungs:
            raise ControlError(
                "precision_ladder needs shadow_bit_config: the ladder climbs on the shadow's "
                "divergence; set shadow_bit_config (e.g. fp32) or clear precision_ladder"
            )
        return None
    escalation = None
    if rungs:
        ladder = PrecisionLadder(
            rungs,
            bit_config,
            float(params["ladder_up_m"]),
            float(params["ladder_down_m"]),
            int(params["ladder_up_count"]),
            int(params["ladder_down_count"]),
        )
        escalation = Escalation(ladder, build, worker, clock)
    return DriftGuard(shadow, escalation)
