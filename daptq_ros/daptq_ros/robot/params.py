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
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from daptq_ros.control.commands import COMMAND_INTERFACES
from daptq_ros.drift.monitor import MonitorConfig
from daptq_ros.errors import ControlError
from daptq_ros.sim.tasks import TASKS

ParamValue = bool | int | float | str | tuple[str, ...]

_TYPE_WORDS = {
    bool: "a bool (true or false)",
    int: "an integer",
    float: "a number",
    str: "a string",
    tuple: "a non-empty list of strings",
}


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: its default (which fixes its type), description and allowed values."""

    name: str
    default: ParamValue
    description: str
    read_only: bool = True  # static: changing it at run time is rejected with a reason
    choices: tuple[str, ...] = ()  # allowed strings (empty = any)
    low: float | None = None  # numeric range, inclusive
    high: float | None = None

    def __post_init__(self) -> None:
        if (problem := self.check(self.default)) is not None:
            raise ControlError(f"bad declaration of a parameter's default: {problem}")

    @property
    def value_type(self) -> type:
        """The Python type of the parameter's values: bool, int, float or str."""
        return type(self.default)

    @property
    def allowed(self) -> str:
        """What the parameter accepts, in words (for messages and additional_constraints)."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        words = _TYPE_WORDS[self.value_type]
        if self.low is not None and self.high is not None:
            return f"{words} from {_number(self.low)} to {_number(self.high)}"
        if self.low is not None:
            return f"{words} >= {_number(self.low)}"
        if self.high is not None:
            return f"{words} <= {_number(self.high)}"
        return words

    def check(self, value: object) -> str | None:
        """None if `value` is valid, else a one-line reason naming the parameter and the value."""
        kind = self.value_type
        if kind is tuple:
            strings = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            if not strings or not value:
                return f"{self.name}: {value!r} is not allowed; need {self.allowed}"
            return None
        if not (type(value) is kind or (kind is float and type(value) is int)):
            got = type(value).__name__
            return f"{self.name}: {value!r} ({got}) has the wrong type; need {self.allowed}"
        if self.choices and value not in self.choices:
            return f"{self.name}: {value!r} is not allowed; need {self.allowed}"
        if isinstance(value, int | float) and kind is not bool:
            if not math.isfinite(value):
                return f"{self.name}: {value!r} is not finite; need {self.allowed}"
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                return f"{self.name}: {value!r} is out of range; need {self.allowed}"
        return None


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


SIM_TASKS = tuple(TASKS)
# What the simulated arm takes: Cartesian commands (MetaWorld moves the Sawyer's hand by mocap)
# or joint trajectories (executed in the SimEnv's joint_position control, through the hand).
SIM_COMMAND_INTERFACES = ("pose", "twist", "joint_trajectory")

# Parameters more than one node declares, declared once.
_ROBOT = ParamSpec("robot", "sawyer_sim", "robot preset name of config/robots/ or a YAML file path")
_URDF_PATH = ParamSpec(
    "urdf_path", "", "URDF file that overrides the robot preset's URDF ('' = preset)"
)
_JOINT_STATES_TOPIC = ParamSpec(
    "joint_states_topic", "/joint_states", "sensor_msgs/JointState topic of the arm"
)
_EE_POSE_TOPIC = ParamSpec(
    "ee_pose_topic", "/ee_pose", "geometry_msgs/PoseStamped topic of the end effector"
)

_ACTION_SCALE = ParamSpec(
    "action_scale",
    0.01,
    "metres per unit of an ee_delta action (MetaWorld's scale)",
    low=1e-4,
    high=1.0,
)

POLICY_NODE: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model",
        "default",
        "model directory to load, or 'default' for the embedded default model",
    ),
    ParamSpec(
        "bit_config",
        "fp32",
        "quantization bit configuration: a preset name of config/bits/ or a YAML file path; "
        "a change swaps the model between control steps once the new one is built",
        read_only=False,
    ),
    ParamSpec(
        "allow_swap_while_enabled",
        False,
        "accept bit_config changes while the policy drives the arm (else they are rejected)",
        read_only=False,
    ),
    _ROBOT,
    _URDF_PATH,
    ParamSpec(
        "command_interface",
        "pose",
        "how commands reach the arm controller",
        choices=COMMAND_INTERFACES,
    ),
    ParamSpec(
        "command_topic",
        "",
        "topic of the arm commands ('' = the robot preset's topic for command_interface)",
    ),
    ParamSpec(
        "image_topics",
        ("/camera/image_raw",),
        "sensor_msgs/Image topics of the cameras, in the model's view order; their newest "
        "frames are tiled side by side",
    ),
    ParamSpec(
        "use_compressed",
        False,
        "subscribe to <image topic>/compressed (sensor_msgs/CompressedImage) instead",
    ),
    ParamSpec("instruction_topic", "/instruction", "std_msgs/String topic of the instruction"),
    _JOINT_STATES_TOPIC,
    _EE_POSE_TOPIC,
    ParamSpec(
        "control_hz",
        0.0,
        "most often the policy is asked for a chunk, Hz, never while one is in flight (0 = "
        "replan at half the model's chunk horizon, as daptq eval does: 20 Hz for the embedded "
        "models' 8 x 12.5 ms chunks)",
        low=0.0,
        high=100.0,
    ),
    ParamSpec("command_hz", 50.0, "rate of commands sent to the arm, Hz", low=1.0, high=1000.0),
    ParamSpec(
        "dry_run",
        True,
        "compute and publish on ~/debug/* only; nothing is sent to the arm",
        read_only=False,
    ),
    ParamSpec(
        "image_timeout_s",
        0.5,
        "hold when the newest image is older than this, s",
        low=0.01,
        high=10.0,
    ),
    ParamSpec(
        "joint_states_timeout_s",
        0.2,
        "hold when the newest joint state is older than this, s",
        low=0.01,
        high=10.0,
    ),
    ParamSpec(
        "instruction_timeout_s",
        0.0,
        "hold when the newest instruction is older than this, s "
        "(0 = it only has to have been received once)",
        low=0.0,
        high=3600.0,
    ),
    ParamSpec(
        "output_timeout_s",
        0.5,
        "hold when no fresh action chunk has arrived for this long (or for twice the usual "
        "inference latency, when that is longer), s",
        low=0.01,
        high=10.0,
    ),
    ParamSpec(
        "clock_timeout_s",
        0.5,
        "disable when the node clock (/clock under use_sim_time) has not advanced for this "
        "long in wall time while enabled, s",
        low=0.05,
        high=10.0,
    ),
    ParamSpec(
        "chunk_crossfade_s",
        0.025,
        "blend the previous chunk's actions into a new chunk's over this long, s (0 = switch "
        "at once)",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "chunk_method",
        "crossfade",
        "how a new chunk joins the one executing: crossfade, or rtc (real-time chunking: the "
        "policy continues the actions that run while it computes, then the crossfade; "
        "flow-matching families), or auto (rtc where the family allows it)",
        choices=("auto", "rtc", "crossfade"),
    ),
    ParamSpec(
        "rtc_jacobian",
        "identity",
        "RTC guidance Jacobian: identity (no backward pass; any runtime) or vjp (the paper's "
        "backward pass through the model; torch only, twice the cost)",
        choices=("identity", "vjp"),
    ),
    ParamSpec(
        "overrun",
        "slow",
        "when inference outlasts the chunk held: slow the timeline so the chunk lasts until the "
        "next arrives (time scaling), or hold at its end",
        choices=("slow", "hold"),
    ),
    ParamSpec(
        "min_timeline_rate",
        0.2,
        "slowest timeline rate of overrun slow (below it the arm holds at the chunk's end)",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "inject_latency_s",
        0.0,
        "test axis: hold each chunk until this long (node time) after its observation was "
        "submitted, s",
        read_only=False,
        low=0.0,
        high=10.0,
    ),
    ParamSpec(
        "inject_latency_jitter_s",
        0.0,
        "test axis: add a uniform random delay of up to this long to inject_latency_s, s",
        read_only=False,
        low=0.0,
        high=10.0,
    ),
    ParamSpec(
        "chunk_merge",
        "latest",
        "how overlapping action chunks combine: the latest wins, or an exponential ensemble",
        choices=("latest", "ensemble"),
    ),
    ParamSpec(
        "ensemble_decay",
        0.1,
        "weight decay of older chunks in the ensemble, exp(-decay * age_index)",
        low=0.0,
        high=10.0,
    ),
    ParamSpec(
        "position_margin",
        0.05,
        "keep joint targets this far inside the position limits, rad (m for prismatic joints)",
        low=0.0,
        high=1.0,
    ),
    ParamSpec(
        "velocity_scale",
        0.5,
        "fraction of the robot's joint and Cartesian velocity limits that commands may use",
        read_only=False,
        low=0.01,
        high=1.0,
    ),
    ParamSpec(
        "acceleration_scale",
        0.5,
        "fraction of the robot's acceleration limits that commands may use",
        read_only=False,
        low=0.01,
        high=1.0,
    ),
    ParamSpec(
        "deviation_threshold",
        0.25,
        "hold when a target is farther than this from the measured joints, rad",
        low=0.001,
        high=10.0,
    ),
    ParamSpec(
        "blend_time_s",
        1.0,
        "time to blend from the measured state into the policy's commands after enabling, s",
        low=0.0,
        high=30.0,
    ),
    _ACTION_SCALE,
    ParamSpec("num_threads", 2, "CPU threads for inference", low=1, high=64),
    ParamSpec("device", "cpu", "inference device", choices=("cpu", "cuda")),
    ParamSpec(
        "whole_model_bf16",
        False,
        "run the whole deployed model in bfloat16, not only its Linear layers (faster at "
        "deployment scale on CPUs with bf16 units; see docs/performance.md)",
    ),
    ParamSpec(
        "kernel_choice",
        "auto",
        "how each quantized layer's kernel is picked at load, by timing the candidates on this "
        "CPU (cached): auto = packed low-bit weights unless slower than bf16, packed = always "
        "packed (least memory), fastest = fastest whatever the memory",
        choices=("auto", "packed", "fastest"),
    ),
    ParamSpec(
        "runtime",
        "torch",
        "inference runtime: torch (this package's kernels) or openvino (the OpenVINO model that "
        "`daptq quantize --runtime openvino` exported; bit_config may then name another "
        "exported directory to swap to); without an exported model the node runs torch and "
        "warns on /diagnostics",
        choices=("torch", "openvino"),
    ),
    ParamSpec(
        "flow_steps",
        0,
        "denoising steps of the action head (0 = the model's default)",
        low=0,
        high=100,
    ),
    ParamSpec("base_frame", "", "frame_id of published poses and twists ('' = the robot preset's)"),
    ParamSpec(
        "instruction",
        "",
        "instruction used until one arrives on instruction_topic ('' = wait for the topic)",
    ),
)

_MONITOR = MonitorConfig()
DRIFT_MONITOR: tuple[ParamSpec, ...] = (
    _ROBOT,
    _URDF_PATH,
    _JOINT_STATES_TOPIC,
    _EE_POSE_TOPIC,
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
    _JOINT_STATES_TOPIC,
    _EE_POSE_TOPIC,
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
    _ACTION_SCALE,
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
