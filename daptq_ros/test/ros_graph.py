"""Drive a launched daptq graph from a test, as a user would: `ros2 launch`, topics, services.

Import only after `require_ros()`: it imports rclpy. The launch runs as its own process
group (the exact command a user types); a probe node in the test process records topics
with their wall-clock arrival times and calls services and parameter changes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SAWYER_JOINTS = (*(f"right_j{i}" for i in range(7)), "r_close", "l_close")
README = Path(__file__).resolve().parents[2] / "README.md"


def require_ros() -> None:
    """Skip unless ROS 2 is sourced and daptq_ros is installed (colcon, ament index).

    With DAPTQ_REQUIRE_ROS=1 (CI sets it) a missing ROS 2 fails the test instead: the ROS
    tests must run there, never skip.
    """
    problems = []
    if shutil.which("ros2") is None:
        problems.append("the ros2 command is not on PATH (source ROS 2's setup.bash)")
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("daptq_ros")
        import rclpy  # noqa: F401
    except (ImportError, LookupError) as error:
        problems.append(
            f"{error}: build with colcon and `source install/setup.bash` (scripts/test.sh does)"
        )
    if not problems:
        return
    reason = "ROS 2 with daptq_ros installed is needed: " + "; ".join(problems)
    if os.environ.get("DAPTQ_REQUIRE_ROS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class Launch:
    """`ros2 launch daptq_ros FILE ARGS...` in its own process group, logged to a file."""

    def __init__(
        self, launch_file: str, arguments: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.command = [
            "ros2",
            "launch",
            "daptq_ros",
            launch_file,
            *(f"{k}:={v}" for k, v in arguments.items()),
        ]
        self.log = log
        self.started = time.monotonic()
        with log.open("w") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )

    def tail(self, lines: int = 60) -> str:
        """The end of the launch's log, for assertion messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C the whole launch (as a user would), then kill what is left; the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def policy_params_file(folder: Path, **overrides: Any) -> Path:
    """The installed policy_node.yaml with `overrides`, written as bringup's params_file."""
    import yaml

    from daptq_ros.robot.params import load_node_yaml
    from daptq_ros.share import share_path

    params = load_node_yaml(share_path("config", "policy_node.yaml"), "policy_node")
    path = folder / "policy_node.yaml"
    path.write_text(yaml.safe_dump({"policy_node": {"ros__parameters": {**params, **overrides}}}))
    return path


def ros2(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a `ros2 ...` command line (e.g. the README's), output captured."""
    return subprocess.run(
        ["ros2", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def daptq(
    *args: str, cwd: Path | None = None, timeout: float = 900.0
) -> subprocess.CompletedProcess[str]:
    """Run a `daptq ...` command line (e.g. the README's) in `cwd`; AssertionError with its
    stderr when it fails."""
    done = subprocess.run(
        ["daptq", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert done.returncode == 0, f"daptq {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def readme_commands(*lines: str) -> list[list[str]]:
    """Command lines of the README, split as a shell splits them; AssertionError when one is
    not (or no longer) a command line of README.md, so that a test runs what users read."""
    text = README.read_text()
    missing = [line for line in lines if f"\n    {line}\n" not in text]
    assert not missing, f"{README} has no command line {missing}"
    return [shlex.split(line) for line in lines]


def readme_launch(words: list[str], log: Path, cwd: Path | None = None) -> Launch:
    """Start `ros2 launch daptq_ros FILE NAME:=VALUE...` (a README command line, split)."""
    assert words[:3] == ["ros2", "launch", "daptq_ros"], words
    arguments = dict(word.split(":=", 1) for word in words[4:])
    return Launch(words[3], arguments, log, cwd)


def command_limits(robot: str, interface: str = "joint_trajectory") -> tuple[Any, Any, float]:
    """The robot preset, the limits the policy node (its installed params file) holds commands
    of `interface` to, and its command period (s)."""
    from ament_index_python.packages import get_package_share_directory

    from daptq_ros.robot.params import defaults, load_node_yaml
    from daptq_ros.robot.presets import load_robot

    share = get_package_share_directory("daptq_ros")
    p = {
        **defaults("policy_node"),
        **load_node_yaml(f"{share}/config/policy_node.yaml", "policy_node"),
    }
    preset = load_robot(robot)
    limits = preset.command_limits(
        interface, p["position_margin"], p["velocity_scale"], p["acceleration_scale"]
    )
    return preset, limits, 1.0 / p["command_hz"]


class Probe:
    """A node in the test process: records topics (wall time, message), calls services."""

    def __init__(self, name: str = "daptq_test_probe") -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def record(self, msg_type: Any, topic: str, qos: Any) -> list[tuple[float, Any]]:
        """Subscribe to `topic`; the list grows with (monotonic arrival time, message)."""
        received: list[tuple[float, Any]] = []
        self.node.create_subscription(
            msg_type, topic, lambda msg: received.append((time.monotonic(), msg)), qos
        )
        return received

    def publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        """A publisher on `topic` owned by the probe node."""
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
        """Call service `name` and wait for its response (AssertionError on timeout)."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"no service {name}"
            future = client.call_async(request)
            wait_for(future.done, timeout, f"a response from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node: str, timeout: float = 30.0, **values: Any) -> list[Any]:
        """`ros2 param set` from Python: one SetParametersResult per value."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        return self.call(SetParameters, f"/{node}/set_parameters", request, timeout).results

    def close(self) -> None:
        """Stop spinning and shut the probe's context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()


class FakeArm:
    """An arm played by the probe: camera 20 Hz, joint states (and pose) 50 Hz, on the wall clock.

    With `pose` the arm publishes /ee_pose and its hand follows PoseStamped commands on
    `command_topic`; otherwise its joints follow the first point of JointTrajectory commands.
    `streams` switches the cameras ("camera", or one by its topic) and the joint states off
    and on (a fault).
    """

    def __init__(
        self,
        probe: Probe,
        joint_names: tuple[str, ...],
        joints: np.ndarray,
        pose: tuple[float, float, float] | None = None,
        command_topic: str = "/cartesian_motion_controller/target_frame",
        camera_topics: tuple[str, ...] = ("/camera/image_raw",),
    ) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import JointTrajectory

        from daptq_ros.nodes.common import CAMERA_QOS, RELIABLE_QOS, SENSOR_QOS

        self.probe = probe
        self.streams = {"camera": True, "joint_states": True}
        self.names, self.joints = joint_names, np.asarray(joints, dtype=np.float64)
        self.position = None if pose is None else np.asarray(pose, dtype=np.float64)
        self.cameras = {topic: probe.publisher(Image, topic, CAMERA_QOS) for topic in camera_topics}
        self.joint_states = probe.publisher(JointState, "/joint_states", SENSOR_QOS)
        self.pose = probe.publisher(PoseStamped, "/ee_pose", SENSOR_QOS)
        command_type = JointTrajectory if pose is None else PoseStamped
        self.commands = probe.record(command_type, command_topic, RELIABLE_QOS)
        probe.node.create_subscription(command_type, command_topic, self._follow, RELIABLE_QOS)
        probe.node.create_timer(0.05, self._camera)
        probe.node.create_timer(0.02, self._state)

    def _follow(self, msg: Any) -> None:
        if self.position is not None:
            p = msg.pose.position
            self.position = np.array([p.x, p.y, p.z])
        elif msg.points:
            index = {name: i for i, name in enumerate(self.names)}
            for name, value in zip(msg.joint_names, msg.points[0].positions, strict=True):
                self.joints[index[name]] = value

    def _camera(self) -> None:
        from rosidl_runtime_py.utilities import get_message

        from daptq_ros.bags.convert import image_msg

        rgb = np.full((96, 192, 3), 90, np.uint8)
        for topic, publisher in self.cameras.items():
            if self.streams["camera"] and self.streams.get(topic, True):
                publisher.publish(image_msg(get_message, self._stamp(), rgb))

    def _state(self) -> None:
        from rosidl_runtime_py.utilities import get_message

        from daptq_ros.bags.convert import joint_state_msg, pose_stamped_msg

        stamp = self._stamp()
        if self.streams["joint_states"]:
            self.joint_states.publish(joint_state_msg(get_message, stamp, self.names, self.joints))
        if self.position is not None:
            self.pose.publish(pose_stamped_msg(get_message, stamp, self.position, (0, 0, 0, 1)))

    def _stamp(self) -> int:
        return self.probe.node.get_clock().now().nanoseconds


# A wait for a state of the live graph gets its fixed budget plus this many inferences at the
# policy node's measured latency: a slower or busier CPU waits longer, never fails sooner.
PATIENT_INFERENCES = 40
REPORT_SLACK_S = 1.0
MOVING = ("blending", "active")  # safety statuses in which the policy drives the arm


def patience(base_s: float, status: list[tuple[float, Any]]) -> float:
    """A wait's timeout (s): `base_s` plus PATIENT_INFERENCES at the node's inference latency.

    `status` is a recorded /policy_node/status; its inference_latency is the node's own wall-
    clock measure, so the budget grows with the CPU's speed and load (none before a status).
    """
    latency = max((s.inference_latency for _, s in list(status)), default=0.0)
    return base_s + PATIENT_INFERENCES * latency


def reaction(timeout_s: float, status: list[tuple[float, Any]]) -> float:
    """A wait for the node's reaction to a fault: its timeout plus a second for the status
    report (published on every change, checked each 50 ms), with room for a busy CPU; the
    reaction's timing on the node's own clock is unit-tested (test_robot_policy_core.py)."""
    return patience(timeout_s + REPORT_SLACK_S, status)


def enable(probe: Probe, flag: bool = True) -> tuple[bool, str]:
    """Call /policy_node/enable; (success, message)."""
    from std_srvs.srv import SetBool

    response = probe.call(SetBool, "/policy_node/enable", SetBool.Request(data=flag))
    return response.success, response.message


def moving(status: list[tuple[float, Any]]) -> bool:
    """Whether the newest status says the policy drives the arm: enabled, nothing holds it,
    blending into the policy or active. Which of the two depends on the CPU: inference slower
    than a chunk leaves gaps between chunks, and each gap restarts the blend."""
    s = latest(status)
    return s is not None and s.enabled and s.safety_status in MOVING and not s.hold_reasons


def enabled_and_moving(probe: Probe, status: list[tuple[float, Any]]) -> None:
    """~/enable, then wait until the policy drives the arm."""
    wait_for(lambda: enable(probe)[0], patience(10, status), "~/enable to succeed")
    wait_for(lambda: moving(status), patience(10, status), "the policy driving the arm")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it returns a truthy value (returned); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def latest(received: list[tuple[float, Any]]) -> Any | None:
    """The newest message recorded, or None."""
    return received[-1][1] if received else None


def since(received: list[tuple[float, Any]], start: float) -> list[tuple[float, Any]]:
    """The messages recorded at or after monotonic time `start`."""
    return [(t, m) for t, m in list(received) if t >= start]


def diagnostic(received: list[tuple[float, Any]], name: str) -> Any | None:
    """The newest DiagnosticStatus called `name` in recorded /diagnostics arrays."""
    for _, array in reversed(list(received)):
        for status in array.status:
            if status.name == name:
                return status
    return None


def level(status: Any) -> int:
    """A DiagnosticStatus's level as an int (rclpy gives the `byte` field as bytes)."""
    value = status.level
    return value[0] if isinstance(value, bytes) else int(value)
