"""sim_bridge: the MetaWorld Sawyer as a ROS arm (camera, joints, pose, clock) (rclpy adapter).

All logic is in daptq_ros.robot.sim_bridge_core.SimBridgeCore. The bridge owns simulated
time: it publishes /clock, so run the other nodes with use_sim_time:=true. It steps on a
wall-clock timer (real_time_factor) and never stops publishing while it lives.

    ros2 param set /sim_bridge seed 100001
    ros2 service call /sim_bridge/reset std_srvs/srv/Trigger
    ros2 topic echo /sim_bridge/episode      # daptq_ros_interfaces/EpisodeInfo, the outcome
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display

from daptq_ros_interfaces.msg import EpisodeInfo
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from rosidl_runtime_py.utilities import get_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from daptq_ros.errors import DaptqError
from daptq_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, RELIABLE_QOS, declare, spin
from daptq_ros.robot import sim_bridge_core as bridge
from daptq_ros.robot.params import NODE_PARAMS, spec
from daptq_ros.robot.presets import load_robot

GRIPPER_TOPIC = "/policy_node/gripper"
COMMAND_TYPES = {"pose": PoseStamped, "twist": TwistStamped, "joint_trajectory": JointTrajectory}


class SimBridgeNode(Node):
    """The rclpy skin of SimBridgeCore."""

    def __init__(self) -> None:
        super().__init__(bridge.NODE)
        params = declare(self, NODE_PARAMS[bridge.NODE])
        self.core = bridge.SimBridgeCore(params, get_message)
        topic = (
            params["command_topic"] or load_robot("sawyer_sim").command_topics[self.core.interface]
        )
        command_type = COMMAND_TYPES[self.core.interface]
        self.create_subscription(command_type, topic, self._on_command, COMMAND_QOS)
        self.create_subscription(
            Float64MultiArray, GRIPPER_TOPIC, self.core.on_gripper_command, COMMAND_QOS
        )
        self.outputs = {
            bridge.IMAGE: self.create_publisher(Image, params["camera_topic"], 1),
            bridge.JOINT_STATES: self.create_publisher(
                JointState, params["joint_states_topic"], 10
            ),
            bridge.EE_POSE: self.create_publisher(PoseStamped, params["ee_pose_topic"], 10),
            bridge.CLOCK: self.create_publisher(Clock, "/clock", 10),
            bridge.INSTRUCTION: self.create_publisher(String, "/instruction", LATCHED_QOS),
            bridge.EPISODE: self.create_publisher(EpisodeInfo, bridge.EPISODE, RELIABLE_QOS),
        }
        self.create_service(Trigger, "~/reset", self._reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._publish(self.core.initial_messages())
        # A wall-clock timer: the bridge is the source of simulated time, never its follower.
        self.create_timer(self.core.wall_period, self._tick)
        self._log_episode()

    def _tick(self) -> None:
        was_done = self.core.done
        self._publish(self.core.step())
        if self.core.done and not was_done:
            self.get_logger().info(
                f"episode {self.core.episode_index} over: {self.core.task} seed "
                f"{self.core.seed} success={self.core.success} after {self.core.env.steps} steps"
            )

    def _on_command(self, msg) -> None:
        """An arm command; a refused one is logged and the previous command stays."""
        try:
            self.core.on_command(msg)
        except DaptqError as error:
            self.get_logger().error(str(error), throttle_duration_sec=5.0)

    def _reset(self, request, response):
        """~/reset: a new episode with the task and seed parameters."""
        task = self.get_parameter("task").value
        seed = self.get_parameter("seed").value
        try:
            self._publish(self.core.reset(task, seed))
        except DaptqError as error:
            response.success, response.message = False, str(error)
            return response
        response.success = True
        response.message = (
            f"episode {self.core.episode_index}: {task} seed {seed}: '{self.core.instruction}'"
        )
        self._log_episode()
        return response

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Validate only: task and seed apply at the next ~/reset; the rest is static."""
        for parameter in parameters:
            if parameter.name == "use_sim_time":
                continue
            try:
                declared = spec(bridge.NODE, parameter.name)
            except DaptqError as error:
                return SetParametersResult(successful=False, reason=str(error))
            if declared.read_only:
                return SetParametersResult(
                    successful=False,
                    reason=f"{parameter.name} is read-only; restart the sim bridge to change it",
                )
            if reason := declared.check(parameter.value):
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _log_episode(self) -> None:
        core = self.core
        self.get_logger().info(
            f"episode {core.episode_index}: {core.task} seed {core.seed}: '{core.instruction}' "
            f"(real_time_factor {core.params['real_time_factor']:g})"
        )

    def _publish(self, messages) -> None:
        for key, message in messages:
            self.outputs[key].publish(message)


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run daptq_ros sim_bridge`."""
    spin(SimBridgeNode, args)
