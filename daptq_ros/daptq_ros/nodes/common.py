"""What every daptq node shares: parameter declaration from robot.params, QoS, fault logging."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from daptq_ros.errors import DaptqError
from daptq_ros.robot.param_spec import ParamSpec

# Camera frames: only the newest matters (depth 1, best effort, as sensor drivers publish).
CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT
)
# The instruction is latched: a late subscriber still gets the last one.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
SENSOR_QOS = qos_profile_sensor_data
# Reliable and volatile: events that must not be lost (an episode's outcome), and what
# `ros2 topic pub` publishes by default.
RELIABLE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
)
COMMAND_QOS = 10


def declare(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Declare every parameter with its description, range and read-only flag; their values."""
    for spec in specs:
        descriptor = ParameterDescriptor(
            description=spec.description,
            read_only=spec.read_only,
            additional_constraints=spec.allowed,
        )
        if spec.value_type is float and spec.low is not None and spec.high is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))
            ]
        if spec.value_type is int and spec.low is not None and spec.high is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)
            ]
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        node.declare_parameter(spec.name, default, descriptor)
    return {spec.name: node.get_parameter(spec.name).value for spec in specs}


def now_s(node: Node) -> float:
    """The node clock (sim time under use_sim_time) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


def spin(make_node: Callable[[], Node], args: list[str] | None, threads: int = 1) -> None:
    """rclpy.init, build the node, spin it (threads > 1: a MultiThreadedExecutor), shut down.

    The node's `core.close()` runs on the way out when it has a core with one. A DaptqError
    while building the node (a user's input) is logged as one line and exits with status 1.
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except DaptqError as error:  # a bad parameter, preset, model or bag: one line, no traceback
        get_logger("daptq").fatal(str(error))
        rclpy.shutdown()
        raise SystemExit(1) from None
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else None
    try:
        if executor is None:
            rclpy.spin(node)
        else:
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close = getattr(getattr(node, "core", None), "close", None)
        if close is not None:
            close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
