"""The sim bridge without rclpy: the MetaWorld Sawyer as a ROS arm (camera, joints, pose, clock).

It publishes what a real arm's drivers publish and accepts the commands the policy node sends
on its `command_interface`, plus the gripper: a PoseStamped target or a TwistStamped velocity
(MetaWorld moves the Sawyer's hand by mocap, one end-effector displacement per 12.5 ms step, so
a command becomes that displacement in units of `action_scale`), or a JointTrajectory whose
first point holds targets of right_j0..right_j6 (the SimEnv then runs in joint_position
control: the hand moves towards the targets' forward kinematics). A command it cannot execute
is refused with a ControlError naming the problem, and the previous command stays.

Episodes run as `daptq eval` runs them: `reset(task, seed)` sets one up, its first step is
the first arm command (an arm waits for its controller; the policy node sends none until it
is enabled), it ends at the task's success or its step limit, and its outcome comes out as an
EpisodeInfo. Simulated time never
stops while the bridge lives: after an episode ends, the arm stays where it is and time, joint
states and camera frames go on, so every node on /clock keeps running (and holding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import (
    TypeSource,
    header,
    image_msg,
    joint_state_msg,
    message_class,
    pose_stamped_msg,
    pose_stamped_to_numpy,
    sec_to_ns,
)
from daptq_ros.bags.episode import EPISODE_INFO
from daptq_ros.bags.robot_msgs import clock_msg, float64_array_to_numpy, twist_to_numpy
from daptq_ros.errors import ControlError, SimError
from daptq_ros.robot.params import check_overrides, defaults, spec
from daptq_ros.sim.env import ARM_JOINTS, Observation, SimEnv

NODE = "sim_bridge"
CAMERA_FRAME = "camera"
WORLD_FRAME = "world"
GRIPPER_OPEN = -1.0  # MetaWorld's gripper action: -1 opens, +1 closes
# The SimEnv control each command_interface drives (robot.params.SIM_COMMAND_INTERFACES).
ENV_CONTROLS = {"pose": "ee_delta", "twist": "ee_delta", "joint_trajectory": "joint_position"}
# Sim time starts here, not at 0: a zero header stamp means "not stamped" to ROS tools (and to
# daptq drift), so the first observation must not carry it.
SIM_EPOCH_S = 1.0
# Output keys; the rclpy node maps them to publishers.
IMAGE, JOINT_STATES, EE_POSE, CLOCK, INSTRUCTION, EPISODE = (
    "camera",
    "joint_states",
    "ee_pose",
    "/clock",
    "/instruction",
    "~/episode",
)


class SimBridgeCore:
    """Steps the sim with the newest command; returns the messages of each step."""

    def __init__(
        self,
        params: Mapping[str, Any],
        types: TypeSource,
        make_env: Callable[[str, int, int | None, str], SimEnv] | None = None,
    ) -> None:
        if reasons := check_overrides(NODE, params):
            raise ControlError("; ".join(reasons))
        self.params: dict[str, Any] = {**defaults(NODE), **params}
        p = self.params
        self.interface = str(p["command_interface"])  # one of ENV_CONTROLS (params checked it)
        self.types = types
        self.action_scale = float(p["action_scale"])
        self._make_env = make_env or _make_env
        self.env: SimEnv | None = None
        self.time = SIM_EPOCH_S
        self._ticks = 0  # steps of simulated time since start, episodes and pauses included
        self.episode_index = -1
        self.seed = int(p["seed"])
        self.task = str(p["task"])
        self.reset(self.task, self.seed)

    @property
    def period(self) -> float:
        """Simulated seconds per step (MetaWorld's control period, 12.5 ms)."""
        return self._env.dt

    @property
    def wall_period(self) -> float:
        """Wall seconds between steps: the step over real_time_factor."""
        return self.period / float(self.params["real_time_factor"])

    @property
    def instruction(self) -> str:
        """The episode's natural-language instruction."""
        return self.observation.instruction

    def reset(self, task: str | None = None, seed: int | None = None) -> list[tuple[str, Any]]:
        """Start a new episode of `task` (default: the current) from `seed` (default: the next).

        Returns the instruction (latched) and the first observation, one step after the last
        one: simulated time goes on from where it was. A bad task or seed is a ControlError
        and the running episode stays.
        """
        task = self.task if task is None else task
        seed = self.seed + 1 if seed is None else seed
        for name, value in (("task", task), ("seed", seed)):
            if problem := spec(NODE, name).check(value):
                raise ControlError(problem)
        if self.env is None or task != self.task:
            if self.env is not None:
                self.env.close()  # one env at a time (EGL), closed before the next is made
                self.env = None
            # max_steps 0: the task's own limit, as daptq eval uses
            max_steps = int(self.params["max_steps"]) or None
            control = ENV_CONTROLS[self.interface]
            self.env = self._make_env(task, int(self.params["image_size"]), max_steps, control)
        self.task, self.seed = task, int(seed)
        if self.episode_index >= 0:
            self.time += self.period  # stamps stay strictly increasing across episodes
        self.observation: Observation = self._env.reset(self.seed)
        self.episode_index += 1
        self.success = False
        self.done = False
        self.started = False  # the first arm command starts the episode's steps
        self._pose_target: NDArray[np.float64] | None = None
        self._joint_target: NDArray[np.float64] | None = None
        self._velocity = np.zeros(3)
        self._gripper = GRIPPER_OPEN
        return self.initial_messages()

    def on_command(self, msg: Any) -> None:
        """An arm command of the bridge's command_interface (a ControlError refuses a bad one)."""
        handlers = {
            "pose": self.on_pose_command,
            "twist": self.on_twist_command,
            "joint_trajectory": self.on_joint_trajectory_command,
        }
        handlers[self.interface](msg)

    def on_pose_command(self, msg: Any) -> None:
        """A PoseStamped target for the hand (world frame)."""
        self._pose_target = pose_stamped_to_numpy(msg).position
        self.started = True

    def on_twist_command(self, msg: Any) -> None:
        """A TwistStamped linear velocity for the hand (m/s; angular is ignored: no wrist)."""
        self._velocity = twist_to_numpy(msg)[0]
        self.started = True

    def on_joint_trajectory_command(self, msg: Any) -> None:
        """A JointTrajectory: targets of right_j0..right_j6 (rad), by name, from its first point.

        A message without a point, without one of those joints or with a non-finite target is
        refused (ControlError naming it) and the previous target stays.
        """
        self._joint_target = arm_targets(msg)
        self.started = True

    def on_gripper_command(self, msg: Any) -> None:
        """A Float64MultiArray [g]: MetaWorld's gripper action, -1 open to +1 closed."""
        values = float64_array_to_numpy(msg)
        if values.size and np.isfinite(values[0]):
            self._gripper = float(np.clip(values[0], -1.0, 1.0))

    def action(self) -> NDArray[np.float64]:
        """The SimEnv action the newest command asks for this step: [dx, dy, dz, gripper], or
        [right_j0..right_j6, gripper] in joint_position control."""
        if self.interface == "joint_trajectory":
            target = self._joint_target
            if target is None:  # no joint command yet: hold the measured joints
                target = self.observation.joint_positions[: len(ARM_JOINTS)]
            return np.append(target, self._gripper)
        if self.interface == "pose":
            if self._pose_target is None:
                step = np.zeros(3)
            else:
                step = self._pose_target - self.observation.ee_position
        else:
            step = self._velocity * self.period
        delta = np.clip(step / self.action_scale, -1.0, 1.0)
        return np.append(delta, self._gripper)

    def initial_messages(self) -> list[tuple[str, Any]]:
        """The instruction (latched) and the first observation of the current episode."""
        text = message_class(self.types, "std_msgs/msg/String")(data=self.instruction)
        return [(INSTRUCTION, text), *self._observation_messages(camera=True)]

    def step(self) -> list[tuple[str, Any]]:
        """Advance one step of simulated time; the messages it produces.

        During an episode the newest command moves the arm; before its first command and
        after it ended (success or the step limit, as in `daptq eval`), the arm stays and only
        time goes on. The step that ends an episode also returns its EpisodeInfo.
        """
        self.time += self.period
        env = self._env
        camera = self._camera_due()
        if self.done or not self.started:
            return self._observation_messages(camera)
        self.observation, success = env.step(self.action(), render=camera)
        self.success = self.success or success
        self.done = self.success or env.steps >= env.max_steps
        messages = self._observation_messages(camera)
        if self.done:
            messages.append((EPISODE, self.episode_msg()))
        return messages

    def episode_msg(self) -> Any:
        """The current episode as daptq_ros_interfaces/EpisodeInfo (the outcome once done)."""
        steps = self._env.steps
        return message_class(self.types, EPISODE_INFO)(
            header=header(self.types, sec_to_ns(self.time), WORLD_FRAME),
            task=self.task,
            instruction=self.instruction,
            seed=self.seed,
            episode_index=self.episode_index,
            model="",
            bit_config="",
            success=bool(self.success),
            steps=steps,
            duration=steps * self.period,
        )

    def close(self) -> None:
        """Free the simulator."""
        if self.env is not None:
            self.env.close()
            self.env = None

    @property
    def _env(self) -> SimEnv:
        if self.env is None:
            raise SimError("the sim bridge was closed; start it again")
        return self.env

    def _camera_due(self) -> bool:
        """Whether this step renders a camera frame (camera_hz of simulated time)."""
        every = max(1, round(1.0 / (float(self.params["camera_hz"]) * self.period)))
        self._ticks += 1
        return self._ticks % every == 0

    def _observation_messages(self, camera: bool) -> list[tuple[str, Any]]:
        obs, ns = self.observation, sec_to_ns(self.time)
        messages = [
            (
                JOINT_STATES,
                joint_state_msg(self.types, ns, obs.joint_names, obs.joint_positions),
            ),
            (
                EE_POSE,
                pose_stamped_msg(self.types, ns, obs.ee_position, obs.ee_quat_xyzw, WORLD_FRAME),
            ),
        ]
        if camera:
            messages.insert(0, (IMAGE, image_msg(self.types, ns, obs.image, CAMERA_FRAME)))
        if self.params["publish_clock"]:
            messages.append((CLOCK, clock_msg(self.types, self.time)))
        return messages


def arm_targets(msg: Any) -> NDArray[np.float64]:
    """The first point's positions of right_j0..right_j6 in a JointTrajectory, in that order.

    A ControlError names what is wrong: no point, missing joints, or non-finite values.
    """
    refused = "JointTrajectory command refused:"
    wanted = ", ".join(ARM_JOINTS)
    names = [str(name) for name in msg.joint_names]
    if not msg.points:
        raise ControlError(f"{refused} it has no points; send one with targets of {wanted}")
    positions = np.asarray(msg.points[0].positions, dtype=np.float64).reshape(-1)
    if positions.size != len(names):
        raise ControlError(
            f"{refused} its first point has {positions.size} positions for {len(names)} "
            "joint_names; give one position per joint name"
        )
    given = dict(zip(names, positions, strict=True))
    if missing := [joint for joint in ARM_JOINTS if joint not in given]:
        raise ControlError(
            f"{refused} it lacks {', '.join(missing)} (its joint_names: "
            f"{', '.join(names) or 'none'}); name all of {wanted}"
        )
    targets = np.array([given[joint] for joint in ARM_JOINTS])
    if bad := [joint for joint in ARM_JOINTS if not np.isfinite(given[joint])]:
        raise ControlError(
            f"{refused} non-finite targets for {', '.join(bad)}; send finite positions (rad)"
        )
    return targets


def _make_env(task: str, image_size: int, max_steps: int | None, control: str) -> SimEnv:
    """The MetaWorld task with the bridge's image size, step limit (None: the task's) and the
    SimEnv control of its command interface."""
    return SimEnv(task, image_size=image_size, max_steps=max_steps, control=control)
