"""Several cameras on the live graph: `image_topics` in the user's params file.

The fake arm of ros_graph.py publishes a base and a wrist camera; the policy node tiles their
newest frames for the model, and a camera that stops holds the arm with its topic named. A
module of its own: one policy_node at a time. Skipped without ROS 2 (never in CI).
"""

from __future__ import annotations

import numpy as np
import pytest
from ros_graph import (
    SAWYER_JOINTS,
    FakeArm,
    Probe,
    enabled_and_moving,
    latest,
    moving,
    patience,
    reaction,
    require_ros,
    wait_for,
)
from test_ros_faults import HOME, IMAGE_TIMEOUT_S, start

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_two_cameras_drive_the_policy_and_a_stopped_one_is_named(tmp_path):
    """image_topics in the user's params file: both frames tiled; one stopped holds the arm."""
    require_ros()
    from daptq_ros_interfaces.msg import PolicyStatus
    from std_msgs.msg import String

    from daptq_ros.nodes.common import LATCHED_QOS

    cameras = ("/camera/base/image_raw", "/camera/wrist/image_raw")
    params = tmp_path / "my_arm.yaml"
    params.write_text(f"policy_node:\n  ros__parameters:\n    image_topics: {list(cameras)}\n")
    probe = Probe("daptq_cameras_probe")
    fake = FakeArm(probe, SAWYER_JOINTS, np.zeros(9), pose=HOME, camera_topics=cameras)
    status = probe.record(PolicyStatus, "/policy_node/status", LATCHED_QOS)
    probe.publisher(String, "/instruction", LATCHED_QOS).publish(String(data="reach the goal"))
    launch = start(tmp_path, probe, params_file=str(params))
    try:
        wait_for(lambda: latest(status), 120, "the policy node's status\n" + launch.tail())
        enabled_and_moving(probe, status)
        fake.streams[cameras[1]] = False
        held = wait_for(
            lambda: (s := latest(status)).safety_status == "hold" and s,
            reaction(IMAGE_TIMEOUT_S, status),
            "hold after the wrist camera stopped",
        )
        assert any(r.startswith(f"image {cameras[1]}") for r in held.hold_reasons), held
        fake.streams[cameras[1]] = True
        wait_for(lambda: moving(status), patience(10, status), "driving again with both cameras")
    finally:
        launch.stop()
        probe.close()
