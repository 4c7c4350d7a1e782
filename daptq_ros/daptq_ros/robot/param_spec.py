"""One node parameter declared without ROS (ParamSpec), and the ones several nodes share."""

from __future__ import annotations

import math
from dataclasses import dataclass

from daptq_ros.errors import ControlError

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


# Parameters more than one node declares, declared once.
ROBOT = ParamSpec("robot", "sawyer_sim", "robot preset name of config/robots/ or a YAML file path")
URDF_PATH = ParamSpec(
    "urdf_path", "", "URDF file that overrides the robot preset's URDF ('' = preset)"
)
JOINT_STATES_TOPIC = ParamSpec(
    "joint_states_topic", "/joint_states", "sensor_msgs/JointState topic of the arm"
)
EE_POSE_TOPIC = ParamSpec(
    "ee_pose_topic", "/ee_pose", "geometry_msgs/PoseStamped topic of the end effector"
)

ACTION_SCALE = ParamSpec(
    "action_scale",
    0.01,
    "metres per unit of an ee_delta action (MetaWorld's scale)",
    low=1e-4,
    high=1.0,
)
