"""The rclpy nodes on a real ROS 2 graph (skipped where rclpy is absent, as on CI here)."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed: ROS 2 is absent here")
pytestmark = pytest.mark.ros

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosidl_runtime_py.utilities import get_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from daptq_ros.bags.convert import image_msg, joint_state_msg, pose_stamped_msg  # noqa: E402
from daptq_ros.nodes.common import CAMERA_QOS, LATCHED_QOS, SENSOR_QOS  # noqa: E402
from daptq_ros.nodes.policy_node import PolicyNode  # noqa: E402

SAWYER = (*(f"right_j{i}" for i in range(7)), "r_close", "l_close")


@pytest.fixture
def graph():
    rclpy.init(args=["--ros-args", "-p", "policy_node:dry_run:=true"])
    node = PolicyNode()
    driver = rclpy.create_node("test_driver")
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(driver)
    yield node, driver, executor
    node.core.close()
    executor.shutdown()
    # Destroyed, not only shut down: a node left to the garbage collector keeps its DDS
    # endpoints (a latched status, an /enable service) alive for the tests that follow.
    node.destroy_node()
    driver.destroy_node()
    rclpy.shutdown()


def spin_until(executor, condition, timeout: float = 60.0) -> bool:
    """Spin until `condition()` holds; a generous timeout, for a busy CPU (False on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if condition():
            return True
    return False


def test_policy_node_publishes_debug_commands_after_enable_and_refuses_swaps(graph):
    node, driver, executor = graph
    images = driver.create_publisher(Image, "/camera/image_raw", CAMERA_QOS)
    states = driver.create_publisher(JointState, "/joint_states", SENSOR_QOS)
    poses = driver.create_publisher(PoseStamped, "/ee_pose", SENSOR_QOS)
    driver.create_publisher(String, "/instruction", LATCHED_QOS).publish(String(data="push it"))
    received: list[PoseStamped] = []
    driver.create_subscription(PoseStamped, "/policy_node/debug/command", received.append, 10)

    def publish_inputs() -> None:
        stamp = driver.get_clock().now().nanoseconds
        images.publish(image_msg(get_message, stamp, np.zeros((96, 192, 3), np.uint8)))
        states.publish(joint_state_msg(get_message, stamp, SAWYER, np.zeros(9)))
        poses.publish(pose_stamped_msg(get_message, stamp, (0, 0.6, 0.2), (0, 0, 0, 1)))

    driver.create_timer(0.02, publish_inputs)
    enable = driver.create_client(SetBool, "/policy_node/enable")
    assert enable.wait_for_service(timeout_sec=10)
    assert spin_until(executor, lambda: node.core.status_fields(0.0)["inference_hz"] > 0)
    future = enable.call_async(SetBool.Request(data=True))
    assert spin_until(executor, future.done) and future.result().success
    assert spin_until(executor, lambda: len(received) > 10)

    params = driver.create_client(SetParameters, "/policy_node/set_parameters")
    request = SetParameters.Request(
        parameters=[Parameter("bit_config", value="w4a16").to_parameter_msg()]
    )
    future = params.call_async(request)
    assert spin_until(executor, future.done)
    result = future.result().results[0]
    assert not result.successful and "enabled" in result.reason
