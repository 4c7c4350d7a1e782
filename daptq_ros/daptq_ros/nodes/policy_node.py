"""policy_node: camera + instruction + joint states in, safe arm commands out (rclpy adapter).

All logic is in daptq_ros.robot.policy_core.PolicyNodeCore; this module wires ROS to it.
Subscriptions only store messages; inference runs on the core's worker thread; commands are
published only from the command timer. Any fault in a timer latches the e-stop (a held arm).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: 3x faster on 2 cores
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # short spin: see docs/performance.md

import time
from collections.abc import Callable
from functools import partial

import numpy as np
from daptq_ros_interfaces.msg import ActionChunk, PolicyStatus, ShadowDivergence
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosidl_runtime_py.utilities import get_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from daptq_ros.nodes.common import (
    CAMERA_QOS,
    COMMAND_QOS,
    LATCHED_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    declare,
    now_s,
    spin,
)
from daptq_ros.robot import policy_core
from daptq_ros.robot.params import NODE_PARAMS
from daptq_ros.robot.shadow import SHADOW

COMMAND_TYPES = {
    "joint_trajectory": JointTrajectory,
    "position_array": Float64MultiArray,
    "twist": TwistStamped,
    "pose": PoseStamped,
}
STATUS_PERIOD_S = 1.0  # status and /diagnostics at least this often, and on every change
WATCHDOG_PERIOD_S = 0.05  # wall-clock checks: the node clock, status changes


def rgb_decoder(logger) -> Callable[[Image], np.ndarray]:
    """cv_bridge's Image -> RGB when it imports and works with this NumPy, else ours."""
    try:
        from cv_bridge import CvBridge

        bridge = CvBridge()
        bridge.cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8), "rgb8")  # fails under NumPy 2
    except Exception as error:  # apt's cv_bridge is built against NumPy 1
        logger.info(f"cv_bridge unusable ({type(error).__name__}); using the numpy converter")
        return policy_core.image_to_numpy  # the core's default decoder (bags.convert)

    def decode(msg: Image) -> np.ndarray:
        return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))

    return decode


class PolicyNode(Node):
    """The rclpy skin of PolicyNodeCore."""

    def __init__(self) -> None:
        super().__init__(policy_core.NODE)
        params = declare(self, NODE_PARAMS[policy_core.NODE])
        self.core = policy_core.PolicyNodeCore(params, get_message, clock=lambda: now_s(self))
        core = self.core
        inputs = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        decode = None if params["use_compressed"] else rgb_decoder(self.get_logger())
        for camera, topic in enumerate(core.cameras.topics):
            if decode is None:
                msg_type, name = CompressedImage, f"{topic}/compressed"
                handler = partial(core.on_compressed_image, camera=camera)
            else:
                msg_type, name = Image, topic
                handler = partial(core.on_image, decode=decode, camera=camera)
            self.create_subscription(
                msg_type, name, self._wrap(handler), CAMERA_QOS, callback_group=inputs
            )
        # Two subscriptions, so that every publisher matches one: a latched publisher (its
        # stored instruction reaches a late subscriber) and `ros2 topic pub` (volatile).
        for qos in (LATCHED_QOS, RELIABLE_QOS):
            self.create_subscription(
                String,
                params["instruction_topic"],
                self._wrap(core.on_instruction),
                qos,
                callback_group=inputs,
            )
        self.create_subscription(
            JointState,
            params["joint_states_topic"],
            self._wrap(core.on_joint_states),
            SENSOR_QOS,
            callback_group=inputs,
        )
        self.create_subscription(
            PoseStamped,
            params["ee_pose_topic"],
            self._wrap(core.on_ee_pose),
            SENSOR_QOS,
            callback_group=inputs,
        )
        command_type = COMMAND_TYPES[core.interface]
        self.outputs = {
            policy_core.COMMAND: self.create_publisher(
                command_type, core.command_topic, COMMAND_QOS
            ),
            policy_core.DEBUG_COMMAND: self.create_publisher(
                command_type, policy_core.DEBUG_COMMAND, COMMAND_QOS
            ),
            policy_core.GRIPPER: self.create_publisher(
                Float64MultiArray, policy_core.GRIPPER, COMMAND_QOS
            ),
            policy_core.DEBUG_GRIPPER: self.create_publisher(
                Float64MultiArray, policy_core.DEBUG_GRIPPER, COMMAND_QOS
            ),
            policy_core.ACTION_CHUNK: self.create_publisher(
                ActionChunk, policy_core.ACTION_CHUNK, COMMAND_QOS
            ),
            SHADOW: self.create_publisher(ShadowDivergence, SHADOW, RELIABLE_QOS),
        }
        self.status = self.create_publisher(PolicyStatus, "~/status", LATCHED_QOS)
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Services and timers share one mutually exclusive group: an enable or e-stop never
        # runs in the middle of a command tick.
        self.create_service(SetBool, "~/enable", self._enable, callback_group=timers)
        self.create_service(Trigger, "~/estop", self._estop, callback_group=timers)
        self.create_service(Trigger, "~/reset_estop", self._reset_estop, callback_group=timers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # The core decides when a chunk is due (control/replan.py); it is asked every command tick.
        self.create_timer(1.0 / params["command_hz"], self._control_tick, callback_group=timers)
        self.create_timer(1.0 / params["command_hz"], self._command_tick, callback_group=timers)
        # Status and the clock watchdog run on the wall clock: they must go on when /clock stops.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(STATUS_PERIOD_S, self._status_tick, timers, clock=steady)
        self.create_timer(WATCHDOG_PERIOD_S, self._watchdog_tick, timers, clock=steady)
        self._status_key: tuple = ()
        self.get_logger().info(
            f"policy_node: model {params['model']}, bit_config {params['bit_config']}, "
            f"{core.interface} on {core.command_topic}, dry_run={params['dry_run']}; "
            "disabled until ~/enable"
        )
        log = self.get_logger().info if core.timing.feasible else self.get_logger().warn
        log(f"action chunk timing: {core.timing.describe()}")

    def _wrap(self, handler):
        """A subscription callback that stores the message; a bad message is logged, not fatal."""

        def callback(msg) -> None:
            try:
                handler(msg, now_s(self))
            except Exception as error:  # e.g. an unsupported image encoding
                self.get_logger().error(
                    f"{type(msg).__name__} dropped: {error}", throttle_duration_sec=5.0
                )

        return callback

    def _control_tick(self) -> None:
        try:
            self.core.control_tick(now_s(self))
        except Exception as error:
            self._fault("control tick", error)

    def _command_tick(self) -> None:
        try:
            for key, message in self.core.command_tick(now_s(self)):
                self.outputs[key].publish(message)
        except Exception as error:
            self._fault("command tick", error)

    def _status_tick(self) -> None:
        now = now_s(self)
        self.status.publish(self.core.status_msg(now))
        self.diagnostics.publish(self.core.diagnostics_msg(now))

    def _watchdog_tick(self) -> None:
        """Wall clock: disable when the node clock stopped; publish status when it changed."""
        try:
            if fault := self.core.clock_watchdog(time.monotonic()):
                self.get_logger().error(fault, throttle_duration_sec=5.0)
            key = self.core.status_key(now_s(self))
            if key != self._status_key:
                self._status_key = key
                self._status_tick()
        except Exception as error:
            self._fault("watchdog tick", error)

    def _fault(self, where: str, error: Exception) -> None:
        """Any fault latches the e-stop: the next command ticks publish a hold."""
        self.core.estop()
        self.get_logger().error(f"{where} failed, e-stop latched: {type(error).__name__}: {error}")

    def _enable(self, request, response):
        response.success, response.message = self.core.enable(request.data, now_s(self))
        self.get_logger().info(f"~/enable {request.data}: {response.message}")
        return response

    def _estop(self, request, response):
        response.success, response.message = self.core.estop()
        self.get_logger().warn(response.message)
        return response

    def _reset_estop(self, request, response):
        response.success, response.message = self.core.reset_estop()
        return response

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Validate only (isaac_ros_deploy's rule); accepted changes apply at the next tick."""
        for parameter in parameters:
            reason = self.core.check_parameter(parameter.name, parameter.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        for parameter in parameters:
            self.core.accept_parameter(parameter.name, parameter.value)
        return SetParametersResult(successful=True)


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run daptq_ros policy_node`."""
    spin(PolicyNode, args, threads=3)
