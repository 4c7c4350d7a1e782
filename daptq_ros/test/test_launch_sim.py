"""launch_testing: sim.launch.py brings up the graph and the policy node publishes its status.

Runs under `launch_test` or pytest with launch_testing installed (a ROS 2 machine); skipped here.
"""

from __future__ import annotations

import time
import unittest

import pytest

pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed: ROS 2 is absent here"
)
pytestmark = pytest.mark.ros

import launch_testing.actions  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from daptq_ros_interfaces.msg import PolicyStatus  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

import launch  # noqa: E402
from daptq_ros.nodes.common import LATCHED_QOS  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    sim = f"{get_package_share_directory('daptq_ros')}/launch/sim.launch.py"
    return launch.LaunchDescription(
        [
            launch.actions.IncludeLaunchDescription(
                PythonLaunchDescriptionSource(sim), launch_arguments={"task": "reach"}.items()
            ),
            launch_testing.actions.ReadyToTest(),
        ]
    )


class TestSimGraph(unittest.TestCase):
    def test_policy_node_reports_its_bit_config(self):
        rclpy.init()
        node = rclpy.create_node("launch_probe")
        statuses: list[PolicyStatus] = []
        node.create_subscription(PolicyStatus, "/policy_node/status", statuses.append, LATCHED_QOS)
        deadline = time.monotonic() + 120  # a model load on a busy CPU
        while not statuses and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
        rclpy.shutdown()
        self.assertTrue(statuses, "no /policy_node/status within 120 s")
        self.assertEqual(statuses[-1].bit_config, "fp32")
