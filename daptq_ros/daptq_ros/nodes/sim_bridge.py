"""sim_bridge: the MetaWorld Sawyer as a ROS arm (camera, joints, pose, clock) (rclpy adapter).

All logic is in daptq_ros.robot.sim_bridge_core.SimBridgeCore. The bridge owns simulated
time: it publishes /clock, so run the other nodes with use_sim_time:=true.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display

from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from rosidl_runtime_py.utilities import get_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from daptq_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, declare, spin
from daptq_ros.robot import sim_bridge_core as bridge
from daptq_ros.robot.params import NODE_PARAMS
from daptq_ros.robot.presets import load_robot

GRIPPER_TOPIC = "/policy_node/gripper"


class SimBridgeNode(Node):
    """The rclpy skin of SimBridgeCore."""

    def __init__(self) -> None:
        super().__init__(bridge.NODE)
        params = declare(self, NODE_PARAMS[bridge.NODE])
        self.core = bridge.SimBridgeCore(params, get_message)
        topic = (
            params["command_topic"] or load_robot("sawyer_sim").command_topics[self.core.interface]
        )
        if self.core.interface == "pose":
            self.create_subscription(PoseStamped, topic, self.core.on_pose_command, COMMAND_QOS)
        else:
            self.create_subscription(TwistStamped, topic, self.core.on_twist_command, COMMAND_QOS)
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
        }
        self._publish(self.core.initial_messages())
        self.create_timer(self.core.period, self._tick)
        self.get_logger().info(
            f"sim_bridge: {params['task']} seed {params['seed']}: '{self.core.instruction}'"
        )

    def _tick(self) -> None:
        if self.core.done:
            return
        self._publish(self.core.step())
        if self.core.done:
            self.get_logger().info(f"episode over: success={self.core.success}")

    def _publish(self, messages) -> None:
        for key, message in messages:
            self.outputs[key].publish(message)


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run daptq_ros sim_bridge`."""
    spin(SimBridgeNode, args)
