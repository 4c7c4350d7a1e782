"""Robot presets (config/robots/*.yaml): joints, limits, workspace, controller topics, URDF."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from daptq_ros.control.commands import CARTESIAN_AXES, COMMAND_INTERFACES, JOINT_INTERFACES
from daptq_ros.control.limits import AxisLimits
from daptq_ros.errors import ControlError
from daptq_ros.share import share_path

# The Cartesian box the tool may move in (m), and its speed (m/s) and acceleration (m/s^2).
WORKSPACE_KEYS = ("lower", "upper", "max_linear_speed", "max_linear_acceleration")


@dataclass(frozen=True)
class RobotPreset:
    """One arm as the nodes need it; `urdf` is an example-robot-data arm name, a path or ""."""

    name: str
    urdf: str
    ee_frame: str
    base_frame: str
    joints: AxisLimits
    workspace: AxisLimits
    gripper: tuple[str, ...]
    command_topics: dict[str, str]
    home: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def command_limits(
        self,
        interface: str,
        margin: float,
        velocity_scale: float,
        acceleration_scale: float,
        urdf_path: str = "",
    ) -> AxisLimits:
        """The limits the policy node's safety filter holds commands of `interface` to.

        Joints for the joint interfaces (a given URDF's position and velocity limits win over
        the preset's; a URDF has no acceleration limits), the workspace box otherwise; shrunk
        by `margin` on each side and the rates scaled by the two factors.
        """
        base = self.joints if interface in JOINT_INTERFACES else self.workspace
        if interface in JOINT_INTERFACES and urdf_path:
            urdf = AxisLimits.from_urdf(urdf_path, base.names)
            base = AxisLimits(base.names, urdf.lower, urdf.upper, urdf.velocity, base.acceleration)
        return base.with_margin(margin).scaled(velocity_scale, acceleration_scale)


def robots_dir() -> Path:
    """The folder of the robot presets (daptq_ros.share finds it in every install layout)."""
    return share_path("config", "robots")


def list_robots() -> list[str]:
    """Names of the robot presets."""
    return sorted(p.stem for p in robots_dir().glob("*.yaml"))


def load_robot(name_or_path: str | Path) -> RobotPreset:
    """Load a robot preset by name (e.g. 'panda') or from a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = robots_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ControlError(
                f"robot '{name_or_path}' is neither a preset nor a YAML file; presets: "
                f"{', '.join(list_robots())}"
            )
    if not path.is_file():
        raise ControlError(f"robot preset file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ControlError(f"robot preset '{path}' is not valid YAML: {error}") from None
    if not isinstance(data, Mapping):
        raise ControlError(f"robot preset '{path}' must be a mapping of keys to values")
    return preset_from_mapping(data, str(path))


def preset_from_mapping(data: Mapping[str, Any], source: str) -> RobotPreset:
    """Validate a preset mapping; ControlError names the file and the bad key."""
    required = ("name", "joint_names", "limits", "workspace", "command_topics")
    missing = [key for key in required if key not in data]
    if missing:
        raise ControlError(f"robot preset '{source}' lacks {', '.join(missing)}")
    joints = AxisLimits.from_mapping(data["limits"], f"{source}: limits")
    joints = joints.subset(list(data["joint_names"]))
    box = data["workspace"]
    if not isinstance(box, Mapping):
        raise ControlError(f"robot preset '{source}': workspace must be a mapping")
    missing = [k for k in WORKSPACE_KEYS if k not in box]
    if missing:
        raise ControlError(f"robot preset '{source}': workspace lacks {', '.join(missing)}")
    workspace = AxisLimits.from_mapping(
        {
            "names": list(CARTESIAN_AXES),
            "lower": box["lower"],
            "upper": box["upper"],
            "velocity": box["max_linear_speed"],
            "acceleration": box["max_linear_acceleration"],
        },
        f"{source}: workspace",
    )
    topics = dict(data["command_topics"])
    unknown = set(topics) - set(COMMAND_INTERFACES)
    if unknown:
        raise ControlError(
            f"robot preset '{source}': command_topics names {sorted(unknown)}; "
            f"interfaces are {', '.join(COMMAND_INTERFACES)}"
        )
    home = np.asarray(data.get("home", []), dtype=np.float64)
    if home.size and home.shape != (len(joints.names),):
        raise ControlError(
            f"robot preset '{source}': home has {home.size} values for {len(joints.names)} joints"
        )
    return RobotPreset(
        name=str(data["name"]),
        urdf=str(data.get("urdf", "") or ""),
        ee_frame=str(data.get("ee_frame", "") or ""),
        base_frame=str(data.get("base_frame", "base") or "base"),
        joints=joints,
        workspace=workspace,
        gripper=tuple(data.get("gripper", []) or []),
        command_topics=topics,
        home=home,
    )
