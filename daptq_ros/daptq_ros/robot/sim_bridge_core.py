"""The sim bridge without rclpy: the MetaWorld Sawyer as a ROS arm (camera, joints, pose, clock).

It publishes what a real arm's drivers publish and accepts the Cartesian commands the policy
node sends (a PoseStamped target or a TwistStamped velocity, plus the gripper): MetaWorld moves
the Sawyer's hand by mocap, one end-effector displacement per 12.5 ms step, so a command
becomes that displacement in units of `action_scale`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import (
    TypeSource,
    image_msg,
    joint_state_msg,
    message_class,
    pose_stamped_msg,
    pose_stamped_to_numpy,
    sec_to_ns,
)
from daptq_ros.bags.robot_msgs import clock_msg, float64_array_to_numpy, twist_to_numpy
from daptq_ros.errors import ControlError
from daptq_ros.robot.params import check_overrides, defaults
from daptq_ros.sim.env import Observation, SimEnv

NODE = "sim_bridge"
CAMERA_FRAME = "camera"
WORLD_FRAME = "world"
GRIPPER_OPEN = -1.0  # MetaWorld's gripper action: -1 opens, +1 closes
SIM_INTERFACES = ("pose", "twist")
# Sim time starts here, not at 0: a zero header stamp means "not stamped" to ROS tools (and to
# daptq drift), so the first observation must not carry it.
SIM_EPOCH_S = 1.0
# Output keys; the rclpy node maps them to publishers.
IMAGE, JOINT_STATES, EE_POSE, CLOCK, INSTRUCTION = (
    "camera",
    "joint_states",
    "ee_pose",
    "/clock",
    "/instruction",
)


class SimBridgeCore:
    """Steps the sim at rate_hz with the newest command; returns the messages of each step."""

    def __init__(
        self,
        params: Mapping[str, Any],
        types: TypeSource,
        make_env: Callable[[str, int, int], SimEnv] | None = None,
    ) -> None:
        if reasons := check_overrides(NODE, params):
            raise ControlError("; ".join(reasons))
        self.params: dict[str, Any] = {**defaults(NODE), **params}
        p = self.params
        self.interface = str(p["command_interface"])
        if self.interface not in SIM_INTERFACES:
            raise ControlError(
                f"sim_bridge accepts command_interface pose or twist, not {self.interface}: "
                "MetaWorld moves the Sawyer's hand by mocap, so joint commands cannot drive it"
            )
        self.types = types
        self.action_scale = float(p["action_scale"])
        build = make_env or _make_env
        self.env = build(str(p["task"]), int(p["image_size"]), int(p["max_steps"]))
        self.period = 1.0 / float(p["rate_hz"])
        self.seed = int(p["seed"])
        self.observation: Observation = self.env.reset(self.seed)
        self.time = SIM_EPOCH_S
        self.success = False
        self.done = False
        self._pose_target: NDArray[np.float64] | None = None
        self._velocity = np.zeros(3)
        self._gripper = GRIPPER_OPEN

    @property
    def instruction(self) -> str:
        """The episode's natural-language instruction."""
        return self.observation.instruction

    def on_pose_command(self, msg: Any) -> None:
        """A PoseStamped target for the hand (world frame)."""
        self._pose_target = pose_stamped_to_numpy(msg).position

    def on_twist_command(self, msg: Any) -> None:
        """A TwistStamped linear velocity for the hand (m/s; angular is ignored: no wrist)."""
        self._velocity = twist_to_numpy(msg)[0]

    def on_gripper_command(self, msg: Any) -> None:
        """A Float64MultiArray [g]: MetaWorld's gripper action, -1 open to +1 closed."""
        values = float64_array_to_numpy(msg)
        if values.size and np.isfinite(values[0]):
            self._gripper = float(np.clip(values[0], -1.0, 1.0))

    def action(self) -> NDArray[np.float64]:
        """The MetaWorld action [dx, dy, dz, gripper] the newest command asks for this step."""
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
        """The instruction (latched) and the first observation."""
        text = message_class(self.types, "std_msgs/msg/String")(data=self.instruction)
        return [(INSTRUCTION, text), *self._observation_messages()]

    def step(self) -> list[tuple[str, Any]]:
        """Advance one sim step with the newest command; the messages it produces."""
        if self.done:
            return []
        self.observation, success = self.env.step(self.action())
        self.time += self.period
        self.success = self.success or success
        self.done = self.env.steps >= self.env.max_steps
        return self._observation_messages()

    def close(self) -> None:
        """Free the simulator."""
        self.env.close()

    def _observation_messages(self) -> list[tuple[str, Any]]:
        obs, ns = self.observation, sec_to_ns(self.time)
        messages = [
            (IMAGE, image_msg(self.types, ns, obs.image, CAMERA_FRAME)),
            (
                JOINT_STATES,
                joint_state_msg(self.types, ns, obs.joint_names, obs.joint_positions),
            ),
            (
                EE_POSE,
                pose_stamped_msg(self.types, ns, obs.ee_position, obs.ee_quat_xyzw, WORLD_FRAME),
            ),
        ]
        if self.params["publish_clock"]:
            messages.append((CLOCK, clock_msg(self.types, self.time)))
        return messages


def _make_env(task: str, image_size: int, max_steps: int) -> SimEnv:
    return SimEnv(task, image_size=image_size, max_steps=max_steps)
