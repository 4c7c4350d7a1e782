"""The policy node's logic on a simulated arm that tracks its commands exactly (test helper).

`Rig` drives PolicyNodeCore as the rclpy node would, tick by tick; the `rig` fixture (registered
in conftest.py) makes rigs and closes them after the test.
"""

from __future__ import annotations

import numpy as np
import pytest
from robot_fakes import (
    EE_START,
    TYPES,
    ConstantPolicy,
    ee_pose,
    image,
    instruction,
    joints,
    wait_idle,
)

from daptq_ros.bags.convert import pose_stamped_to_numpy
from daptq_ros.robot import policy_core
from daptq_ros.robot.policy_core import PolicyNodeCore

HZ = 80.0
PERIOD = 1.0 / HZ


class Rig:
    """A simulated arm that tracks the commanded tool position exactly, plus the node core."""

    def __init__(self, policy=None, builds=None, **params) -> None:
        self.policies = builds or {}
        self.built: list[str] = []
        first = policy or ConstantPolicy()

        def build(bits: str):
            self.built.append(bits)
            if bits in self.policies:
                return self.policies[bits]()
            return first

        settings = {"dry_run": False, "command_hz": HZ, "blend_time_s": 0.1, **params}
        self.core = PolicyNodeCore(settings, TYPES, build_policy=build)
        self.t = 0.0
        self.position = EE_START.copy()
        self.outputs: list[tuple[float, str, object]] = []
        self.core.on_instruction(instruction(), self.t)
        self.sensors = {"image": True, "joints": True}

    def tick(self, control: bool = True) -> list[tuple[str, object]]:
        """Sensors in, a control tick (awaited when it submits), a command tick: as the node,
        which asks every command period and lets the core decide when a chunk is due."""
        core, t = self.core, self.t
        if self.sensors["image"]:
            core.on_image(image(t), t)
        if self.sensors["joints"]:
            core.on_joint_states(joints(t), t)
            core.on_ee_pose(ee_pose(t, self.position), t)
        if control and core.control_tick(t):
            wait_idle(core)
        out = core.command_tick(t)
        for key, msg in out:
            self.outputs.append((t, key, msg))
            if key == policy_core.COMMAND:
                self.position = pose_stamped_to_numpy(msg).position
        self.t += PERIOD
        return out

    def run(self, ticks: int, **kwargs) -> None:
        for _ in range(ticks):
            self.tick(**kwargs)

    def commands(self, key: str = policy_core.COMMAND) -> np.ndarray:
        rows = [pose_stamped_to_numpy(m).position for _, k, m in self.outputs if k == key]
        return np.array(rows).reshape(-1, 3)

    def enable(self) -> None:
        ok, reason = self.core.enable(True, self.t)
        assert ok, reason


@pytest.fixture
def rig():
    made: list[Rig] = []

    def make(**kwargs) -> Rig:
        made.append(Rig(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.core.close()
