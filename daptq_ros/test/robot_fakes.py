"""Test doubles for the robot-side cores: scripted policies and rosbags-typed input messages."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from daptq_ros.bags.convert import image_msg, joint_state_msg, pose_stamped_msg, sec_to_ns
from daptq_ros.bags.typestore import make_typestore

TYPES = make_typestore().types
SAWYER_JOINTS = (*(f"right_j{i}" for i in range(7)), "r_close", "l_close")
SAWYER_HOME = np.array([1.889, -0.576, -0.977, 1.642, 0.943, 1.044, 2.293, 0.0, 0.0])
EE_START = np.array([0.0, 0.6, 0.2])


@dataclass(frozen=True)
class Chunk:
    """What a policy returns (the fields of policy.contract.ActionChunk)."""

    actions: np.ndarray
    dt: float
    space: str
    names: tuple[str, ...]
    guidance: str = ""


class ConstantPolicy:
    """Always the same ee_delta chunk; optionally slow, failing or NaN."""

    def __init__(
        self, action=(0.5, 0.0, 0.0, -1.0), horizon=8, delay=0.0, fail=False, nan=False
    ) -> None:
        self.action = np.asarray(action, dtype=np.float64)
        self.horizon, self.delay, self.fail, self.nan = horizon, delay, fail, nan
        self.calls = 0
        self.lock = threading.Lock()

    def predict(self, image, instruction, state) -> Chunk:
        with self.lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model blew up")
        actions = np.tile(self.action, (self.horizon, 1))
        if self.nan:
            actions[0, 0] = np.nan
        return Chunk(actions, 0.0125, "ee_delta", ("dx", "dy", "dz", "gripper"))


def image(now: float, size: int = 8):
    """A small rgb8 sensor_msgs/Image stamped `now`."""
    rgb = np.full((size, 2 * size, 3), 100, dtype=np.uint8)
    return image_msg(TYPES, sec_to_ns(now), rgb, "camera")


def joints(now: float, positions=SAWYER_HOME, names=SAWYER_JOINTS):
    """A sensor_msgs/JointState stamped `now`."""
    return joint_state_msg(TYPES, sec_to_ns(now), names, positions)


def ee_pose(now: float, position=EE_START):
    """The end-effector geometry_msgs/PoseStamped stamped `now`."""
    return pose_stamped_msg(TYPES, sec_to_ns(now), position, (0.0, 0.0, 0.0, 1.0), "world")


def instruction(text: str = "push the puck to the goal"):
    """A std_msgs/String instruction."""
    return TYPES["std_msgs/msg/String"](data=text)


def wait_idle(core, timeout: float = 10.0) -> None:
    """Wait until the core's inference worker has nothing left to do."""
    deadline = time.monotonic() + timeout
    while core.worker.busy and time.monotonic() < deadline:
        time.sleep(0.001)
