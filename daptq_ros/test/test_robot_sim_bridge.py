"""SimBridgeCore with a fake simulator: episodes, outcomes, the clock that never stops, cameras."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from daptq_ros.bags.convert import pose_stamped_msg
from daptq_ros.bags.typestore import make_typestore
from daptq_ros.errors import ControlError
from daptq_ros.robot import sim_bridge_core as bridge
from daptq_ros.robot.sim_bridge_core import SimBridgeCore
from daptq_ros.sim.env import Observation

TYPES = make_typestore().types
DT = 0.0125


class FakeEnv:
    """A SimEnv stand-in: the hand moves by the action; success at x >= 0.05."""

    made: ClassVar[list[str]] = []

    def __init__(self, task: str, image_size: int, max_steps: int | None) -> None:
        self.task, self.max_steps, self.dt = task, max_steps or 20, DT
        self.steps, self.renders, self.closed = 0, 0, False
        self.position = np.zeros(3)
        FakeEnv.made.append(task)

    def reset(self, seed: int) -> Observation:
        self.steps, self.position = 0, np.array([0.0, 0.6, 0.2])
        self.seed = seed
        return self._observe(True)

    def step(self, action, render: bool = True):
        self.steps += 1
        self.position = self.position + 0.01 * np.asarray(action[:3])
        return self._observe(render), bool(self.position[0] >= 0.05)

    def close(self) -> None:
        self.closed = True

    def _observe(self, render: bool) -> Observation:
        self.renders += int(render)
        return Observation(
            image=np.zeros((4, 8, 3), np.uint8),
            instruction=f"{self.task} {self.seed}",
            state=np.append(self.position, 1.0),
            joint_names=("j",),
            joint_positions=np.zeros(1),
            ee_position=self.position.copy(),
            ee_quat_xyzw=np.array([0.0, 0.0, 0.0, 1.0]),
            time=self.steps * DT,
            privileged=np.zeros(39),
        )


def make(**params) -> SimBridgeCore:
    return SimBridgeCore({"task": "reach", "seed": 7, **params}, TYPES, make_env=FakeEnv)


def command(core: SimBridgeCore, x: float) -> None:
    core.on_pose_command(pose_stamped_msg(TYPES, 0, (x, 0.6, 0.2), (0, 0, 0, 1)))


def keys(messages) -> list[str]:
    return [key for key, _ in messages]


def test_the_episode_waits_for_the_first_command_while_time_goes_on() -> None:
    core = make()
    times = []
    for _ in range(5):
        messages = core.step()
        times.append(dict(messages)[bridge.CLOCK].clock.nanosec)
    assert core.env.steps == 0 and np.all(np.diff(times) > 0)
    command(core, 0.01)
    core.step()
    assert core.env.steps == 1


def test_success_ends_the_episode_with_its_outcome_and_time_goes_on() -> None:
    core = make()
    command(core, 1.0)  # far: each step moves the hand +0.01 in x
    outcomes = []
    for _ in range(12):
        messages = core.step()
        outcomes += [msg for key, msg in messages if key == bridge.EPISODE]
    assert len(outcomes) == 1
    (info,) = outcomes
    assert info.success and info.task == "reach" and info.seed == 7 and info.steps == 5
    assert core.done and core.env.steps == 5  # commands no longer move the arm
    assert bridge.CLOCK in keys(core.step()) and bridge.JOINT_STATES in keys(core.step())


def test_the_step_limit_ends_a_failed_episode() -> None:
    core = make(max_steps=3)
    command(core, 0.0)
    outcomes = [m for _ in range(6) for k, m in core.step() if k == bridge.EPISODE]
    assert [o.success for o in outcomes] == [False] and outcomes[0].steps == 3


def test_reset_starts_a_new_episode_with_task_and_seed_and_latches_its_instruction() -> None:
    FakeEnv.made.clear()
    core = make()
    before = core.time
    messages = core.reset("drawer-open", 100003)
    assert dict(messages)[bridge.INSTRUCTION].data == "drawer-open 100003"
    assert core.episode_index == 1 and core.seed == 100003 and not core.started
    assert FakeEnv.made == ["reach", "drawer-open"]  # a new task builds its env
    assert core.time == pytest.approx(before + DT)  # time goes on, stamps never repeat
    core.reset(seed=5)
    assert FakeEnv.made == ["reach", "drawer-open"]  # same task, same env


def test_a_bad_reset_is_refused_and_the_episode_stays() -> None:
    core = make()
    with pytest.raises(ControlError, match="task"):
        core.reset("juggle", 1)
    with pytest.raises(ControlError, match="seed"):
        core.reset("reach", -1)
    assert core.task == "reach" and core.seed == 7 and core.episode_index == 0


def test_the_camera_renders_at_camera_hz_of_simulated_time() -> None:
    core = make(camera_hz=20.0, max_steps=100)
    command(core, 0.0)
    images = sum(bridge.IMAGE in keys(core.step()) for _ in range(40))
    assert images == 10  # 40 steps of 12.5 ms = 0.5 s at 20 Hz
    assert core.env.renders == 1 + 10  # reset's frame, then only the published ones


def test_wall_period_follows_the_real_time_factor() -> None:
    assert make(real_time_factor=0.5).wall_period == pytest.approx(2 * DT)
    assert make().wall_period == pytest.approx(DT)


def test_joint_command_interfaces_are_refused_with_the_reason() -> None:
    with pytest.raises(ControlError, match="need one of 'pose', 'twist'"):
        make(command_interface="joint_trajectory")
