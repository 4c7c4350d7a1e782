"""Every parameter of the ROS nodes, declared without ROS: names, defaults, ranges, choices.

The rclpy nodes declare exactly these (ParameterDescriptor with the description, read_only and
the range) and validate updates with `ParamSpec.check`; the tests check the shipped YAML files
against them with `load_node_yaml`. Static parameters (read_only) are rejected at run time with
a reason; the mutable ones are validated first (isaac_ros_deploy's parameter rules).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from daptq_ros.drift.monitor import MonitorConfig
from daptq_ros.errors import ControlError
from daptq_ros.robot.param_spec import (
    ACTION_SCALE,
    EE_POSE_TOPIC,
    JOINT_STATES_TOPIC,
    ROBOT,
    URDF_PATH,
    ParamSpec,
)
from daptq_ros.robot.policy_params import POLICY_NODE
from daptq_ros.share import share_path
from daptq_ros.sim.tasks import TASKS

SIM_TASKS = tuple(TASKS)
# What the simulated arm takes: Cartesian commands (MetaWorld moves the Sawyer's hand by mocap)
# or joint trajectories (executed in the SimEnv's joint_position control, through the hand).
SIM_COMMAND_INTERFACES = ("pose", "twist", "joint_trajectory")
# sim.launch.py's blend into the policy after ~/enable, s: the tasks' episodes last ~2 s, so the
# node's default (1 s, for a real arm) would spend half of each blending.
SIM_BLEND_TIME_S = 0.1

_MONITOR = MonitorConfig()
DRIFT_MONITOR: tuple[ParamSpec, ...] = (
    ROBOT,
    URDF_PATH,
    JOINT_STATES_TOPIC,
    EE_POSE_TOPIC,
    ParamSpec(
        "reference_bag",
        "",
        "rosbag2 folder whose /joint_states (and /ee_pose) are the reference ('' = none)",
    ),
    ParamSpec(
        "reference_topic",
        "/drift/reference",
        "trajectory_msgs/JointTrajectory topic of the reference, when no reference_bag",
    ),
    ParamSpec(
        "shadow_topic",
        "/policy_node/shadow",
        "daptq_ros_interfaces/ShadowDivergence topic of the policy node's shadow: the reference "
        "when there is no recorded one ('' = none)",
    ),
    ParamSpec(
        "episode_topic",
        "/sim_bridge/episode",
        "EpisodeInfo topic published when an episode ends: the next sample starts a new "
        "episode ('' = none)",
    ),
    ParamSpec(
        "window_s", _MONITOR.window_s, "duration of one drift window, s", low=0.05, high=60.0
    ),
    ParamSpec(
        "stale_timeout_s",
        _MONITOR.stale_timeout_s,
        "report STALE after this long without executed input, s",
        low=0.01,
        high=60.0,
    ),
    ParamSpec(
        "joint_rms_warn",
        _MONITOR.joint_rms_warn,
        "WARN above this RMS joint error (worst joint) in a window, rad",
        low=1e-6,
        high=10.0,
    ),
    ParamSpec(
        "joint_rms_error",
        _MONITOR.joint_rms_error,
        "ERROR above this RMS joint error (worst joint) in a window, rad",
        low=1e-6,
        high=10.0,
    ),
    ParamSpec(
        "ee_position_rmse_warn",
        _MONITOR.ee_position_rmse_warn,
        "WARN above this end-effector position RMSE in a window, m",
        low=1e-6,
        high=10.0,
    ),
    ParamSpec(
        "ee_position_rmse_error",
        _MONITOR.ee_position_rmse_error,
        "ERROR above this end-effector position RMSE in a window, m",
        low=1e-6,
        high=10.0,
    ),
    ParamSpec(
        "ee_rotation_rmse_warn",
        _MONITOR.ee_rotation_rmse_warn,
        "WARN above this end-effector rotation RMSE in a window, rad",
        low=1e-6,
        high=math.pi,
    ),
    ParamSpec(
        "ee_rotation_rmse_error",
        _MONITOR.ee_rotation_rmse_error,
        "ERROR above this end-effector rotation RMSE in a window, rad",
        low=1e-6,
        high=math.pi,
    ),
    ParamSpec(
        "report_hz",
        1.0,
        "rate at which the level is checked for staleness and diagnostics are published, Hz",
        low=0.1,
        high=100.0,
    ),
    ParamSpec(
        "estop_on_error",
        False,
        "call estop_service when a window's level is ERROR",
        read_only=False,
    ),
    ParamSpec("estop_service", "/policy_node/estop", "std_srvs/Trigger service that stops the arm"),
    ParamSpec(
        "bit_config_topic",
        "/policy_node/status",
        "PolicyStatus topic the active bit configuration is read from",
    ),
)

SIM_BRIDGE: tuple[ParamSpec, ...] = (
    ParamSpec(
        "task",
        "push",
        "simulated MetaWorld task of the next episode (~/reset starts it)",
        read_only=False,
        choices=SIM_TASKS,
    ),
    ParamSpec(
        "seed",
        100000,
        "seed of the next episode's layout (~/reset starts it; daptq eval's held-out seeds "
        "start at 100000)",
        read_only=False,
        low=0,
        high=2**31 - 1,
    ),
    ParamSpec("image_size", 96, "side of each camera view, px", low=16, high=512),
    ParamSpec(
        "real_time_factor",
        1.0,
        "simulated seconds per wall second (MetaWorld steps 12.5 ms; below 1 runs slower than "
        "real time, and every node on /clock follows)",
        low=0.01,
        high=10.0,
    ),
    ParamSpec(
        "camera_hz",
        20.0,
        "camera frames per second of simulated time (rendering dominates a step's cost)",
        low=1.0,
        high=80.0,
    ),
    ParamSpec("camera_topic", "/camera/image_raw", "sensor_msgs/Image topic the camera goes to"),
    JOINT_STATES_TOPIC,
    EE_POSE_TOPIC,
    ParamSpec(
        "command_interface",
        "pose",
        "which kind of commands the simulated arm accepts: a hand pose or twist, or a "
        "JointTrajectory of right_j0..right_j6 (the hand moves to their forward kinematics)",
        choices=SIM_COMMAND_INTERFACES,
    ),
    ParamSpec(
        "command_topic",
        "",
        "topic of the arm commands ('' = the sawyer_sim preset's topic for command_interface)",
    ),
    ParamSpec("publish_clock", True, "publish the simulation time on /clock"),
    ParamSpec(
        "max_steps",
        0,
        "steps before an episode ends (0 = the task's limit, as daptq eval uses)",
        low=0,
        high=100000,
    ),
    ACTION_SCALE,
)

NODE_PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    "policy_node": POLICY_NODE,
    "drift_monitor": DRIFT_MONITOR,
    "sim_bridge": SIM_BRIDGE,
}

# Declared by rclpy itself on every node: a params file may set it, a node must not declare it.
ROS_BUILTIN: tuple[ParamSpec, ...] = (
    ParamSpec("use_sim_time", False, "follow /clock instead of the system clock", read_only=False),
)


def _node_specs(node: str) -> tuple[ParamSpec, ...]:
    if node not in NODE_PARAMS:
        raise ControlError(f"unknown node {node!r}; known nodes: {', '.join(NODE_PARAMS)}")
    return NODE_PARAMS[node]


def _unknown(node: str, name: str) -> str:
    known = [p.name for p in _node_specs(node) + ROS_BUILTIN]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{node} has no parameter {name!r}{hint}; its parameters: {', '.join(known)}"


def spec(node: str, name: str) -> ParamSpec:
    """The declaration of parameter `name` of `node` (use_sim_time included)."""
    for param in _node_specs(node) + ROS_BUILTIN:
        if param.name == name:
            return param
    raise ControlError(_unknown(node, name))


def defaults(node: str) -> dict[str, object]:
    """Name -> default of every parameter the node declares."""
    return {p.name: p.default for p in _node_specs(node)}


def check_overrides(node: str, values: Mapping[str, object]) -> list[str]:
    """Reasons why `values` cannot be set on `node`: unknown names and bad values (empty: ok)."""
    return _reasons(node, values, strict_double=False)


def load_node_yaml(path: str | Path, node: str) -> dict[str, object]:
    """The parameters a ROS 2 params file sets on `node`, validated against its declaration.

    Sections apply when their key names the node, with or without a namespace, or matches it
    with wildcards ("/**", "/**/policy_node"); later sections win, as in rcl. Nested mappings
    become dotted names, as ROS 2 reads them.
    """
    _node_specs(node)
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ControlError(f"{path}: cannot read the parameters file: {error}") from error
    if not isinstance(document, dict):
        raise ControlError(
            f"{path}: not a ROS 2 parameters file, which maps node names to "
            "{ros__parameters: {name: value}}"
        )
    values: dict[str, object] = {}
    matched = False
    for key, section in document.items():
        if not fnmatchcase(node, str(key).rstrip("/").rsplit("/", 1)[-1]):
            continue
        matched = True
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ControlError(f"{path}: section {key!r} needs a 'ros__parameters' mapping")
        values.update(_flatten(section["ros__parameters"]))
    if not matched:
        sections = ", ".join(map(str, document)) or "none"
        raise ControlError(f"{path}: no section for node {node!r}; its sections: {sections}")
    if reasons := _reasons(node, values, strict_double=True):
        raise ControlError(f"{path}: " + "; ".join(reasons))
    return values


def sim_node_params() -> dict[str, object]:
    """The policy node's parameters as sim.launch.py starts it: its declared defaults, the
    shipped config/policy_node.yaml, and the sim launch's blend time (SIM_BLEND_TIME_S).

    What the ROS-free lockstep runs (latency sweep, drift guard) start from, so that they
    behave as the launched graph does.
    """
    node = "policy_node"
    yaml_values = load_node_yaml(share_path("config", f"{node}.yaml"), node)
    return {**defaults(node), **yaml_values, "blend_time_s": SIM_BLEND_TIME_S}


def _reasons(node: str, values: Mapping[str, object], *, strict_double: bool) -> list[str]:
    reasons = []
    for name, value in values.items():
        try:
            param = spec(node, name)
        except ControlError as error:
            reasons.append(str(error))
            continue
        if (problem := param.check(value)) is not None:
            reasons.append(problem)
        elif strict_double and param.value_type is float and type(value) is int:
            # rclpy refuses an integer for a double parameter when it loads a params file.
            reasons.append(
                f"{name}: {value!r} is an integer; write {float(value)!r}, since ROS 2 rejects "
                "an integer for a double parameter"
            )
    return reasons


def _flatten(mapping: Mapping[object, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
