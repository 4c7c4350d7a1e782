"""drift_monitor: joint states / poses vs a reference -> DriftReport, /diagnostics (rclpy skin).

All logic is in daptq_ros.robot.drift_core.DriftMonitorCore.
"""

from __future__ import annotations

from daptq_ros_interfaces.msg import DriftReport, EpisodeInfo, PolicyStatus, ShadowDivergence
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosidl_runtime_py.utilities import get_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from daptq_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, declare, now_s, spin
from daptq_ros.robot import drift_core
from daptq_ros.robot.params import NODE_PARAMS

# Episode ends are events, each one matters: reliable, a few queued.
EPISODE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class DriftMonitorNode(Node):
    """The rclpy skin of DriftMonitorCore."""

    def __init__(self) -> None:
        super().__init__(drift_core.NODE)
        params = declare(self, NODE_PARAMS[drift_core.NODE])
        self.core = drift_core.DriftMonitorCore(params, get_message)
        self.reports = self.create_publisher(DriftReport, "/drift/report", 10)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.estop_client = self.create_client(Trigger, params["estop_service"])
        self.create_subscription(
            JointState,
            params["joint_states_topic"],
            self._feed(self.core.on_joint_states),
            SENSOR_QOS,
        )
        self.create_subscription(
            PoseStamped, params["ee_pose_topic"], self._feed(self.core.on_ee_pose), SENSOR_QOS
        )
        self.create_subscription(
            JointTrajectory, params["reference_topic"], self.core.on_reference, LATCHED_QOS
        )
        self.create_subscription(
            PolicyStatus, params["bit_config_topic"], self.core.on_policy_status, LATCHED_QOS
        )
        if params["shadow_topic"]:
            self.create_subscription(
                ShadowDivergence,
                params["shadow_topic"],
                self._feed(self.core.on_shadow),
                RELIABLE_QOS,
            )
        if params["episode_topic"]:
            self.create_subscription(
                EpisodeInfo, params["episode_topic"], self._feed(self.core.on_episode), EPISODE_QOS
            )
        if not params["urdf_path"]:
            self.create_subscription(
                String,
                "/robot_description",
                self._feed(self.core.on_robot_description),
                LATCHED_QOS,
            )
        self.create_service(Trigger, "~/restart", self._restart)
        self.create_timer(1.0 / params["report_hz"], self._diagnostics_tick)

    def _feed(self, handler):
        def callback(msg) -> None:
            try:
                report = handler(msg)
            except Exception as error:  # e.g. joints that do not match the reference
                self.get_logger().error(f"drift input dropped: {error}", throttle_duration_sec=5.0)
                return
            if report is not None:
                self.reports.publish(report)
            if self.core.wants_estop():
                self.get_logger().error("drift level ERROR: requesting an e-stop")
                self.estop_client.call_async(Trigger.Request())

        return callback

    def _diagnostics_tick(self) -> None:
        self.diagnostics.publish(self.core.diagnostics_msg(now_s(self)))

    def _restart(self, request, response):
        self.core.restart()
        response.success, response.message = True, "a new episode starts at the next sample"
        return response


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run daptq_ros drift_monitor`."""
    spin(DriftMonitorNode, args)
