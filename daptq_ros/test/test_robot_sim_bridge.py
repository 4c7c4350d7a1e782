"""SimBridgeCore with a fake simulator: episodes, outcomes, the clock that never stops, cameras,
the commands of each interface; and joint commands moving MetaWorld's arm (real simulator)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from daptq_ros.bags.convert import pose_stamped_msg
from daptq_ros.bags.robot_msgs import joint_trajectory_msg, twist_stamped_msg
from daptq_ros.bags.typestore import make_typestore
from daptq_ros.errors import ControlError
from daptq_ros.robot import sim_bridge_core as bridge
from daptq_ros.robot.sim_bridge_core import SimBridgeCore
from daptq_ros.sim.env import ARM_JOINTS, Observation, SimEnv

TYPES = make_typestore().types
DT = 0.0125


class FakeEnv:
    """A SimEnv stand-in: the hand moves by the action; success at x >= 0.05."""

    made: ClassVar[list[str]] = []

    def __init__(
        self, task: str, image_size: int, max_steps: int | None, control: str = "ee_delta"
    ) -> None:
        self.task, self.max_steps, self.dt, self.control = task, max_steps or 20, DT, control
        self.actions: list[np.ndarray] = []
        self.steps, self.renders, self.closed = 0, 0, False
        self.position = np.zeros(3)
        FakeEnv.made.append(task)

    def reset(self, seed: int) -> Observation:
        self.steps, self.position = 0, np.array([0.0, 0.6, 0.2])
        self.seed = seed
        return self._observe(True)

    def step(self, action, render: bool = True):
        self.steps += 1
        self.actions.append(np.asarray(action, dtype=np.float64))
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


def test_an_interface_the_bridge_cannot_execute_is_refused_with_the_choices() -> None:
    with pytest.raises(ControlError, match="need one of 'pose', 'twist', 'joint_trajectory'"):
        make(command_interface="position_array")


def trajectory(names, positions):
    """A two-point JointTrajectory: `positions` first, then somewhere else entirely."""
    rows = np.array([positions, np.full(len(names), 9.0)])
    return joint_trajectory_msg(TYPES, 0, list(names), rows, [DT, 2 * DT])


# The arm joints out of order among other joints, with values no code here was written around.
NAMES = ("head_pan", "right_j6", "right_j2", "r_close", "right_j0")
NAMES += ("right_j5", "right_j1", "right_j4", "right_j3")
VALUES = (0.7, 2.1, -1.3, 0.04, 1.5, 0.9, -0.8, 0.6, 1.7)
BY_NAME = dict(zip(NAMES, VALUES, strict=True))


def test_pose_and_twist_commands_drive_the_hand_as_before() -> None:
    pose = make(command_interface="pose")
    assert pose.env.control == "ee_delta"
    command(pose, 0.003)
    assert pose.action() == pytest.approx([0.3, 0.0, 0.0, -1.0])
    twist = make(command_interface="twist")
    assert twist.env.control == "ee_delta"
    twist.on_command(twist_stamped_msg(TYPES, 0, (0.4, -2.0, 0.0), (0, 0, 1), "world"))
    assert twist.action() == pytest.approx([0.4 * DT / 0.01, -1.0, 0.0, -1.0])


def test_a_joint_trajectory_commands_its_first_points_arm_joints_by_name() -> None:
    core = make(command_interface="joint_trajectory")
    assert core.env.control == "joint_position"  # the SimEnv runs in joint space
    core.step()
    assert core.env.steps == 0  # no command yet: the episode waits
    core.on_command(trajectory(NAMES, VALUES))
    core.step()
    wanted = [BY_NAME[joint] for joint in ARM_JOINTS] + [-1.0]  # gripper: open, its own topic
    assert core.env.actions == [pytest.approx(wanted)]


def test_a_joint_command_missing_a_joint_is_refused_naming_it_and_the_last_one_stays() -> None:
    core = make(command_interface="joint_trajectory")
    core.on_command(trajectory(NAMES, VALUES))
    kept = core.action()
    partial = [n for n in NAMES if n not in ("right_j4", "right_j1")]
    with pytest.raises(ControlError, match=r"lacks right_j1, right_j4 \(its joint_names: head_pan"):
        core.on_command(trajectory(partial, [BY_NAME[n] for n in partial]))
    nan = [np.nan if n == "right_j5" else v for n, v in zip(NAMES, VALUES, strict=True)]
    with pytest.raises(ControlError, match="non-finite targets for right_j5; send finite"):
        core.on_command(trajectory(NAMES, nan))
    empty = joint_trajectory_msg(TYPES, 0, list(ARM_JOINTS), np.zeros((0, 7)), [])
    with pytest.raises(ControlError, match="no points"):
        core.on_command(empty)
    assert core.action() == pytest.approx(kept)


def test_a_refused_first_joint_command_does_not_start_the_episode() -> None:
    core = make(command_interface="joint_trajectory")
    with pytest.raises(ControlError, match="lacks right_j0, right_j1"):
        core.on_command(trajectory(("right_j2",), (0.1,)))
    core.step()
    assert core.env.steps == 0 and not core.started


@pytest.fixture(scope="module")
def reached_joints(sim_renders) -> list[tuple[np.ndarray, np.ndarray]]:
    """(arm joints, hand position) at two places MetaWorld's own hand control took the arm to,
    in the air over the push table: joint targets the mocap-held hand can actually reach."""
    places = []
    with SimEnv("push", image_size=16, max_steps=200) as env:
        env.reset(11)
        for move in ([0.6, 0.3, 0.3, -1.0], [-1.0, -0.4, 0.2, -1.0]):
            for _ in range(25):
                env.step(move, render=False)
            for _ in range(30):  # settle
                obs, _ = env.step([0.0, 0.0, 0.0, -1.0], render=False)
            places.append((obs.joint_positions[:7].copy(), obs.ee_position.copy()))
    return places


@pytest.mark.sim
def test_joint_commands_move_the_simulated_arm_to_their_targets(reached_joints) -> None:
    """From MetaWorld's home, then from the first target, to the next: the measured joints
    approach the commanded ones and the hand their forward kinematics (where MetaWorld measured
    it at those joints). MetaWorld's mocap tracking swings around a fixed point by up to ~3 cm
    (the pose interface's too), so the hand is compared on average over its last 40 steps."""
    core = SimBridgeCore(
        {"task": "push", "seed": 3, "command_interface": "joint_trajectory", "image_size": 16,
         "max_steps": 400},
        TYPES,
    )  # fmt: skip
    try:
        for joints, hand in reached_joints:
            start = core.observation
            assert np.abs(start.joint_positions[:7] - joints).max() > 0.3  # far from the target
            assert np.linalg.norm(start.ee_position - hand) > 0.1
            names = list(reversed(ARM_JOINTS))
            core.on_command(trajectory(names, joints[::-1]))
            hands = []
            for _ in range(160):
                core.step()
                hands.append(core.observation.ee_position)
            assert not core.done
            measured = core.observation.joint_positions[:7]
            assert np.abs(measured - joints).max() < 0.1, (measured, joints)
            assert np.linalg.norm(np.mean(hands[-40:], axis=0) - hand) < 0.005
    finally:
        core.close()
