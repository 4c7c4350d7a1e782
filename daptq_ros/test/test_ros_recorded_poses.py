"""Pose-only drift on bags that the real `ros2 bag record` wrote, against evo on the same files.

A publisher process sends /odom (PoseWithCovarianceStamped, 50 Hz, drifting) and /localization
(PoseStamped, ~1 Hz, stamps off the odometry's grid, one stamp sent twice, a 4 s gap), and calls
a service with introspection on, as a robot's stack does. Two recorders run side by side: one
records the pose topics, the other the pose topics and every service event (Jazzy writes those
with an MCAP schema encoding rosbags cannot open). `daptq drift --run-topic --reference-topic`
must equal evo 1.38.1 (its own reader, association and APE / RPE) on the first, give the same
numbers on the second, which evo cannot open, and print no parser text. Skipped without ROS 2.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ros_graph import require_ros

pytestmark = [pytest.mark.ros]

PUBLISHER = textwrap.dedent(
    """
    import math, time
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import qos_profile_system_default
    from rclpy.service_introspection import ServiceIntrospectionState
    from std_srvs.srv import SetBool

    rclpy.init()
    node = rclpy.create_node("pose_publisher")
    odom = node.create_publisher(PoseWithCovarianceStamped, "/odom", 50)
    localization = node.create_publisher(PoseStamped, "/localization", 10)
    server = node.create_service(SetBool, "/toggle", lambda req, res: res)
    client = node.create_client(SetBool, "/toggle")
    for end in (server, client):
        end.configure_introspection(
            node.get_clock(), qos_profile_system_default, ServiceIntrospectionState.CONTENTS
        )
    start = time.time()
    sent_twice = False
    for k in range(400):  # 8 s at 50 Hz
        t = start + 0.02 * k
        u = t - start
        x, y, yaw = 2.0 * math.sin(0.5 * u), 1.0 - math.cos(0.7 * u), 0.3 * u
        msg = PoseWithCovarianceStamped()
        msg.header.frame_id = "odom"
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        msg.pose.pose.position.x, msg.pose.pose.position.y = 1.03 * x, 0.98 * y + 0.01 * k / 50
        turn = msg.pose.pose.orientation
        turn.z, turn.w = math.sin(yaw / 2), math.cos(yaw / 2)
        odom.publish(msg)
        if k % 50 == 7 and not 150 <= k < 350 or k == 360:  # ~1 Hz, a 4 s gap
            loc = PoseStamped()
            loc.header.frame_id = "map"
            s = t + 0.004
            loc.header.stamp.sec, loc.header.stamp.nanosec = int(s), int((s % 1) * 1e9)
            loc.pose.position.x, loc.pose.position.y = x, y
            loc.pose.orientation.z, loc.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
            localization.publish(loc)
            if not sent_twice:  # the same stamp twice, as a relocalisation republishes it
                localization.publish(loc)
                sent_twice = True
        if k % 25 == 0 and client.service_is_ready():
            client.call_async(SetBool.Request(data=True))
        rclpy.spin_once(node, timeout_sec=0.0)
        time.sleep(max(0.0, start + 0.02 * (k + 1) - time.time()))
    rclpy.shutdown()
    """
)
TOPICS = ["/odom", "/localization"]


def record(folder: Path, extra: list[str], log: Path) -> subprocess.Popen:
    command = ["ros2", "bag", "record", "-s", "mcap", "-o", str(folder), *TOPICS, *extra]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def drift(bag: Path, out: Path) -> tuple[dict, str]:
    argv = ["daptq", "drift", "--run", str(bag), "--run-topic", "/odom"]
    argv += ["--reference-topic", "/localization", "--align", "se3", "--out", str(out), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout), done.stderr


def test_recorded_pose_streams_equal_evo_and_service_events_do_not_get_in_the_way(tmp_path):
    require_ros()
    from evo import main_ape, main_rpe
    from evo.core import metrics, sync
    from evo.tools import file_interface
    from rosbags.rosbag2 import Reader

    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    plain, services = tmp_path / "poses", tmp_path / "poses_and_services"
    recorders = [
        record(plain, [], tmp_path / "plain.log"),
        record(services, ["--all-services"], tmp_path / "services.log"),
    ]
    time.sleep(3.0)  # the recorders discover the topics as they appear
    publisher = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert publisher.returncode == 0, publisher.stderr[-2000:]
    time.sleep(1.0)
    for recorder in recorders:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=30)
    report, noise = drift(plain, tmp_path / "plain_report")
    values = report["comparisons"][0]["metrics"]
    counts = report["comparisons"][0]["association"]
    assert counts["reference_duplicate_stamps"] == 1 and counts["reference_gaps"] == 1
    with Reader(plain) as reader:
        ref = file_interface.read_bag_trajectory(reader, "/localization")
        est = file_interface.read_bag_trajectory(reader, "/odom")
    ref, est = sync.associate_trajectories(ref, est)
    assert counts["pairs"] == ref.num_poses
    relation = metrics.PoseRelation.translation_part
    ape = main_ape.ape(ref, est, relation, align=True).stats["rmse"]
    rpe = main_rpe.rpe(ref, est, relation, delta=1, delta_unit=metrics.Unit.frames, align=True)
    assert values["ape_translation_m"] == pytest.approx(ape, rel=0.01)
    assert values["rpe_translation_m"] == pytest.approx(rpe.stats["rmse"], rel=0.01)
    # The bag with service events (rosbags 0.11, and so evo, refuse its MCAP schemas): daptq
    # reads its poses, gives the same numbers, and prints no parser text.
    again, noise = drift(services, tmp_path / "services_report")
    assert again["comparisons"][0]["metrics"]["ape_translation_m"] == pytest.approx(
        values["ape_translation_m"], rel=1e-9
    )
    assert noise.strip() == "", noise
